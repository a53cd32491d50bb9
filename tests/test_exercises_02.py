"""Exercise 02's feedback: the reference passes, the blank stub fails, typical wrong answers
fail with their own hint, and other correct answers pass (the learner's-kernel path)."""


import pytest

from tests import exercise_harness as harness
from tests.exercise_harness import run_task

NB = "02_softmax.ipynb"


def fails_with(test_id, answer_id, code, phrase):
    harness.fails_with(NB, test_id, answer_id, code, phrase)


def passes(test_id, answer_id, code):
    harness.passes(NB, test_id, answer_id, code)


@pytest.mark.parametrize(("test_id", "answer_id", "phrase"), [
    ("softmax-stable-test", "softmax-stable-answer", "NotImplementedError"),
    ("softmax-temperature-test", "softmax-temperature-answer", "NotImplementedError"),
    ("softmax-lse-test", "softmax-lse-answer", "NotImplementedError"),
    ("softmax-jacobian-test", "softmax-jacobian-answer", "NotImplementedError"),
    ("softmax-predict-test", "softmax-predict-answer", "predicted_max_logit is None"),
    ("softmax-debug-test", "softmax-debug-answer", "NotImplementedError")])
def test_reference_passes_and_stub_fails(test_id, answer_id, phrase):
    harness.reference_passes_and_stub_fails(NB, test_id, answer_id, phrase)


# Task 1: stable_softmax
STABLE = "def stable_softmax(x, axis=-1):\n    x = np.asarray(x, dtype=float)\n{}"


@pytest.mark.parametrize(("body", "phrase"), [
    ("    e = np.exp(x)\n    return e / e.sum(axis=axis, keepdims=True)", "subtract each row's maximum"),
    ("    e = np.exp(x - x.max())\n    return e / e.sum(axis=-1, keepdims=True)", "each row's maximum"),
    ("    e = np.exp(x - x.max(axis=axis, keepdims=True))\n    return e / e.sum()", "keepdims=True"),
    ("    import scipy.special\n    return scipy.special.softmax(x, axis=axis)", "instead of calling"),
])
def test_stable_wrong_answers_get_their_hints(body, phrase):
    fails_with("softmax-stable-test", "softmax-stable-answer", STABLE.format(body), phrase)


def test_stable_alternative_passes():
    passes("softmax-stable-test", "softmax-stable-answer", STABLE.format(
        "    x = x.astype(np.float32)\n    m = np.amax(x, axis=axis, keepdims=True)\n"
        "    return np.exp(x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)))"))


# Task 2: softmax_with_temperature
TEMP = "def softmax_with_temperature(x, temperature):\n{}"


@pytest.mark.parametrize(("body", "phrase"), [
    ("    return stable_softmax(np.asarray(x) * temperature)", "do not multiply"),
    ("    return stable_softmax(np.asarray(x) / temperature)", "check `temperature > 0` first"),
    ("    if temperature <= 0:\n        raise ValueError(temperature)\n"
     "    e = np.exp(np.asarray(x) / temperature)\n    return e / e.sum(-1, keepdims=True)",
     "subtract the row maximum"),
])
def test_temperature_wrong_answers_get_their_hints(body, phrase):
    fails_with("softmax-temperature-test", "softmax-temperature-answer", TEMP.format(body), phrase)


def test_temperature_alternative_passes():
    passes("softmax-temperature-test", "softmax-temperature-answer", TEMP.format(
        "    if not temperature > 0:\n        raise ValueError(f'temperature {temperature}')\n"
        "    z = np.asarray(x, dtype=np.float32) * np.float32(1 / temperature)\n"
        "    e = np.exp(z - z.max(axis=-1, keepdims=True))\n    return e / e.sum(axis=-1, keepdims=True)"))


# Task 3: logsumexp
LSE = "def logsumexp(x, axis=-1):\n    x = np.asarray(x, dtype=float)\n{}"


@pytest.mark.parametrize(("body", "phrase"), [
    ("    return np.log(np.sum(np.exp(x), axis=axis))", "factor out the maximum"),
    ("    m = x.max(axis=axis, keepdims=True)\n    return np.log(np.sum(np.exp(x - m), axis=axis))",
     "add m back"),
    ("    m = x.max(axis=axis, keepdims=True)\n"
     "    return m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))", "one number per row"),
    ("    return np.logaddexp.reduce(x, axis=axis)", "np.logaddexp"),
])
def test_lse_wrong_answers_get_their_hints(body, phrase):
    fails_with("softmax-lse-test", "softmax-lse-answer", LSE.format(body), phrase)


def test_lse_loop_passes():
    passes("softmax-lse-test", "softmax-lse-answer", LSE.format(
        "    x = np.moveaxis(x, axis, -1)\n    out = np.empty(x.shape[:-1])\n"
        "    for idx in np.ndindex(*x.shape[:-1]):\n        m = x[idx].max()\n"
        "        out[idx] = m + np.log(np.exp(x[idx] - m).sum())\n    return out"))


# Task 4: the Jacobian
JAC = "def softmax_jacobian(x):\n    p = stable_softmax(np.asarray(x, dtype=float))\n{}"


@pytest.mark.parametrize(("body", "phrase"), [
    ("    return np.diag(p)", "off-diagonal entries are missing"),
    ("    return np.outer(p, p) - np.diag(p)", "the diagonal is positive"),
    ("    return np.diag(p) + np.outer(p, p)", "the outer-product part is subtracted"),
    ("    return -np.outer(p, p)", "the diagonal part is missing"),
    ("    return p * (1 - p)", "diagonal p_i (1 - p_i) only"),
    ("    import torch\n    return torch.autograd.functional.jacobian(lambda t: torch.softmax(t, -1), "
     "torch.tensor(np.asarray(x, dtype=float))).numpy()", "instead of calling autograd"),
])
def test_jacobian_wrong_answers_get_their_hints(body, phrase):
    fails_with("softmax-jacobian-test", "softmax-jacobian-answer", JAC.format(body), phrase)


def test_jacobian_naive_softmax_fails_on_large_logits():
    naive = ("def softmax_jacobian(x):\n    e = np.exp(np.asarray(x, dtype=float))\n    p = e / e.sum()\n"
             "    return np.diag(p) - np.outer(p, p)")
    fails_with("softmax-jacobian-test", "softmax-jacobian-answer", naive, "stable softmax")


def test_jacobian_alternatives_pass():
    loop = ("    S = len(p)\n    J = np.zeros((S, S))\n    for i in range(S):\n        for j in range(S):\n"
            "            J[i, j] = p[i] * ((i == j) - p[j])\n    return J")
    passes("softmax-jacobian-test", "softmax-jacobian-answer", JAC.format(loop))
    outer = "    return np.diagflat(p) - p[:, None] * p[None, :]"
    passes("softmax-jacobian-test", "softmax-jacobian-answer", JAC.format(outer))


# Task 6: predict
@pytest.mark.parametrize(("value", "phrase"), [
    ("709.78", "float64's limit"), ("38", "base-10 exponent"), ("128", "base-2 exponent"),
    ("3.4e38", "the largest float32 itself"), ("50", "too small"), ("None", "write a single number")])
def test_prediction_wrong_answers_get_their_hints(value, phrase):
    fails_with("softmax-predict-test", "softmax-predict-answer", f"predicted_max_logit = {value}", phrase)


@pytest.mark.parametrize("value", ["88.7", "89", "np.log(3.4e38)", "np.float32(88.72)"])
def test_prediction_within_tolerance_passes(value):
    passes("softmax-predict-test", "softmax-predict-answer", f"predicted_max_logit = {value}")


# Task 7: debug
LOG = "def log_softmax(x, axis=-1):\n    x = np.asarray(x, dtype=float)\n{}"


@pytest.mark.parametrize(("body", "phrase"), [
    ("    e = np.exp(x - x.max(axis=axis, keepdims=True))\n"
     "    return np.log(e / e.sum(axis=axis, keepdims=True))", "do not take the log of the softmax"),
    ("    return x - np.log(np.sum(np.exp(x), axis=axis, keepdims=True))", "factor the row maximum"),
    ("    return x - x.max(axis=axis, keepdims=True)", "subtracting the maximum is not enough"),
    ("    return x - logsumexp(x)", "along the given axis"),
])
def test_debug_wrong_answers_get_their_hints(body, phrase):
    fails_with("softmax-debug-test", "softmax-debug-answer", LOG.format(body), phrase)


def test_debug_alternatives_pass():
    via_lse = "    return x - np.expand_dims(logsumexp(x, axis=axis), axis)"
    passes("softmax-debug-test", "softmax-debug-answer", LOG.format(via_lse))
    inline32 = ("    m = np.max(x, axis=axis, keepdims=True)\n"
                "    s = np.sum(np.exp(np.float32(x - m)), axis=axis, keepdims=True)\n"
                "    return x - m - np.log(s)")
    passes("softmax-debug-test", "softmax-debug-answer", LOG.format(inline32))


def test_no_text_of_a_test_cell_contains_a_line_of_the_solution():
    """No hint (first stage, later stages, diagnoses) holds 16 characters of a solution line."""
    assert harness.solution_in_test_text(NB) == []


def test_the_visible_prediction_check_cannot_be_searched():
    """The visible test accepts any positive number; only the hidden tests grade it (no bisection)."""
    run = run_task(NB, "softmax-predict-test", {"softmax-predict-answer": "predicted_max_logit = 5.0"}, hidden=False)
    assert run.passed, run.output
    assert not run_task(NB, "softmax-predict-test", {"softmax-predict-answer": "predicted_max_logit = 5.0"}).passed
