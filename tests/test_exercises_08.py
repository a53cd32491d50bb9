"""Exercise 08's feedback: the reference passes, the blank stub fails, typical wrong answers
fail with their own hint, alternative correct answers pass (tests/exercise_harness.py)."""

import pytest

from attn_course.grading import notebooks as nbf
from tests.exercise_harness import SOLUTIONS, run_task, stub

NB = "08_cost.ipynb"

TASKS = {
    "slope": ("cost-slope-test", "cost-slope-answer"),
    "peak": ("cost-peak-test", "cost-peak-answer"),
    "chunked": ("cost-chunked-test", "cost-chunked-answer"),
    "predict": ("cost-predict-test", "cost-predict-answer"),
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
    assert sorted(kinds) == ["build", "build", "debug", "explain", "predict"]
