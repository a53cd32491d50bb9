"""Exercise 03's feedback: the reference passes, the blank stub fails, typical wrong answers
fail with their own hint, and other correct answers pass (the learner's-kernel path)."""


import pytest

from tests import exercise_harness as harness
from tests.exercise_harness import run_task

NB = "03_attention.ipynb"


def fails_with(test_id, answer_id, code, phrase):
    harness.fails_with(NB, test_id, answer_id, code, phrase)


def passes(test_id, answer_id, code):
    harness.passes(NB, test_id, answer_id, code)


@pytest.mark.parametrize(("test_id", "answer_id", "phrase"), [
    ("attn-scores-test", "attn-scores-answer", "NotImplementedError"),
    ("attn-numpy-test", "attn-numpy-answer", "NotImplementedError"),
    ("attn-torch-test", "attn-torch-answer", "NotImplementedError"),
    ("attn-predict-test", "attn-predict-answer", "predicted_variance is None"),
    ("attn-derive-test", "attn-derive-answer", "NotImplementedError"),
    ("attn-debug-test", "attn-debug-answer", "NotImplementedError")])
def test_reference_passes_and_stub_fails(test_id, answer_id, phrase):
    harness.reference_passes_and_stub_fails(NB, test_id, answer_id, phrase)


# Task 1: attention_scores
SCORES = "def attention_scores(q, k):\n{}"


@pytest.mark.parametrize(("body", "phrase"), [
    ("    return q @ np.swapaxes(k, -1, -2)", "divide by sqrt(D)"),
    ("    return q @ np.swapaxes(k, -1, -2) / q.shape[-1]", "divide by sqrt(D)"),
    ("    return q @ k.T / math.sqrt(q.shape[-1])", "swap only the last two axes"),
    ("    return torch.from_numpy(q) @ torch.from_numpy(k).mT / math.sqrt(q.shape[-1])", "no torch"),
])
def test_scores_wrong_answers_get_their_hints(body, phrase):
    fails_with("attn-scores-test", "attn-scores-answer", SCORES.format(body), phrase)


def test_scores_alternative_passes():
    passes("attn-scores-test", "attn-scores-answer", SCORES.format(
        "    q, k = np.float32(q), np.float32(k)\n"
        "    return np.einsum('...td,...sd->...ts', q, k) / np.sqrt(np.float32(q.shape[-1]))"))


# Task 2: attention (numpy)
ATT = "def attention(q, k, v):\n    s = attention_scores(q, k)\n{}"


@pytest.mark.parametrize(("body", "phrase"), [
    ("    e = np.exp(s - s.max(axis=-1, keepdims=True))\n"
     "    return e / e.sum(axis=-2, keepdims=True) @ v", "softmax over the last axis"),
    ("    e = np.exp(s * math.sqrt(q.shape[-1]))\n    return e / e.sum(-1, keepdims=True) @ v",
     "it looks unscaled"),
    ("    import scipy.special\n    return scipy.special.softmax(s, axis=-1) @ v", "yourself"),
    ("    e = np.exp(s)\n    return e / e.sum(-1, keepdims=True) @ v", "subtract each row's maximum"),
])
def test_attention_wrong_answers_get_their_hints(body, phrase):
    fails_with("attn-numpy-test", "attn-numpy-answer", ATT.format(body), phrase)


def test_attention_alternative_passes():
    passes("attn-numpy-test", "attn-numpy-answer", ATT.format(
        "    s = np.float32(s)\n    out = np.empty(s.shape[:-1] + (v.shape[-1],))\n"
        "    for idx in np.ndindex(*s.shape[:-1]):\n"
        "        w = np.exp(s[idx] - s[idx].max())\n"
        "        out[idx] = (w / w.sum()) @ v[idx[:-1]]\n    return out"))


# Task 3: attention_torch
TORCH = "def attention_torch(q, k, v):\n{}"


@pytest.mark.parametrize(("body", "phrase"), [
    ("    return torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v", "it looks unscaled"),
    ("    s = q.detach().numpy() @ np.swapaxes(k.detach().numpy(), -1, -2) / math.sqrt(q.shape[-1])\n"
     "    return torch.softmax(torch.from_numpy(s), dim=-1) @ v", "cut off from autograd"),
    ("    return torch.nn.functional.scaled_dot_product_attention(q, k, v)", "ready-made attention"),
    ("    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-2) @ v",
     "softmax over the"),
])
def test_attention_torch_wrong_answers_get_their_hints(body, phrase):
    fails_with("attn-torch-test", "attn-torch-answer", TORCH.format(body), phrase)


def test_attention_torch_alternative_passes():
    passes("attn-torch-test", "attn-torch-answer", TORCH.format(
        "    s = torch.einsum('...td,...sd->...ts', q, k) * q.shape[-1] ** -0.5\n"
        "    w = torch.exp(s - s.amax(dim=-1, keepdim=True))\n"
        "    return (w / w.sum(dim=-1, keepdim=True)) @ v"))


# Task 4: predict
@pytest.mark.parametrize(("value", "phrase"), [
    ("1.0", "too small"), ("16", "its standard deviation"), ("256 ** 2", "too large"),
    ("-256", "a variance is > 0"), ("'256'", "write a single number")])
def test_prediction_wrong_answers_get_their_hints(value, phrase):
    fails_with("attn-predict-test", "attn-predict-answer", f"predicted_variance = {value}", phrase)


@pytest.mark.parametrize("value", ["256", "250.0", "np.float32(300)", "torch.tensor(256.0)"])
def test_prediction_within_tolerance_passes(value):
    passes("attn-predict-test", "attn-predict-answer", f"predicted_variance = {value}")


# Task 5: derive
DERIVE = "def dot_variance(D, mean_q, var_q, mean_k, var_k):\n{}"


@pytest.mark.parametrize(("body", "phrase"), [
    ("    return D * var_q * var_k", "left out the means"),
    ("    return D * math.sqrt(var_q * var_k)", "standard deviations"),
    ("    return D * (var_q + mean_q**2) * (var_k + mean_k**2)", "subtracted once"),
    ("    return D**2 * (var_q * var_k + var_q * mean_k**2 + var_k * mean_q**2)", "no factor D²"),
    ("    return var_q * var_k + var_q * mean_k**2 + var_k * mean_q**2", "no factor D²"),
])
def test_derive_wrong_answers_get_their_hints(body, phrase):
    fails_with("attn-derive-test", "attn-derive-answer", DERIVE.format(body), phrase)


def test_derive_alternatives_pass():
    expanded = "    return D * ((var_q + mean_q**2) * (var_k + mean_k**2) - (mean_q * mean_k) ** 2)"
    passes("attn-derive-test", "attn-derive-answer", DERIVE.format(expanded))
    loop32 = ("    total = np.float32(0)\n    for _ in range(D):\n"
              "        total += np.float32(var_q * var_k + var_q * mean_k**2 + var_k * mean_q**2)\n"
              "    return total")
    passes("attn-derive-test", "attn-derive-answer", DERIVE.format(loop32))


# Task 7: debug
FIXED = "def attention_fixed(q, k, v):\n    D = q.shape[-1]\n{}"


@pytest.mark.parametrize(("body", "phrase"), [
    ("    return torch.softmax(q @ k.transpose(1, 2) / math.sqrt(D), dim=1) @ v",
     "normalises over the queries"),
    ("    return torch.softmax(q @ k.transpose(1, 2) / D, dim=-1) @ v", "the scores are divided by D"),
    ("    return torch.softmax(q @ k.transpose(1, 2) / D, dim=1) @ v", "both bugs"),
    ("    return torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v", "not scaled at all"),
    ("    return torch.nn.functional.scaled_dot_product_attention(q, k, v)", "fix the two lines"),
])
def test_debug_wrong_answers_get_their_hints(body, phrase):
    fails_with("attn-debug-test", "attn-debug-answer", FIXED.format(body), phrase)


def test_debug_alternatives_pass():
    passes("attn-debug-test", "attn-debug-answer", FIXED.format(
        "    s = torch.einsum('btd,bsd->bts', q, k) / D ** 0.5\n"
        "    return torch.softmax(s, dim=2) @ v"))
    passes("attn-debug-test", "attn-debug-answer", FIXED.format(
        "    out = []\n    for b in range(q.shape[0]):\n"
        "        out.append(torch.softmax(q[b] @ k[b].T / math.sqrt(D), dim=-1) @ v[b])\n"
        "    return torch.stack(out)"))


def test_self_check_gives_the_general_hint_without_the_hidden_diagnosis():
    wrong = DERIVE.format("    return D * var_q * var_k")
    run = run_task(NB, "attn-derive-test", {"attn-derive-answer": wrong}, hidden=False)
    assert not run.passed
    assert "compare with the simulation" in run.output, run.output
    assert "left out the means" not in run.output


def test_no_text_of_a_test_cell_contains_a_line_of_the_solution():
    """No hint (first stage, later stages, diagnoses) holds 16 characters of a solution line."""
    assert harness.solution_in_test_text(NB) == []


def test_the_visible_prediction_check_cannot_be_searched():
    """The visible test accepts any positive number; only the hidden tests grade it (no bisection)."""
    run = run_task(NB, "attn-predict-test", {"attn-predict-answer": "predicted_variance = 3.0"}, hidden=False)
    assert run.passed, run.output
    assert not run_task(NB, "attn-predict-test", {"attn-predict-answer": "predicted_variance = 3.0"}).passed
