"""Exercise 01's feedback: the reference passes, the blank stub fails, typical wrong answers
fail with their own hint, and other correct answers pass (the learner's-kernel path)."""


import pytest

from tests import exercise_harness as harness
from tests.exercise_harness import run_task, stub

NB = "01_similarity.ipynb"


def fails_with(test_id, answer_id, code, phrase):
    harness.fails_with(NB, test_id, answer_id, code, phrase)


@pytest.mark.parametrize(("test_id", "answer_id"), [
    ("sim-cosine-test", "sim-cosine-answer"), ("sim-matrix-test", "sim-matrix-answer"),
    ("sim-nearest-test", "sim-nearest-answer"), ("sim-predict-test", "sim-predict-answer"),
    ("sim-debug-test", "sim-debug-answer")])
def test_reference_passes_and_stub_fails(test_id, answer_id):
    assert run_task(NB, test_id).passed
    # the stub raises NotImplementedError in its own cell; the test cell runs after it
    blank = stub(NB, answer_id)
    if answer_id == "sim-predict-answer":  # the stub's raise stops its own cell only
        blank = blank.replace("raise NotImplementedError()", "")
    run = run_task(NB, test_id, {answer_id: blank})
    assert not run.passed
    assert ("predicted_std is None" if answer_id == "sim-predict-answer"
            else "NotImplementedError") in run.output, run.output


# Task 1: cosine_similarity
COS = "def cosine_similarity(a, b):\n{}"


def test_cosine_wrong_answers_get_their_hints():
    no_norm = "    return np.sum(a * b, axis=-1)"
    fails_with("sim-cosine-test", "sim-cosine-answer", COS.format(no_norm), "product of the two norms")
    flat = ("    return np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b))")
    fails_with("sim-cosine-test", "sim-cosine-answer", COS.format(flat), "axis=-1")
    nan = ("    return np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))")
    fails_with("sim-cosine-test", "sim-cosine-answer", COS.format(nan), "0 / 0 is NaN")
    torch_ = ("    import torch\n    a, b = torch.as_tensor(a), torch.as_tensor(b)\n"
              "    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-12)")
    fails_with("sim-cosine-test", "sim-cosine-answer", COS.format(torch_), "not torch")


def test_cosine_alternatives_pass():
    einsum = ("    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)\n"
              "    n = np.sqrt(np.einsum('...d,...d->...', a, a) * np.einsum('...d,...d->...', b, b))\n"
              "    dots = np.einsum('...d,...d->...', *np.broadcast_arrays(a, b))\n"
              "    return np.divide(dots, n, out=np.zeros(np.broadcast(dots, n).shape, dtype=np.float32),"
              " where=n > 0)")
    assert run_task(NB, "sim-cosine-test", {"sim-cosine-answer": COS.format(einsum)}).passed


# Task 2: similarity_matrix
def test_similarity_matrix_wrong_answers_get_their_hints():
    loop = ("def similarity_matrix(x, y):\n"
            "    return np.array([[xi @ yj for yj in y] for xi in x])")
    fails_with("sim-matrix-test", "sim-matrix-answer", loop, "no Python loops")
    swapped = "def similarity_matrix(x, y):\n    return np.asarray(y) @ np.asarray(x).T"
    fails_with("sim-matrix-test", "sim-matrix-answer", swapped, "x @ y.T, not y @ x.T")
    elementwise = "def similarity_matrix(x, y):\n    return np.asarray(x) * np.asarray(y)"
    fails_with("sim-matrix-test", "sim-matrix-answer", elementwise, "matrix product with y transposed")


def test_similarity_matrix_alternative_passes():
    einsum = ("def similarity_matrix(x, y):\n"
              "    return np.einsum('td,sd->ts', np.float32(x), np.float32(y))")
    assert run_task(NB, "sim-matrix-test", {"sim-matrix-answer": einsum}).passed


# Task 3: most_similar
def test_most_similar_wrong_answers_get_their_hints():
    by_dot = ("def most_similar(query, table, k):\n"
              "    return np.argsort(-(table @ query), kind='stable')[:k]")
    fails_with("sim-nearest-test", "sim-nearest-answer", by_dot, "not by the raw dot product")
    worst_first = ("def most_similar(query, table, k):\n"
                   "    return np.argsort(cosine_similarity(table, query[None, :]))[:k]")
    fails_with("sim-nearest-test", "sim-nearest-answer", worst_first, "largest first")
    library = ("from attn_course.similarity import nearest\n"
               "def most_similar(query, table, k):\n    return nearest(query, table, k)[0]")
    fails_with("sim-nearest-test", "sim-nearest-answer", library, "instead of calling attn_course")


def test_most_similar_loop_passes():
    loop = ("def most_similar(query, table, k):\n"
            "    scores = [float(cosine_similarity(row, query)) for row in table]\n"
            "    return np.array(sorted(range(len(table)), key=lambda j: -scores[j])[:k])")
    assert run_task(NB, "sim-nearest-test", {"sim-nearest-answer": loop}).passed


# Task 4: predict
@pytest.mark.parametrize(("value", "phrase"), [
    ("0", "almost never exactly 0"), ("1 / 256", "too small"), ("0.5", "too large"),
    ("'0.06'", "write a single number"), ("[0.06, 0.07]", "write a single number")])
def test_prediction_wrong_answers_get_their_hints(value, phrase):
    fails_with("sim-predict-test", "sim-predict-answer", f"predicted_std = {value}", phrase)


@pytest.mark.parametrize("value", ["0.06", "1 / np.sqrt(256)", "np.float32(0.07)", "0.045"])
def test_prediction_within_tolerance_passes(value):
    assert run_task(NB, "sim-predict-test", {"sim-predict-answer": f"predicted_std = {value}"}).passed


# Task 5: debug
FIX = "def cosine_matrix(x, y):\n{}"


@pytest.mark.parametrize(("body", "phrase"), [
    ("    return (x / np.linalg.norm(x, axis=1)) @ (y / np.linalg.norm(y, axis=1)).T",
     "not (T,)"),
    ("    return (x / np.linalg.norm(x, axis=-1, keepdims=True)) @ y.T", "only x was normalised"),
    ("    return (x / np.linalg.norm(x, axis=0, keepdims=True)) @ (y / np.linalg.norm(y, axis=0,"
     " keepdims=True)).T", "wrong axis"),
    ("    return x @ y.T", "divide by the lengths of both rows"),
    ("    return (x / np.linalg.norm(x, axis=-1, keepdims=True)) @ (y / np.linalg.norm(y, axis=-1,"
     " keepdims=True)).T", "0 / 0 is NaN"),
])
def test_debug_wrong_answers_get_their_hints(body, phrase):
    fails_with("sim-debug-test", "sim-debug-answer", FIX.format(body), phrase)


def test_debug_alternatives_pass():
    via_task1 = "    return cosine_similarity(x[:, None, :], y[None, :, :])"
    assert run_task(NB, "sim-debug-test", {"sim-debug-answer": FIX.format(via_task1)}).passed
    loop32 = ("    out = np.zeros((len(x), len(y)), dtype=np.float32)\n"
              "    for i in range(len(x)):\n        for j in range(len(y)):\n"
              "            n = np.linalg.norm(x[i]) * np.linalg.norm(y[j])\n"
              "            out[i, j] = x[i] @ y[j] / n if n > 0 else 0.0\n    return out")
    assert run_task(NB, "sim-debug-test", {"sim-debug-answer": FIX.format(loop32)}).passed


def test_no_text_of_a_test_cell_contains_a_line_of_the_solution():
    """No hint (first stage, later stages, diagnoses) holds 16 characters of a solution line."""
    assert harness.solution_in_test_text(NB) == []


def test_the_visible_prediction_check_cannot_be_searched():
    """The visible test accepts any positive number; only the hidden tests grade it (no bisection)."""
    run = run_task(NB, "sim-predict-test", {"sim-predict-answer": "predicted_std = 0.9"}, hidden=False)
    assert run.passed, run.output
    assert not run_task(NB, "sim-predict-test", {"sim-predict-answer": "predicted_std = 0.9"}).passed


# Task 6 (derive): the limit of the cosine of random vectors that share a mean ---------------
LIMIT = "def cosine_limit(mu, sigma):\n    if sigma <= 0:\n        raise ValueError(f'sigma = {{sigma}}')\n    {}\n"


def test_limit_reference_passes_and_stub_fails():
    harness.reference_passes_and_stub_fails(NB, "sim-limit-test", "sim-limit-answer",
                                            "NotImplementedError")


@pytest.mark.parametrize(("body", "phrase"), [
    ("return mu / sigma", "ratio of mean to spread"),
    ("return mu ** 2 / sigma ** 2", "the variance plus the squared mean"),
    ("return mu / (mu ** 2 + sigma ** 2) ** 0.5", "a single factor"),
    ("return abs(mu) / (mu ** 2 + sigma ** 2) ** 0.5", "a single factor"),
    ("return 0.0", "0 is the limit for entries of mean 0 (Task 4)"),
    ("return mu * abs(mu) / (mu ** 2 + sigma ** 2)", "check the sign"),  # the sign of mu kept
    ("return mu ** 3 / abs(mu) ** 3 * 0.2 if mu else 0.0", "check the sign"),  # not a known formula
    ("return mu ** 2 / (mu ** 2 + 1)", "does not change with sigma"),  # sigma taken as 1
    ("return 1.0", "does not change with sigma"),
    ("return mu ** 2 / (mu ** 2 + sigma ** 2) + 0.001", "exactly 0"),
    ("return mu ** 2 / (mu ** 2 + sigma)", "divide q · k, |q|² and |k|² by D"),  # general hint
])
def test_limit_wrong_answers_get_their_hint(body, phrase):
    fails_with("sim-limit-test", "sim-limit-answer", LIMIT.format(body), phrase)


@pytest.mark.parametrize(("code", "phrase"), [
    ("def cosine_limit(mu, sigma):\n    return mu ** 2 / (mu ** 2 + sigma ** 2)",
     "returned normally; expected ValueError"),
    ("def cosine_limit(mu, sigma):\n    if sigma <= 0:\n        raise ValueError('bad value')\n"
     "    return mu ** 2 / (mu ** 2 + sigma ** 2)", "names sigma"),
    ("def cosine_limit(mu, sigma):\n    if sigma < 0:\n        raise ValueError('sigma < 0')\n"
     "    return mu ** 2 / (mu ** 2 + sigma ** 2)", "check sigma > 0 first"),
    ("def cosine_limit(mu, sigma):\n    if sigma == 0:\n        raise ValueError('sigma is 0')\n"
     "    return mu ** 2 / (mu ** 2 + sigma ** 2)", "negative ones included"),
    ("def cosine_limit(mu, sigma):\n    if sigma <= 0:\n        raise ValueError('sigma')\n"
     "    return 1 / (1 + (sigma / mu) ** 2)", "must not divide by mu"),  # mu = 0 not handled
    ("def cosine_limit(mu, sigma):\n    if sigma <= 0:\n        raise ValueError('sigma')\n"
     "    return [mu ** 2 / (mu ** 2 + sigma ** 2)] * 2", "return the limit as a single float"),
    ("from attn_course.similarity import cosine\n"
     "def cosine_limit(mu, sigma):\n    if sigma <= 0:\n        raise ValueError('sigma')\n"
     "    z = np.random.default_rng(0).normal(mu, sigma, size=(2, 10_000))\n"
     "    return float(cosine(z[0], z[1]))", "no simulation and no library cosine"),
])
def test_limit_refusals_and_shortcuts_get_their_hint(code, phrase):
    fails_with("sim-limit-test", "sim-limit-answer", code, phrase)


@pytest.mark.parametrize("code", [
    # the ratio form, with mu = 0 handled
    "def cosine_limit(mu, sigma):\n    if not sigma > 0:\n        raise ValueError(f'need sigma > 0: {sigma}')\n"
    "    if mu == 0:\n        return 0.0\n    return 1 / (1 + (sigma / mu) ** 2)",
    # float32 numpy, the three limits kept apart
    "def cosine_limit(mu, sigma):\n    mu, sigma = np.float32(mu), np.float32(sigma)\n"
    "    if sigma <= 0:\n        raise ValueError('sigma must be positive')\n"
    "    dot, sq = mu * mu, mu ** 2 + sigma ** 2\n    return dot / np.sqrt(sq * sq)",
    # a 0-d numpy array
    "import math\ndef cosine_limit(mu, sigma):\n    if sigma <= 0 or math.isnan(sigma):\n"
    "        raise ValueError('sigma <= 0')\n    return np.array(mu * mu) / np.hypot(mu, sigma) ** 2",
])
def test_limit_alternatives_pass(code):
    assert run_task(NB, "sim-limit-test", {"sim-limit-answer": code}).passed


def test_limit_self_check_gives_the_general_hint_without_the_hidden_diagnosis():
    run = run_task(NB, "sim-limit-test", {"sim-limit-answer": LIMIT.format("return mu / sigma")},
                   hidden=False)
    assert not run.passed
    assert "divide q · k, |q|² and |k|² by D" in run.output, run.output
    assert "ratio of mean to spread" not in run.output


def _cell(grade_id):
    from attn_course.grading import notebooks as nbf

    return next(c for c in nbf.read_notebook(harness.SOLUTIONS / NB).cells if nbf.grade_id(c) == grade_id)


def test_limit_simulation_agrees_with_the_limit_and_separates_the_wrong_answers():
    """The test cell's own reference, a float64 simulation, is within its tolerance of
    mu² / (mu² + sigma²) at every simulated (mu, sigma), and that tolerance is far smaller than the
    distance to a typical wrong answer at the visible point."""
    import ast
    import contextlib
    import io

    source = _cell("sim-limit-test").source
    points = [tuple(ast.literal_eval(a) for a in node.args) for node in ast.walk(ast.parse(source))
              if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "check_simulated"]
    assert len(points) == 4
    assert any(mu < 0 for mu, _ in points)
    ns: dict = {}
    exec(compile(_cell("sim-limit-answer").source, "<sim-limit-answer>", "exec"), ns)  # noqa: S102
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(source, "<sim-limit-test>", "exec"), ns)  # noqa: S102
    for mu, sigma in points:
        mean, tolerance = ns["simulated"](mu, sigma)
        exact = mu * mu / (mu * mu + sigma * sigma)
        assert abs(mean - exact) < tolerance / 2, (mu, sigma, mean, tolerance)
        assert 0 < tolerance < 0.01
    mu, sigma = points[0]
    mean, tolerance = ns["simulated"](mu, sigma)
    for wrong in (mu / sigma, mu ** 2 / sigma ** 2, mu / (mu ** 2 + sigma ** 2) ** 0.5, 0.0,
                  mu ** 2 / (mu ** 2 + 1)):
        assert abs(wrong - mean) > 4 * tolerance, wrong


def test_the_exercise_has_8_tasks():
    """Numbering and points are checked for every exercise in test_grading_exercise_table.py."""
    import re

    from attn_course.grading import notebooks as nbf

    nb = nbf.read_notebook(harness.SOLUTIONS / NB)
    assert sum(bool(re.match(r"## Task \d+: ", c.source)) for c in nb.cells
               if c.cell_type == "markdown") == 8


def test_every_task_is_tagged_and_the_written_answers_are_graded_by_hand():
    from attn_course.grading import notebooks as nbf

    nb = nbf.read_notebook(harness.SOLUTIONS / NB)
    kinds, ids = [], [nbf.grade_id(c) for c in nb.cells if nbf.grade_id(c)]
    assert len(ids) == len(set(ids))
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade"):
            kinds.append(cell.metadata["attn_course"]["kind"])
            assert cell.metadata["attn_course"]["goal"]
        if cell.cell_type == "markdown" and meta.get("grade"):
            assert meta["solution"]
            assert not meta["locked"]
            assert nb.cells[i - 1].source.startswith("## Task ")
    assert kinds == ["build", "build", "build", "predict", "debug", "derive", "derive", "explain"]
    assert ids.index("sim-limit-written") == ids.index("sim-limit-written-task") + 1
    assert _cell("sim-limit-demo").metadata["attn_course"] == {"demo": True}


def test_derive_goals_name_the_skill_not_the_formula():
    from attn_course.grading import notebooks as nbf

    goals = [c.metadata["attn_course"]["goal"] for c in nbf.read_notebook(harness.SOLUTIONS / NB).cells
             if c.metadata.get("nbgrader", {}).get("grade") and c.metadata["attn_course"]["kind"] == "derive"]
    assert len(goals) == 2
    for goal in goals:
        assert not any(ch.isdigit() for ch in goal), goal
        assert not set(goal.split()) & {"mu", "sigma", "mu²", "sigma²"}, goal
        assert not any(s in goal for s in ("^", "²", "/", "+", "=")), goal


def test_no_hint_of_the_derive_task_contains_a_line_of_the_solution():
    """(Elsewhere in 01 a hint may name the learner's own cosine_similarity.)"""
    mine = set(harness.hint_texts(_cell("sim-limit-test").source))
    assert len(mine) >= 8
    assert [(h, hit) for h, hit in harness.solution_in_hints(NB) if h in mine] == []
