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
