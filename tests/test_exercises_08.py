"""Exercise 08's feedback: the reference passes, the blank stub fails, typical wrong answers
fail with their own hint, alternative correct answers pass (tests/exercise_harness.py)."""

import pytest

from attn_course.grading import notebooks as nbf
from tests import exercise_harness as harness
from tests.exercise_harness import SOLUTIONS, run_task, stub

NB = "08_cost.ipynb"

TASKS = {
    "slope": ("cost-slope-test", "cost-slope-answer"),
    "peak": ("cost-peak-test", "cost-peak-answer"),
    "chunked": ("cost-chunked-test", "cost-chunked-answer"),
    "predict": ("cost-predict-test", "cost-predict-answer"),
    "flops": ("cost-flops-test", "cost-flops-answer"),
}


def run(task, answer=None, hidden=True):
    test_id, answer_id = TASKS[task]
    return run_task(NB, test_id, None if answer is None else {answer_id: answer}, hidden=hidden)


@pytest.mark.parametrize("task", TASKS)
def test_reference_passes_and_stub_fails(task):
    ref = run(task)
    assert ref.passed, ref.output
    blank = stub(NB, TASKS[task][1])
    if task == "predict":  # the stub raises, so the predictions are never set
        assert "raise NotImplementedError()" in blank
        blank = "pass"
    out = run(task, blank)
    assert not out.passed
    assert "NotImplementedError" in out.output or "NameError" in out.output


SLOPE = "def loglog_slope(x, y):\n    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))\n"


@pytest.mark.parametrize(("body", "phrase"), [
    ("    return float((ly[-1] - ly[0]) / (lx[-1] - lx[0]))", "not the two end points"),
    ("    return float(np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)[0])", "fit a straight line"),
    ("    return float(np.polyfit(lx, ly, 1)[1])", "fit a straight line"),
])
def test_slope_wrong_answers_get_their_hint(body, phrase):
    out = run("slope", SLOPE + body)
    assert not out.passed
    assert phrase in out.output, out.output


def test_slope_polyfit_passes():
    assert run("slope", SLOPE + "    return float(np.polyfit(lx, ly, 1)[0])").passed


PEAK = '''def peak_bytes(fn):
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    RESET
    before = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[INDEX]
    STOP
    return peak - BEFORE
'''


def peak(reset="tracemalloc.reset_peak()", index="1", stop="if started:\n        tracemalloc.stop()",
         before="before"):
    return (PEAK.replace("RESET", reset).replace("INDEX", index).replace("STOP", stop)
            .replace("BEFORE", before))


@pytest.mark.parametrize(("answer", "phrase"), [
    (peak(reset="pass"), "since the peak was last reset"),  # the bug shown
    (peak(index="0"), "read the peak, not the current"),
    (peak(before="0"), "subtract the bytes traced before the call"),
    (peak(stop="tracemalloc.stop()"), "only stop tracing if your function started it"),
    (peak(stop="pass"), "tracing slows every allocation"),
])
def test_peak_wrong_answers_get_their_hint(answer, phrase):
    out = run("peak", answer)
    assert not out.passed
    assert phrase in out.output, out.output


def test_peak_alternative_passes():
    answer = '''def peak_bytes(fn):
    was_on = tracemalloc.is_tracing()
    if not was_on:
        tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        fn()
        _, top = tracemalloc.get_traced_memory()
        return top - base
    finally:
        if not was_on:
            tracemalloc.stop()
'''
    out = run("peak", answer)
    assert out.passed, out.output


CHUNK = '''def chunked_attention(q, k, v, chunk):
    T, D = q.shape[-2:]
    out = np.empty(q.shape[:-1] + v.shape[-1:])
    for start in range(0, T, chunk):
        s = q[..., start:start + chunk, :] @ np.swapaxes(k, -1, -2) / np.sqrt(D)
        SHIFT
        p = np.exp(s)
        out[..., start:start + chunk, :] = p / p.sum(axis=-1, keepdims=True) @ v
    return out
'''


@pytest.mark.parametrize(("answer", "phrase"), [
    (CHUNK.replace("SHIFT", "pass"), "subtract each row's maximum"),
    (CHUNK.replace("for start in range(0, T, chunk)", "for start in range(0, T - chunk + 1, chunk)")
     .replace("SHIFT", "s = s - s.max(axis=-1, keepdims=True)"), "short last chunk"),
    ('''def chunked_attention(q, k, v, chunk):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    rows = []
    for start in range(0, q.shape[-2], chunk):
        b = s[..., start:start + chunk, :]
        p = np.exp(b - b.max(axis=-1, keepdims=True))
        rows.append(p / p.sum(axis=-1, keepdims=True) @ v)
    return np.concatenate(rows, axis=-2)
''', "never build the whole (T, S) matrix"),
])
def test_chunked_wrong_answers_get_their_hint(answer, phrase):
    out = run("chunked", answer)
    assert not out.passed
    assert phrase in out.output, out.output


@pytest.mark.parametrize("answer", [
    # a list of blocks, concatenated at the end
    """def chunked_attention(q, k, v, chunk):
    rows = []
    for start in range(0, q.shape[-2], chunk):
        s = q[..., start:start + chunk, :] @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
        p = np.exp(s - s.max(axis=-1, keepdims=True))
        rows.append((p / p.sum(axis=-1, keepdims=True)) @ v)
    return np.concatenate(rows, axis=-2)
""",
    # float32 throughout
    """def chunked_attention(q, k, v, chunk):
    q, k, v = (a.astype(np.float32) for a in (q, k, v))
    out = np.empty(q.shape[:-1] + v.shape[-1:], dtype=np.float32)
    for start in range(0, q.shape[-2], chunk):
        s = q[..., start:start + chunk, :] @ np.swapaxes(k, -1, -2) / np.float32(np.sqrt(q.shape[-1]))
        p = np.exp(s - s.max(axis=-1, keepdims=True))
        out[..., start:start + chunk, :] = (p / p.sum(axis=-1, keepdims=True)) @ v
    return out
""",
])
def test_chunked_alternatives_pass(answer):
    out = run("chunked", answer)
    assert out.passed, out.output


@pytest.mark.parametrize(("naive", "chunked", "phrase"), [
    (4, 1, "like T to which power"),
    (2, 0, "with chunk fixed its scores still grow"),
    (2, 2, "a block of scores is chunk x T"),
    (1e6, 1, "the slope of a log-log plot is the exponent"),
    ("'quadratic'", 1, "predicted_naive_slope is a number"),
])
def test_predictions_out_of_tolerance_get_their_hint(naive, chunked, phrase):
    out = run("predict", f"predicted_naive_slope = {naive}\npredicted_chunked_slope = {chunked}")
    assert not out.passed
    assert phrase in out.output, out.output


def test_predictions_within_the_tolerance_pass():
    assert run("predict", "predicted_naive_slope = 1.8\npredicted_chunked_slope = 1.2").passed
    assert not run("predict", "predicted_naive_slope = 1.7\npredicted_chunked_slope = 1").passed


def test_every_task_is_tagged_and_the_written_answer_is_graded_by_hand():
    nb = nbf.read_notebook(SOLUTIONS / NB)
    kinds = []
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade"):
            tag = cell.metadata["attn_course"]
            assert tag["kind"] in {"build", "predict", "debug", "derive", "explain"}
            assert tag["goal"]
            kinds.append(tag["kind"])
        if cell.cell_type == "markdown" and meta.get("grade"):
            assert meta["solution"]
            assert not meta["locked"]
            assert nb.cells[i - 1].source.startswith("## Task ")
    assert sorted(kinds) == ["build", "build", "debug", "derive", "derive", "explain", "predict"]


# Task 5 (derive): the flops of attention's two matrix products ---------------------------

FLOPS = "def attention_flops(B, H, T, S, D, Dv):\n    {}\n"


@pytest.mark.parametrize(("body", "phrase"), [
    ("return B * H * T * S * (D + Dv)", "2 flops, not 1"),  # a multiply-add counted as 1
    ("return 2 * B * H * T * S * D", "counts the scores q kᵀ only"),
    ("return 2 * B * H * T * S * Dv", "counts the output probs @ v only"),
    ("return 2 * B * H * T * T * (D + Dv)", "T x T is not its size"),
    ("return 4 * B * H * T * S * D", "Dv entries per query, not D"),  # D for both products
    ("return 2 * H * T * S * (D + Dv)", "every sequence of the batch"),
    ("return 2 * B * T * S * (D + Dv)", "every head"),
    ("return 2 * T * S * (D + Dv)", "does the same work; and count every head"),
    ("return B * H * T * S * D", "2 flops, not 1; and that counts the scores q kᵀ only"),
    ("return 2.0 * B * H * T * S * (D + Dv)", "return an int"),
    ("return 4 * B * H * T * S * (D + Dv) / 2", "/ gives a float"),
    ("return int(2.0 * B * H * T * S * (D + Dv))", "went through a float"),
    ("return np.prod([2, B, H, T, S]) * (D + Dv)", "overflow above 2^63"),
    ("return None", "return the number of flops, an int"),
    # the scaling and a softmax of about 5 operations per score counted too
    ("return 2 * B * H * T * S * (D + Dv) + 6 * B * H * T * S", "the softmax, a few operations per score, are left out"),
])
def test_flops_wrong_answers_get_their_hint(body, phrase):
    out = run("flops", FLOPS.format(body))
    assert not out.passed
    assert phrase in out.output, out.output


def test_flops_torch_flop_counter_is_not_the_exercise():
    out = run("flops", FLOPS.format(
        "from torch.utils.flop_counter import sdpa_flop_count\n"
        "    return sdpa_flop_count((B, H, T, D), (B, H, S, D), (B, H, S, Dv))"))
    assert not out.passed
    assert "count the flops yourself" in out.output, out.output


@pytest.mark.parametrize("body", [
    "return 2 * B * H * T * S * (D + Dv)",
    # one matrix product at a time: (rows, inner) @ (inner, cols) costs 2 rows inner cols
    "total = 0\n"
    "    for rows, inner, cols in ((T, D, S), (T, S, Dv)):\n"
    "        total += 2 * rows * inner * cols\n"
    "    return B * H * total",
    "import math\n    return math.prod((2, B, H, T, S)) * (D + Dv)",
    # numpy, converted to Python ints before they could overflow
    "return int(np.prod([B, H, T])) * int(S) * 2 * (D + Dv)",
])
def test_flops_alternatives_pass(body):
    out = run("flops", FLOPS.format(body))
    assert out.passed, out.output


def test_flops_self_check_gives_the_general_hint_without_the_hidden_diagnosis():
    out = run("flops", FLOPS.format("return 2 * B * H * T * T * (D + Dv)"), hidden=False)
    assert not out.passed
    assert "count the two matrix products one at a time" in out.output, out.output
    assert "T x T" not in out.output


def _flops_test_cell():
    return next(c for c in nbf.read_notebook(SOLUTIONS / NB).cells
                if nbf.grade_id(c) == "cost-flops-test").source


def test_flops_reference_is_what_flop_counter_mode_counts_in_the_course_attention():
    """The test cell's reference (PyTorch's formula for attention, fast) equals what
    FlopCounterMode counts when the course's sdpa_torch runs on meta tensors, for every shape
    the cell checks, the huge ones included (exact Python ints); and both are 2 B H T S (D + Dv)."""
    import ast
    import contextlib
    import io

    source = _flops_test_cell()
    shapes = [ast.literal_eval(node.args[1]) for node in ast.walk(ast.parse(source))
              if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "check_count"]
    assert len(shapes) >= 10
    assert {(32, 131072, 131072), (128, 1048576, 1048576)} <= {s[1:4] for s in shapes}
    ns: dict = {"attention_flops": lambda B, H, T, S, D, Dv: 2 * B * H * T * S * (D + Dv)}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(source, "<cost-flops-test>", "exec"), ns)  # noqa: S102
    for shape in shapes:
        B, H, T, S, D, Dv = shape
        expected = 2 * B * H * T * S * (D + Dv)
        assert ns["counted"](*shape) == ns["reference"](*shape) == expected, shape
        assert type(ns["reference"](*shape)) is int
    assert any(float(2 * B * H * T * S * (D + Dv)) != 2 * B * H * T * S * (D + Dv)
               for B, H, T, S, D, Dv in shapes)  # a count that a float cannot hold exactly
    assert max(2 * B * H * T * S * (D + Dv) for B, H, T, S, D, Dv in shapes) >= 2**63


def test_flops_counted_by_flop_counter_mode_on_an_explicit_attention():
    """FlopCounterMode counts 2 m n k per matrix product (aten.bmm), on real and on meta
    tensors alike, and nothing for the scaling and the softmax."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    for device in ("cpu", "meta"):
        q, k, v = (torch.empty(2, 3, n, d, device=device) for n, d in ((5, 4), (7, 4), (7, 6)))
        with FlopCounterMode(display=False) as counter:
            p = torch.softmax(q @ k.transpose(-2, -1) / 2.0, dim=-1)  # (2, 3, 5, 7)
            p @ v  # (2, 3, 5, 6)
        assert counter.get_total_flops() == 2 * 2 * 3 * 5 * 7 * (4 + 6)


def test_the_exercise_has_7_tasks():
    """Numbering and points are checked for every exercise in test_grading_exercise_table.py."""
    import re

    from attn_course.grading import notebooks as nbf

    nb = nbf.read_notebook(SOLUTIONS / NB)
    assert sum(bool(re.match(r"## Task \d+: ", c.source)) for c in nb.cells
               if c.cell_type == "markdown") == 7


def test_derive_goals_name_the_skill_not_the_formula():
    goals = harness.derive_goals(NB)
    assert len(goals) == 2
    for goal in goals:
        assert not any(ch.isdigit() for ch in goal), goal
        assert not any(s in goal for s in ("BHTS", "D + Dv", "D+Dv", "Dv", "T^2", "T**2")), goal


def test_the_flops_task_grade_ids_are_unique_and_the_written_answer_follows_its_task():
    nb = nbf.read_notebook(SOLUTIONS / NB)
    ids = harness.grade_ids(NB)
    assert len(ids) == len(set(ids))
    i = ids.index("cost-flops-written")
    assert ids[i - 1] == "cost-flops-written-task"
    assert ids.index("cost-flops-test") < ids.index("cost-flops-demo") < i < ids.index("cost-explain-answer")
    demo = next(c for c in nb.cells if nbf.grade_id(c) == "cost-flops-demo")
    assert demo.metadata["attn_course"] == {"demo": True}


def test_no_hint_and_no_text_of_a_test_cell_contains_a_line_of_the_solution():
    from tests import exercise_harness as harness

    assert harness.solution_in_hints(NB) == []
    assert harness.solution_in_test_text(NB) == []
