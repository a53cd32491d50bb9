"""Exercise 14's feedback: the reference passes, the blank stub fails, typical wrong answers
fail with their own hint, and other correct answers pass (the learner's-kernel path)."""

import pytest

from tests import exercise_harness as harness
from tests.exercise_harness import run_task

NB = "14_distributed.ipynb"


def fails_with(test_id, answer_id, code, phrase):
    harness.fails_with(NB, test_id, answer_id, code, phrase)


def passes(test_id, answer_id, code):
    harness.passes(NB, test_id, answer_id, code)


TASKS = [("ring-merge-test", "ring-merge-answer", "NotImplementedError"),
         ("ring-step-test", "ring-step-answer", "NotImplementedError"),
         ("ring-bytes-test", "ring-bytes-answer", "NotImplementedError"),
         ("ring-predict-test", "ring-predict-answer", "predicted_busiest_share is None"),
         ("ring-paged-test", "ring-paged-answer", "NotImplementedError")]


@pytest.mark.parametrize(("test_id", "answer_id", "phrase"), TASKS)
def test_reference_passes_and_stub_fails(test_id, answer_id, phrase):
    harness.reference_passes_and_stub_fails(NB, test_id, answer_id, phrase)


# Task 1: merge_partials
MERGE = "def merge_partials(out_a, lse_a, out_b, lse_b):\n{}"
SHIFT = ("    lse = torch.logaddexp(lse_a, lse_b)\n"
         "    shift = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))\n")


@pytest.mark.parametrize(("body", "phrase"), [
    ("    return out_a + out_b, torch.logaddexp(lse_a, lse_b)", "weight it by its share"),
    ("    lse = torch.maximum(lse_a, lse_b)\n"
     "    return torch.exp(lse_a - lse)[..., None] * out_a + torch.exp(lse_b - lse)[..., None] * out_b, lse",
     "not the larger of the two"),
    ("    lse = torch.logaddexp(lse_a, lse_b)\n"
     "    return torch.exp(lse_a - lse) * out_a + torch.exp(lse_b - lse) * out_b, lse", "a trailing axis"),
    ("    ea, eb = torch.exp(lse_a), torch.exp(lse_b)\n"
     "    w_a, w_b = (ea / (ea + eb))[..., None], (eb / (ea + eb))[..., None]\n"
     "    return w_a * out_a + w_b * out_b, torch.log(ea + eb)", "never exponentiate lse itself"),
    ("    lse = torch.logaddexp(lse_a, lse_b)\n"
     "    ea, eb = torch.exp(lse_a - lse_a.max()), torch.exp(lse_b - lse_a.max())\n"
     "    return (ea[..., None] * out_a + eb[..., None] * out_b) / (ea + eb)[..., None], lse",
     "an empty part has weight"),
    ("    lse = torch.logaddexp(lse_a, lse_b)\n"
     "    return torch.exp(lse_a - lse)[..., None] * out_a + torch.exp(lse_b - lse)[..., None] * out_b, lse",
     "shift by 0 there"),
    (SHIFT + "    out_a.mul_(torch.exp(lse_a - shift)[..., None])\n"
     "    return out_a + torch.exp(lse_b - shift)[..., None] * out_b, lse", "in place"),
])
def test_merge_wrong_answers_get_their_hints(body, phrase):
    fails_with("ring-merge-test", "ring-merge-answer", MERGE.format(body), phrase)


def test_merge_alternatives_pass():
    # the larger lse as the reference point, a guard for rows where both are empty
    by_max = ("    m = torch.maximum(lse_a, lse_b)\n"
              "    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))\n"
              "    ea, eb = torch.exp(lse_a - m), torch.exp(lse_b - m)\n"
              "    total = ea + eb\n"
              "    safe = torch.where(total > 0, total, torch.ones_like(total))\n"
              "    out = (ea[..., None] * out_a + eb[..., None] * out_b) / safe[..., None]\n"
              "    return out, m + torch.log(total)")
    passes("ring-merge-test", "ring-merge-answer", MERGE.format(by_max))
    # sigmoid of the difference: the share of part A
    sigmoid = ("    lse = torch.logaddexp(lse_a, lse_b)\n"
               "    d = torch.nan_to_num(lse_a - lse_b, nan=0.0)\n"
               "    w = torch.sigmoid(d)[..., None]\n"
               "    out = w * out_a + (1 - w) * out_b\n"
               "    empty = torch.isinf(lse) & (lse < 0)\n"
               "    return torch.where(empty[..., None], torch.zeros_like(out), out), lse")
    passes("ring-merge-test", "ring-merge-answer", MERGE.format(sigmoid))


# Task 2: ring_step
STEP = "def ring_step(q, k_block, v_block, out, lse, scale, mask=None):\n{}"
SCORES = ("    scores = (q @ k_block.transpose(-1, -2)) * scale\n"
          "    if mask is not None:\n        scores = scores.masked_fill(~mask, -math.inf)\n")
SAFE = ("    lse_block = torch.logsumexp(scores, dim=-1)\n"
        "    shift = torch.where(torch.isfinite(lse_block), lse_block, torch.zeros_like(lse_block))\n"
        "    out_block = torch.exp(scores - shift[..., None]) @ v_block\n")


@pytest.mark.parametrize(("body", "phrase"), [
    (SCORES + SAFE + "    return out_block, lse_block", "instead of returning the block's result alone"),
    (SCORES + "    lse_block = scores.amax(-1)\n"
     "    out_block = torch.softmax(scores, -1).nan_to_num() @ v_block\n"
     "    return merge_partials(out, lse, out_block, lse_block)", "not the largest score"),
    (SCORES + "    lse_block = torch.logsumexp(scores, dim=-1)\n"
     "    return merge_partials(out, lse, torch.exp(scores) @ v_block, lse_block)", "normalise the block's output"),
    ("    scores = q @ k_block.transpose(-1, -2)\n"
     "    if mask is not None:\n        scores = scores.masked_fill(~mask, -math.inf)\n"
     + SAFE + "    return merge_partials(out, lse, out_block, lse_block)", "multiply the scores by the scale"),
    ("    scores = (q @ k_block.transpose(-1, -2)) * scale\n"
     + SAFE + "    return merge_partials(out, lse, out_block, lse_block)", "apply the mask"),
    ("    scores = (q @ k_block.transpose(-1, -2)) * scale\n"
     "    if mask is not None:\n        scores = scores.masked_fill(mask, -math.inf)\n"
     + SAFE + "    return merge_partials(out, lse, out_block, lse_block)", "mask True means"),
    (SCORES + "    lse_block = torch.logsumexp(scores, dim=-1)\n"
     "    out_block = torch.softmax(scores, dim=-1) @ v_block\n"
     "    return merge_partials(out, lse, out_block, lse_block)", "shift by 0 on such rows"),
    ("    scores = (q @ k_block.transpose(-1, -2)) / math.sqrt(q.shape[-1])\n"
     "    if mask is not None:\n        scores = scores.masked_fill(~mask, -math.inf)\n"
     + SAFE + "    return merge_partials(out, lse, out_block, lse_block)", "use the scale argument"),
])
def test_step_wrong_answers_get_their_hints(body, phrase):
    fails_with("ring-step-test", "ring-step-answer", STEP.format(body), phrase)


def test_step_alternatives_pass():
    # a loop over the block's keys with an online softmax, in the state's own terms
    online = ("    s = (q @ k_block.transpose(-1, -2)) * scale\n"
              "    if mask is not None:\n        s = torch.where(mask, s, torch.full_like(s, -math.inf))\n"
              "    new_out, new_lse = out.clone(), lse.clone()\n"
              "    for j in range(s.shape[-1]):\n"
              "        sj = s[..., j]\n"
              "        total = torch.logaddexp(new_lse, sj)\n"
              "        ref = torch.where(torch.isfinite(total), total, torch.zeros_like(total))\n"
              "        new_out = torch.exp(new_lse - ref)[..., None] * new_out"
              " + torch.exp(sj - ref)[..., None] * v_block[..., j:j + 1, :]\n"
              "        new_lse = total\n"
              "    return new_out, new_lse")
    passes("ring-step-test", "ring-step-answer", STEP.format(online))
    # softmax with NaN rows zeroed, then the merge
    nan = (SCORES + "    lse_block = torch.logsumexp(scores, dim=-1)\n"
           "    out_block = torch.nan_to_num(torch.softmax(scores, dim=-1)) @ v_block\n"
           "    return merge_partials(out, lse, out_block, lse_block)")
    passes("ring-step-test", "ring-step-answer", STEP.format(nan))


# Task 3: ring_bytes
BYTES = ("def ring_bytes(B, H, T, D, world_size, itemsize=4):\n"
         "    if T % world_size:\n        raise ValueError(f'T={{T}} and world_size={{world_size}}')\n"
         "    return {}")


@pytest.mark.parametrize(("expr", "phrase"), [
    ("2 * (world_size - 1) * B * H * T / world_size * D * itemsize", "integer arithmetic"),
    ("(world_size - 1) * B * H * (T // world_size) * D * itemsize", "a value block too"),
    ("2 * world_size * B * H * (T // world_size) * D * itemsize", "G - 1 exchanges, not G"),
    ("2 * (world_size - 1) * B * H * T * D * itemsize", "T / G tokens"),
    ("2 * (world_size - 1) * B * H * (T // world_size) * D", "count bytes, not numbers"),
    ("2 * (world_size - 1) ** 2 * B * H * (T // world_size) * D * itemsize", "not one to every other"),
])
def test_bytes_wrong_answers_get_their_hints(expr, phrase):
    fails_with("ring-bytes-test", "ring-bytes-answer", BYTES.format(expr), phrase)


def test_bytes_without_the_check_gets_its_hint():
    code = ("def ring_bytes(B, H, T, D, world_size, itemsize=4):\n"
            "    return 2 * (world_size - 1) * B * H * (T // world_size) * D * itemsize")
    fails_with("ring-bytes-test", "ring-bytes-answer", code, "raise a ValueError naming T and world_size")


def test_bytes_alternatives_pass():
    passes("ring-bytes-test", "ring-bytes-answer",
           BYTES.format("int(2 * (world_size - 1) * B * H * (T // world_size) * D * itemsize)"))
    loop = ("def ring_bytes(B, H, T, D, world_size, itemsize=4):\n"
            "    chunk, rest = divmod(T, world_size)\n"
            "    if rest:\n        raise ValueError(f'T={T} is not divisible by world_size={world_size}')\n"
            "    sent = 0\n"
            "    for _ in range(world_size - 1):\n"
            "        for _block in ('k', 'v'):\n"
            "            sent += B * H * chunk * D * itemsize\n"
            "    return sent")
    passes("ring-bytes-test", "ring-bytes-answer", loop)


# Task 4: predict the busiest process's share
@pytest.mark.parametrize(("value", "phrase"), [
    ("1 / 8", "does not spread the work evenly"),
    ("0.5", "count the blocks of each"),
    ("'0.22'", "write a single number"),
    ("1.5", "between 0 and 1"),
    ("[0.2, 0.3]", "write a single number"),
])
def test_prediction_wrong_answers_get_their_hints(value, phrase):
    fails_with("ring-predict-test", "ring-predict-answer", f"predicted_busiest_share = {value}", phrase)


@pytest.mark.parametrize("value", ["8 / 36", "0.25", "0.18", "np.float64(0.2)", "2 / 9"])
def test_prediction_within_tolerance_passes(value):
    passes("ring-predict-test", "ring-predict-answer", f"import numpy as np\npredicted_busiest_share = {value}")


def test_the_visible_prediction_check_cannot_be_searched():
    """The visible test accepts any well-formed prediction; only the hidden tests grade it."""
    run = run_task(NB, "ring-predict-test", {"ring-predict-answer": "predicted_busiest_share = 0.9"},
                   hidden=False)
    assert run.passed, run.output


# Task 5: debug the paged decode step
PAGED = ("def paged_decode(q, pages_k, pages_v, block_table, length, scale):\n"
         "    H, D = q.shape\n    table = torch.tensor(block_table)\n"
         "    k = {k}\n    v = {v}\n"
         "    probs = torch.softmax({scale} * torch.einsum('hd,hsd->hs', q, k), dim=-1)\n"
         "    return torch.einsum('hs,hsd->hd', probs, v)")


def paged(k="pages_k[table].transpose(0, 1).reshape(H, -1, D)[:, :length]",
          v="pages_v[table].transpose(0, 1).reshape(H, -1, D)[:, :length]", scale="scale"):
    return PAGED.format(k=k, v=v, scale=scale)


@pytest.mark.parametrize(("code", "phrase"), [
    ("def paged_decode(q, pages_k, pages_v, block_table, length, scale):\n"
     "    return paged_decode_buggy(q, pages_k, pages_v, block_table, length, scale)", "the slots past `length`"),
    (paged(k="pages_k[table].transpose(0, 1).reshape(H, -1, D)[:, :length - 1]",
           v="pages_v[table].transpose(0, 1).reshape(H, -1, D)[:, :length - 1]"), "its own included"),
    (paged(k="pages_k[table].reshape(H, -1, D)[:, :length]", v="pages_v[table].reshape(H, -1, D)[:, :length]"),
     "the pages and the heads got mixed"),
    (paged(k="pages_k[:len(block_table)].transpose(0, 1).reshape(H, -1, D)[:, :length]",
           v="pages_v[:len(block_table)].transpose(0, 1).reshape(H, -1, D)[:, :length]"),
     "in the block table's order"),
    (paged(scale="1.0"), "use the scale argument"),
    (paged(k="pages_k[table].reshape(-1, H, D)[:length].transpose(0, 1)",
           v="pages_v[table].reshape(-1, H, D)[:length].transpose(0, 1)"), "positions 0 .. length - 1"),
])
def test_paged_wrong_answers_get_their_hints(code, phrase):
    fails_with("ring-paged-test", "ring-paged-answer", code, phrase)


def test_paged_alternatives_pass():
    # position by position through the block table, then SDPA
    loop = ("def paged_decode(q, pages_k, pages_v, block_table, length, scale):\n"
            "    ks, vs = [], []\n"
            "    for p in range(length):\n"
            "        page, slot = divmod(p, pages_k.shape[2])\n"
            "        ks.append(pages_k[block_table[page], :, slot])\n"
            "        vs.append(pages_v[block_table[page], :, slot])\n"
            "    k, v = torch.stack(ks, 1), torch.stack(vs, 1)\n"
            "    return torch.nn.functional.scaled_dot_product_attention(q[:, None], k, v, scale=scale)[:, 0]")
    passes("ring-paged-test", "ring-paged-answer", loop)
    # page by page, merging the partial results with Task 1's merge
    pages = ("def paged_decode(q, pages_k, pages_v, block_table, length, scale):\n"
             "    H, D = q.shape\n    size = pages_k.shape[2]\n"
             "    out = torch.zeros(H, 1, D, dtype=q.dtype)\n"
             "    lse = torch.full((H, 1), -math.inf, dtype=q.dtype)\n"
             "    for i in range(math.ceil(length / size)):\n"
             "        n = min(size, length - i * size)\n"
             "        k = pages_k[block_table[i], :, :n]\n        v = pages_v[block_table[i], :, :n]\n"
             "        s = scale * q[:, None] @ k.transpose(-1, -2)\n"
             "        out, lse = merge_partials(out, lse, torch.softmax(s, -1) @ v, torch.logsumexp(s, -1))\n"
             "    return out[:, 0]")
    passes("ring-paged-test", "ring-paged-answer", pages)


def test_no_hint_contains_a_line_of_the_solution():
    assert harness.solution_in_hints(NB) == []


def test_no_test_text_contains_solution_code():
    assert harness.solution_in_test_text(NB) == []
