"""Exercise 05's feedback: the reference passes, the blank stub fails, typical wrong answers
fail with their own hint, alternative correct answers pass (tests/exercise_harness.py)."""

import pytest

from attn_course.grading import notebooks as nbf
from tests.exercise_harness import SOLUTIONS, run_task, stub

NB = "05_multihead.ipynb"

# task: (test cell, answer cell)
TASKS = {
    "split": ("mha-split-test", "mha-split-answer"),
    "merge": ("mha-merge-test", "mha-merge-answer"),
    "forward": ("mha-forward-test", "mha-forward-answer"),
    "gqa": ("mha-gqa-test", "mha-gqa-answer"),
    "predict": ("mha-predict-test", "mha-predict-answer"),
}


def run(task, answer=None, hidden=True):
    test_id, answer_id = TASKS[task]
    return run_task(NB, test_id, None if answer is None else {answer_id: answer}, hidden=hidden)


@pytest.mark.parametrize("task", TASKS)
def test_reference_passes_and_stub_fails(task):
    assert run(task).passed, run(task).output
    blank = stub(NB, TASKS[task][1])
    if task == "predict":  # the stub raises, so the prediction is never set
        assert "raise NotImplementedError()" in blank
        blank = "pass"
    out = run(task, blank)
    assert not out.passed
    assert "NotImplementedError" in out.output or "NameError" in out.output


SPLIT = "def split_heads(x, num_heads):\n    B, T, E = x.shape\n    D = E // num_heads\n"


@pytest.mark.parametrize(("body", "phrase"), [
    ("    return x.reshape(B, num_heads, T, D)", "mixes positions"),  # the bug shown
    ("    return x.reshape(B, T, D, num_heads).permute(0, 3, 1, 2)", "every H-th feature"),
    ("    return x.transpose(1, 2).reshape(B, num_heads, T, D)", "swapped before the reshape"),
    ("    return x.reshape(B, T, num_heads, 2).transpose(1, 2)", "take B, T and E from x.shape"),
])
def test_split_wrong_answers_get_their_hint(body, phrase):
    out = run("split", SPLIT + body)
    assert not out.passed
    assert phrase in out.output, out.output


@pytest.mark.parametrize("body", [
    "    return x.view(B, T, num_heads, D).permute(0, 2, 1, 3)",
    "    return x.unflatten(-1, (num_heads, D)).transpose(1, 2)",
    "    import torch\n    return torch.stack([x[..., h * D:(h + 1) * D] for h in range(num_heads)], dim=1)",
])
def test_split_alternatives_pass(body):
    out = run("split", SPLIT + body)
    assert out.passed, out.output


MERGE = "def merge_heads(x):\n    B, H, T, D = x.shape\n"


@pytest.mark.parametrize(("body", "phrase", "hidden"), [
    ("    return x.reshape(B, T, H * D)", "reorder the axes to (B, T, H, D)", True),
    ("    return x.transpose(1, 2).view(B, T, H * D)", "view", True),  # not contiguous
    ("    return x.transpose(2, 3).reshape(B, T, H * D)", "reorder the axes", True),
])
def test_merge_wrong_answers_get_their_hint(body, phrase, hidden):
    out = run("merge", MERGE + body, hidden=hidden)
    assert not out.passed
    assert phrase in out.output, out.output


def test_merge_alternative_passes():
    out = run("merge", MERGE + "    return x.permute(0, 2, 1, 3).flatten(2)")
    assert out.passed, out.output


FORWARD = '''def multihead_forward(mha, query, key, value):
    E, H = mha.embed_dim, mha.num_heads
    w_q, w_k, w_v = mha.in_proj_weight.split(E, dim=0)
    b_q, b_k, b_v = mha.in_proj_bias.split(E)
    q = split_heads(query @ w_q.T + b_q, H)
    k = split_heads(KEY @ w_k.T + b_k, H)
    v = split_heads(VALUE @ w_v.T + b_v, H)
    out = merge_heads(F.scaled_dot_product_attention(q, k, v, CAUSAL))
    return out @ mha.out_proj.weight.T + mha.out_proj.bias
'''


def forward(key="key", value="value", causal="is_causal=False"):
    return FORWARD.replace("KEY", key).replace("VALUE", value).replace("CAUSAL", causal)


@pytest.mark.parametrize(("answer", "phrase"), [
    (forward(key="query", value="query"), "keys and values are computed from `query`"),
    (forward(causal="is_causal=True"), "your output is causal"),
    (forward().replace(" + mha.out_proj.bias", ""), "out_proj.bias is missing"),
])
def test_forward_wrong_answers_get_their_hint(answer, phrase):
    out = run("forward", answer)
    assert not out.passed
    assert phrase in out.output, out.output


def test_forward_names_a_wrong_split_from_task_1():
    broken = {"mha-split-answer": "def split_heads(x, num_heads):\n    B, T, E = x.shape\n"
              "    return x.reshape(B, num_heads, T, E // num_heads)"}
    out = run_task(NB, "mha-forward-test", broken)
    assert not out.passed
    assert "fix Task 1 first" in out.output, out.output


GQA = '''import torch
import torch.nn.functional as F


def grouped_attention(q, k, v):
    G = q.shape[1] // k.shape[1]
    BODY
'''


def gqa(body):
    return GQA.replace("BODY", body)


@pytest.mark.parametrize(("answer", "phrase"), [
    (gqa("return F.scaled_dot_product_attention(q, k.repeat(1, G, 1, 1), v.repeat(1, G, 1, 1))"),
     "h % H_kv"),
    (gqa("return F.scaled_dot_product_attention(q, k.repeat_interleave(G, 1), "
         "v.repeat_interleave(G, 1), scale=1.0)"), "not divided by sqrt(D)"),
    (gqa("k, v = k.repeat_interleave(G, 1), v.repeat_interleave(G, 1)\n"
         "    s = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5\n    return s.softmax(-2) @ v"),
     "softmax runs over the queries"),
    (gqa("return F.scaled_dot_product_attention(q, k.repeat_interleave(k.shape[1], 1), "
         "v.repeat_interleave(k.shape[1], 1))"), "each must serve G = H // H_kv"),
])
def test_gqa_wrong_answers_get_their_hint(answer, phrase):
    out = run("gqa", answer)
    assert not out.passed
    assert phrase in out.output, out.output


def test_gqa_the_tiled_order_passes_only_where_it_cannot_be_told_apart():
    tiled = gqa("return F.scaled_dot_product_attention(q, k.repeat(1, G, 1, 1), v.repeat(1, G, 1, 1))")
    assert not run("gqa", tiled, hidden=False).passed  # H=4, H_kv=2: the order matters


@pytest.mark.parametrize("body", [
    "return F.scaled_dot_product_attention(q, k.repeat_interleave(G, 1), v.repeat_interleave(G, 1))",
    "return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)",
    # a loop over the query heads, in float32
    "out = []\n    for h in range(q.shape[1]):\n"
    "        s = q[:, h].float() @ k[:, h // G].float().transpose(-1, -2) / q.shape[-1] ** 0.5\n"
    "        out.append(s.softmax(-1) @ v[:, h // G].float())\n    return torch.stack(out, 1)",
])
def test_gqa_alternatives_pass(body):
    out = run("gqa", gqa(body))
    assert out.passed, out.output


@pytest.mark.parametrize(("param", "cache", "phrase"), [
    (0.25, 0.25, "only the ratio of the key/value projections"),
    (1.0, 0.25, "only the key and value projections change"),
    (0.625, 1.0, "the queries are not cached"),
    (0.625, "'a quarter'", "predicted_cache_ratio is a number"),
])
def test_predictions_out_of_tolerance_get_their_hint(param, cache, phrase):
    answer = f"predicted_param_ratio = {param}\npredicted_cache_ratio = {cache}"
    out = run("predict", answer)
    assert not out.passed
    assert phrase.replace("only the ratio", "the ratio") in out.output, out.output


def test_predictions_within_the_tolerance_pass():
    assert run("predict", "predicted_param_ratio = 0.63\npredicted_cache_ratio = 1 / 4").passed
    assert not run("predict", "predicted_param_ratio = 0.66\npredicted_cache_ratio = 0.25").passed


def test_every_task_is_tagged_and_the_written_answer_is_graded_by_hand():
    nb = nbf.read_notebook(SOLUTIONS / NB)
    kinds = {}
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade"):
            tag = cell.metadata["attn_course"]
            assert tag["kind"] in {"build", "predict", "debug", "derive", "explain"}
            assert tag["goal"]
            kinds[meta["grade_id"]] = tag["kind"]
        if cell.cell_type == "markdown" and meta.get("grade"):
            assert meta["solution"]
            assert not meta["locked"]
            assert meta["points"] > 0
            assert nb.cells[i - 1].source.startswith("## Task ")
    assert sorted(kinds.values()) == ["build", "build", "build", "debug", "explain", "predict"]
