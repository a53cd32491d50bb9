"""Exercise 04's feedback: the reference passes, the blank stub fails, typical wrong answers
fail with their own hint, and other correct answers pass (the learner's-kernel path)."""


import pytest

from tests import exercise_harness as harness
from tests.exercise_harness import run_task

NB = "04_masks.ipynb"


def fails_with(test_id, answer_id, code, phrase):
    harness.fails_with(NB, test_id, answer_id, code, phrase)


def passes(test_id, answer_id, code):
    harness.passes(NB, test_id, answer_id, code)


@pytest.mark.parametrize(("test_id", "answer_id", "phrase"), [
    ("mask-causal-test", "mask-causal-answer", "NotImplementedError"),
    ("mask-padding-test", "mask-padding-answer", "NotImplementedError"),
    ("mask-attention-test", "mask-attention-answer", "NotImplementedError"),
    ("mask-predict-test", "mask-predict-answer", "predicted_weight is None"),
    ("mask-halfdebug-test", "mask-halfdebug-answer", "NotImplementedError"),
    ("mask-cachedebug-test", "mask-cachedebug-answer", "NotImplementedError"),
    ("mask-cross-test", "mask-cross-answer", "NotImplementedError")])
def test_reference_passes_and_stub_fails(test_id, answer_id, phrase):
    harness.reference_passes_and_stub_fails(NB, test_id, answer_id, phrase)


# Task 1: causal_mask
CAUSAL = "def causal_mask(T, S=None):\n    S = T if S is None else S\n{}"


@pytest.mark.parametrize(("body", "phrase"), [
    ("    return np.tril(np.ones((T, S)))", "dtype float64, expected bool"),
    ("    return np.arange(S)[None, :] >= np.arange(T)[:, None]", "compare column index j with row index i"),
    ("    return np.arange(T)[None, :] <= np.arange(S)[:, None]", "np.arange(T) for rows"),
])
def test_causal_wrong_answers_get_their_hints(body, phrase):
    fails_with("mask-causal-test", "mask-causal-answer", CAUSAL.format(body), phrase)


def test_causal_alternative_passes():
    passes("mask-causal-test", "mask-causal-answer", CAUSAL.format(
        "    return np.tril(np.ones((T, S), dtype=bool))"))


# Task 2: padding_mask
PAD = "def padding_mask(lengths, S):\n{}"


@pytest.mark.parametrize(("body", "phrase"), [
    ("    return (np.arange(S)[None, :] < lengths[:, None])[:, None, :]", "convert it to a numpy array first"),
    ("    lengths = np.asarray(lengths)\n    return (np.arange(S)[None, :] <= lengths[:, None])[:, None, :]",
     "True where the key index j < lengths[b]"),
    ("    lengths = np.asarray(lengths)\n    return (np.arange(S)[None, :] >= lengths[:, None])[:, None, :]",
     "True where the key index j < lengths[b]"),
    ("    lengths = np.asarray(lengths)\n    return np.arange(S)[None, :] < lengths[:, None]", "shape (B, 1, S)"),
])
def test_padding_wrong_answers_get_their_hints(body, phrase):
    fails_with("mask-padding-test", "mask-padding-answer", PAD.format(body), phrase)


def test_padding_loop_passes():
    passes("mask-padding-test", "mask-padding-answer", PAD.format(
        "    out = np.zeros((len(lengths), 1, S), dtype=bool)\n"
        "    for b, n in enumerate(lengths):\n        out[b, 0, :n] = True\n    return out"))


# Task 3: masked_attention
MASKED = ("def masked_attention(q, k, v, mask):\n"
          "    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])\n{}")


@pytest.mark.parametrize(("body", "phrase"), [
    ("    s = np.where(mask, s, -np.inf)\n    e = np.exp(s - s.max(-1, keepdims=True))\n"
     "    return e / e.sum(-1, keepdims=True) @ v", "guard the maximum"),
    ("    e = np.exp(s - s.max(-1, keepdims=True)) * mask\n"
     "    return e / np.maximum(e.sum(-1, keepdims=True), 1e-300) @ v", "subtract each row's (finite) maximum"),
    ("    s = s * np.sqrt(q.shape[-1])\n    s = np.where(mask, s, -1e30)\n"
     "    e = np.exp(s - s.max(-1, keepdims=True))\n    return e / e.sum(-1, keepdims=True) @ v",
     "it looks unscaled"),
    ("    s = np.where(mask, s, -np.inf)\n    return np.exp(s) / np.exp(s).sum(-1, keepdims=True) @ v",
     "guard the maximum"),
])
def test_masked_attention_wrong_answers_get_their_hints(body, phrase):
    fails_with("mask-attention-test", "mask-attention-answer", MASKED.format(body), phrase)


def test_masked_attention_alternative_passes():
    passes("mask-attention-test", "mask-attention-answer", MASKED.format(
        "    s = np.where(mask, s, -np.inf).astype(np.float32)\n"
        "    m = np.max(s, axis=-1, keepdims=True)\n    m[~np.isfinite(m)] = 0\n"
        "    e = np.exp(s - m)\n    z = e.sum(-1, keepdims=True)\n"
        "    return np.divide(e, z, out=np.zeros_like(e), where=z > 0) @ v"))


# Task 4: predict
@pytest.mark.parametrize(("value", "phrase"), [
    ("0.68", "exact-arithmetic answer"), ("0", "not -inf"), ("1.0", "work out what float32 stores"),
    ("'0.25'", "write a single number")])
def test_prediction_wrong_answers_get_their_hints(value, phrase):
    fails_with("mask-predict-test", "mask-predict-answer", f"predicted_weight = {value}", phrase)


@pytest.mark.parametrize("value", ["0.25", "1 / 4", "np.float32(0.26)"])
def test_prediction_within_tolerance_passes(value):
    passes("mask-predict-test", "mask-predict-answer", f"predicted_weight = {value}")


# Task 5: -1e9 in half precision
HALF = ("def masked_attention_fixed(q, k, v, keep):\n"
        "    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])\n{}")


@pytest.mark.parametrize(("body", "phrase"), [
    ("    scores = scores.masked_fill(~keep, -1e9)\n    return torch.softmax(scores, dim=-1) @ v",
     "does not fit in float16"),
    ("    scores = scores.masked_fill(~keep, float('-inf'))\n    return torch.softmax(scores, dim=-1) @ v",
     "NaN where every key is masked"),
    ("    scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)\n"
     "    return torch.softmax(scores, dim=-1) @ v", "attends uniformly to the padding"),
    ("    scores = scores.float().masked_fill(~keep, float('-inf'))\n"
     "    p = torch.nan_to_num(torch.softmax(scores, dim=-1))\n    return p @ v.float()",
     "cast the result back"),
    ("    from attn_course.attention import sdpa_torch\n    return sdpa_torch(q, k, v, mask=keep)",
     "instead of calling a ready-made attention"),
])
def test_half_wrong_answers_get_their_hints(body, phrase):
    fails_with("mask-halfdebug-test", "mask-halfdebug-answer", HALF.format(body), phrase)


def test_half_alternatives_pass():
    finfo = ("    s = scores.float().masked_fill(~keep, torch.finfo(torch.float32).min)\n"
             "    p = torch.softmax(s, dim=-1) * keep.any(dim=-1, keepdim=True)\n"
             "    return (p @ v.float()).to(q.dtype)")
    passes("mask-halfdebug-test", "mask-halfdebug-answer", HALF.format(finfo))
    nan_to_num = ("    s = scores.masked_fill(~keep, float('-inf'))\n"
                  "    return torch.nan_to_num(torch.softmax(s, dim=-1), nan=0.0) @ v")
    passes("mask-halfdebug-test", "mask-halfdebug-answer", HALF.format(nan_to_num))


# Task 6: the KV-cache mask
CACHE = "def cache_causal_mask(T, S):\n    if T > S:\n        raise ValueError(f'T={{T}} > S={{S}}')\n{}"


@pytest.mark.parametrize(("body", "phrase"), [
    ("    return np.tril(np.ones((T, S), dtype=bool))", "aligned at the top left"),
    ("    return np.arange(S)[None, :] < np.arange(T)[:, None] + (S - T)", "its own key too"),
    ("    return np.arange(S)[None, :] <= np.arange(T)[:, None] + (T - S)", "the other way"),
])
def test_cache_wrong_answers_get_their_hints(body, phrase):
    fails_with("mask-cachedebug-test", "mask-cachedebug-answer", CACHE.format(body), phrase)


def test_cache_without_the_check_fails():
    no_check = ("def cache_causal_mask(T, S):\n"
                "    return np.arange(S)[None, :] <= np.arange(T)[:, None] + (S - T)")
    fails_with("mask-cachedebug-test", "mask-cachedebug-answer", no_check, "check T <= S first")


def test_cache_alternatives_pass():
    passes("mask-cachedebug-test", "mask-cachedebug-answer",
           CACHE.format("    return np.tril(np.ones((T, S), dtype=bool), k=S - T)"))
    passes("mask-cachedebug-test", "mask-cachedebug-answer", CACHE.format(
        "    m = np.zeros((T, S), dtype=bool)\n    for i in range(T):\n"
        "        m[i, :S - T + i + 1] = True\n    return m"))


# Task 7: cross-attention
CROSS = "def cross_attention(x, memory, lengths, w_q, w_k, w_v):\n{}"
RIGHT_QKV = "    q, k, v = x @ w_q, memory @ w_k, memory @ w_v\n"


@pytest.mark.parametrize(("body", "phrase"), [
    (RIGHT_QKV + "    return masked_attention(q, k, v, np.ones((1, 1, k.shape[1]), dtype=bool))",
     "not masked: the queries attend to padding"),
    (RIGHT_QKV + "    return masked_attention(q, k, v, ~padding_mask(lengths, k.shape[1]))", "the mask is inverted"),
    ("    q, k, v = memory @ w_q, x @ w_k, x @ w_v\n"
     "    return masked_attention(q, k, v, padding_mask(lengths, k.shape[1]))", "x gives the queries"),
    (RIGHT_QKV + "    keep = padding_mask(lengths, x.shape[1])\n"
     "    return masked_attention(q, k, v, np.swapaxes(keep, 1, 2))", "x gives the queries"),
])
def test_cross_wrong_answers_get_their_hints(body, phrase):
    fails_with("mask-cross-test", "mask-cross-answer", CROSS.format(body), phrase)


def test_cross_alternative_passes():
    passes("mask-cross-test", "mask-cross-answer", CROSS.format(
        "    x, memory = np.float32(x), np.float32(memory)\n"
        "    q = np.einsum('bte,ed->btd', x, w_q)\n    k, v = memory @ w_k, memory @ w_v\n"
        "    keep = np.arange(memory.shape[1])[None, None, :] < np.asarray(lengths)[:, None, None]\n"
        "    s = np.where(keep, q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1]), -np.inf)\n"
        "    m = s.max(-1, keepdims=True)\n    e = np.exp(s - np.where(np.isfinite(m), m, 0))\n"
        "    z = e.sum(-1, keepdims=True)\n    return e / np.where(z > 0, z, 1) @ v"))


def test_no_text_of_a_test_cell_contains_a_line_of_the_solution():
    """No hint (first stage, later stages, diagnoses) holds 16 characters of a solution line."""
    assert harness.solution_in_test_text(NB) == []


def test_the_visible_prediction_check_cannot_be_searched():
    """The visible test accepts any positive number; only the hidden tests grade it (no bisection)."""
    run = run_task(NB, "mask-predict-test", {"mask-predict-answer": "predicted_weight = 0.9"}, hidden=False)
    assert run.passed, run.output
    assert not run_task(NB, "mask-predict-test", {"mask-predict-answer": "predicted_weight = 0.9"}).passed
