"""Exercise 06's feedback: the reference passes, the blank stub fails, typical wrong answers
fail with their own hint, alternative correct answers pass (tests/exercise_harness.py)."""

import pytest

from attn_course.grading import notebooks as nbf
from tests.exercise_harness import SOLUTIONS, run_task, stub

NB = "06_positions.ipynb"

TASKS = {
    "sinusoidal": ("pos-sinusoidal-test", "pos-sinusoidal-answer"),
    "rope": ("pos-rope-test", "pos-rope-answer"),
    "attention": ("pos-attention-test", "pos-attention-answer"),
    "predict": ("pos-predict-test", "pos-predict-answer"),
    "derive": ("pos-derive-test", "pos-derive-answer"),
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


SIN = '''def sinusoidal_encoding(T, E):
    p = np.arange(T)[:, None]
    w = 10000.0 ** (-np.arange(0, E, 2) / E)
    BODY
'''


@pytest.mark.parametrize(("body", "phrase"), [
    ("return np.concatenate([np.sin(p * w), np.cos(p * w)], axis=1)", "interleaved"),
    ("w = 10000.0 ** (-np.arange(E // 2) / E)\n    pe = np.zeros((T, E))\n"
     "    pe[:, 0::2], pe[:, 1::2] = np.sin(p * w), np.cos(p * w)\n    return pe", "the exponent"),
    ("pe = np.zeros((T, E))\n    pe[:, 0::2], pe[:, 1::2] = np.cos(p * w), np.sin(p * w)\n    return pe",
     "columns 0, 2, 4"),
])
def test_sinusoidal_wrong_answers_get_their_hint(body, phrase):
    out = run("sinusoidal", SIN.replace("BODY", body))
    assert not out.passed
    assert phrase in out.output, out.output


def test_sinusoidal_loop_passes():
    body = ("pe = np.zeros((T, E), dtype=np.float32)\n    for pos in range(T):\n"
            "        for i in range(E // 2):\n            a = pos * 10000.0 ** (-2 * i / E)\n"
            "            pe[pos, 2 * i], pe[pos, 2 * i + 1] = np.sin(a), np.cos(a)\n    return pe")
    out = run("sinusoidal", SIN.replace("BODY", body))
    assert out.passed, out.output


ROPE = '''def apply_rope(x, positions):
    D = x.shape[-1]
    theta = 10000.0 ** (-np.arange(0, D, 2) / D)
    a = np.asarray(positions, dtype=float)[:, None] * theta
    x1, x2 = x[..., 0::2], x[..., 1::2]
    BODY
'''


@pytest.mark.parametrize(("body", "phrase"), [
    ("x[..., 0::2] = x1 * np.cos(a) - x2 * np.sin(a)\n    x[..., 1::2] = x1 * np.sin(a) + x2 * np.cos(a)\n"
     "    return x", "in place"),
    ("out = np.empty_like(x)\n    out[..., 0::2] = x1 * np.cos(a) + x2 * np.sin(a)\n"
     "    out[..., 1::2] = -x1 * np.sin(a) + x2 * np.cos(a)\n    return out", "rotate each pair"),
    ("out = np.empty_like(x)\n    out[..., 0::2] = x1 * np.cos(a) - x2 * np.sin(a)\n"
     "    out[..., 1::2] = out[..., 0::2] * np.sin(a) + x2 * np.cos(a)\n    return out", "rotate each pair"),
])
def test_rope_wrong_answers_get_their_hint(body, phrase):
    out = run("rope", ROPE.replace("BODY", body))
    assert not out.passed
    assert phrase in out.output, out.output


def test_rope_complex_numbers_pass():
    answer = '''def apply_rope(x, positions):
    D = x.shape[-1]
    theta = 10000.0 ** (-np.arange(0, D, 2) / D)
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * np.asarray(positions, dtype=float)[:, None] * theta)
    out = np.empty(x.shape)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out
'''
    assert run("rope", answer).passed


ATT = '''def rope_attention(q, k, v):
    T, D = q.shape[-2:]
    pos = np.arange(T)
    ROT
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(D)
    MASK
    probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return probs / probs.sum(axis=-1, keepdims=True) @ v
'''
MASK = "scores = np.where(np.tril(np.ones((T, T), dtype=bool)), scores, -np.inf)"


def att(rot="q, k = apply_rope(q, pos), apply_rope(k, pos)", mask=MASK):
    return ATT.replace("ROT", rot).replace("MASK", mask)


@pytest.mark.parametrize(("answer", "phrase"), [
    (att(rot="q, k, v = apply_rope(q, pos), apply_rope(k, pos), apply_rope(v, pos)"), "averages rotated values"),
    (att(mask="pass"), "causal mask"),
    (att(rot="q = apply_rope(q, pos)"), "look at what the broken code rotates"),
])
def test_attention_wrong_answers_get_their_hint(answer, phrase):
    out = run("attention", answer)
    assert not out.passed
    assert phrase in out.output, out.output


def test_attention_names_a_wrong_rope_from_task_2():
    broken = {"pos-rope-answer": "def apply_rope(x, positions):\n    return x * 1.0"}
    out = run_task(NB, "pos-attention-test", broken)
    assert not out.passed
    assert "fix Task 2 first" in out.output, out.output


def test_attention_with_its_own_rotation_and_float32_passes():
    answer = att(rot="from attn_course.positional import apply_rope as _r\n"
                 "    q, k, v = (a.astype(np.float32) for a in (apply_rope(q, pos), apply_rope(k, pos), v))")
    assert run("attention", answer).passed


@pytest.mark.parametrize(("same", "offset", "phrase"), [
    (2.0, 2.0, "does not always score highest with itself"),
    (2.0, -0.98, "the second pair turns too"),
    (4.0, 0.0095, "keep their dot product"),
    (2.0, "None", "predicted_offset_3 is a number"),
])
def test_predictions_out_of_tolerance_get_their_hint(same, offset, phrase):
    out = run("predict", f"predicted_same = {same}\npredicted_offset_3 = {offset}")
    assert not out.passed
    assert phrase in out.output, out.output


def test_predictions_within_the_tolerance_pass():
    assert run("predict", "predicted_same = 2\npredicted_offset_3 = 0.05").passed
    assert not run("predict", "predicted_same = 2\npredicted_offset_3 = 0.07").passed


DERIVE = '''def rope_offset_score(q, k, delta):
    D = q.shape[-1]
    theta = 10000.0 ** (-np.arange(0, D, 2) / D)
    q1, q2, k1, k2 = q[..., 0::2], q[..., 1::2], k[..., 0::2], k[..., 1::2]
    BODY
'''


@pytest.mark.parametrize(("body", "phrase"), [
    ("a = delta * theta\n    return ((q1 * k1 + q2 * k2) * np.cos(a) - (q1 * k2 - q2 * k1) * np.sin(a)).sum(-1)",
     "the offset -delta"),
    ("return (q * k).sum(-1)", "does not change with delta"),
    ("a = delta\n    return ((q1 * k1 + q2 * k2) * np.cos(a) + (q1 * k2 - q2 * k1) * np.sin(a)).sum(-1)",
     "its own frequency"),
    ("from attn_course.positional import apply_rope\n"
     "    return (apply_rope(q[None], [delta])[0] * k).sum(-1)", "without rotating"),
])
def test_derive_wrong_answers_get_their_hint(body, phrase):
    out = run("derive", DERIVE.replace("BODY", body))
    assert not out.passed
    assert phrase in out.output, out.output


def test_derive_alternatives_pass():
    complex_form = ("z = (q1 + 1j * q2) * (k1 - 1j * k2) * np.exp(1j * delta * theta)\n"
                    "    return z.real.sum(-1).astype(np.float32)")
    assert run("derive", DERIVE.replace("BODY", complex_form)).passed
    loop = ("s = 0\n    for i in range(D // 2):\n        c, sn = np.cos(delta * theta[i]), np.sin(delta * theta[i])\n"
            "        s = s + (q1[..., i] * (k1[..., i] * c + k2[..., i] * sn)"
            " + q2[..., i] * (k2[..., i] * c - k1[..., i] * sn))\n    return s")
    assert run("derive", DERIVE.replace("BODY", loop)).passed


def test_every_task_is_tagged_and_the_written_answers_are_graded_by_hand():
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
