"""Exercise 05's feedback: the reference passes, the blank stub fails, typical wrong answers
fail with their own hint, alternative correct answers pass (tests/exercise_harness.py)."""

import pytest

from attn_course.grading import notebooks as nbf
from tests import exercise_harness as harness
from tests.exercise_harness import SOLUTIONS, run_task, stub

NB = "05_multihead.ipynb"

# task: (test cell, answer cell)
TASKS = {
    "split": ("mha-split-test", "mha-split-answer"),
    "merge": ("mha-merge-test", "mha-merge-answer"),
    "forward": ("mha-forward-test", "mha-forward-answer"),
    "gqa": ("mha-gqa-test", "mha-gqa-answer"),
    "predict": ("mha-predict-test", "mha-predict-answer"),
    "flops": ("mha-flops-test", "mha-flops-answer"),
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
    assert sorted(kinds.values()) == ["build", "build", "build", "debug", "derive", "derive", "explain",
                                      "predict"]


# Task 6 (derive): the flops of one multi-head (grouped-query) layer ----------------------

FLOPS = "def mha_flops(B, T, E, H, H_kv):\n    D = E // H\n    {}\n"
PROJ = "2 * B * T * (2 * E * E + 2 * E * H_kv * D)"  # q, k, v and out, right
ATT = "4 * B * H * T * T * D"  # scores and output, right


@pytest.mark.parametrize(("body", "phrase"), [
    ("return B * T * (2 * E * E + 2 * E * H_kv * D) + 2 * B * H * T * T * D", "2 flops, not 1"),
    (f"return 2 * B * T * (E * E + 2 * E * H_kv * D) + {ATT}", "output projection is missing"),
    (f"return 2 * B * T * (2 * E * E + 2 * E * H * D) + {ATT}", "that is where grouping saves"),
    (f"return {PROJ} + 4 * B * H * T * T * E", "counted H times over"),
    (f"return {PROJ} + 4 * B * H * T * D", "has T twice"),
    (f"return {PROJ} + 2 * B * H * T * T * D", "count both"),
    (f"return {PROJ}", "counts the projections only"),
    ("return 2 * T * (2 * E * E + 2 * E * H_kv * D) + 4 * H * T * T * D", "every sequence of the batch"),
    # two mistakes at once: a multiply-add as 1 flop, and no output projection
    ("return B * T * (E * E + 2 * E * H_kv * D) + 2 * B * H * T * T * D",
     "2 flops, not 1; and the output projection is missing"),
    (f"return {PROJ} + {ATT} + B * T * (2 * E + 2 * H_kv * D)", "the biases"),
    (f"return {PROJ} + {ATT} + 5 * B * H * T * T", "the softmax, a few operations per score"),
    (f"return 2.0 * B * T * (2 * E * E + 2 * E * H_kv * D) + {ATT}", "return an int"),
    ("D = E / H\n    return 2 * B * T * (2 * E * E + 2 * E * H_kv * D) + 4 * B * H * T * T * D",
     "/ gives a float"),
    ("return int(2.0 * B * T * (2 * E * E + 2 * E * H_kv * D) + 4.0 * B * H * T * T * D)",
     "went through a float"),
    ("import numpy as np\n    n = np.prod([2, B, T], dtype=np.int64)\n"
     "    return int(n * (2 * E * E + 2 * E * H_kv * D) + 2 * n * H * T * D)", "overflow above 2^63"),
    ("return None", "return the number of flops, an int"),
])
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the numpy answer's overflow
def test_flops_wrong_answers_get_their_hint(body, phrase):
    out = run("flops", FLOPS.format(body))
    assert not out.passed
    assert phrase in out.output, out.output


def test_flops_torch_flop_counter_is_not_the_exercise():
    out = run("flops", FLOPS.format(
        "from torch.utils.flop_counter import bmm_flop\n"
        "    return bmm_flop((1, B * T, E), (1, E, E)) * 2 + 0 * H_kv"))
    assert not out.passed
    assert "count the flops yourself" in out.output, out.output


@pytest.mark.parametrize("body", [
    f"return {PROJ} + {ATT}",
    # one matrix product at a time: (rows, inner) @ (inner, cols) costs 2 rows inner cols
    "total = 0\n"
    "    for width in (E, H_kv * D, H_kv * D, E):\n"
    "        total += 2 * (B * T) * E * width\n"
    "    for inner, cols in ((D, T), (T, D)):\n"
    "        total += B * H * 2 * T * inner * cols\n"
    "    return total",
    # H D = E: the attention written with E, the count simplified
    "return 4 * B * T * E * (E + H_kv * D) + 4 * B * T * T * E",
    "import math\n    return math.prod((2, B, T, E)) * (2 * E + 2 * H_kv * D) + math.prod((4, B, T, T, E))",
])
def test_flops_alternatives_pass(body):
    out = run("flops", FLOPS.format(body))
    assert out.passed, out.output


def test_flops_self_check_gives_the_general_hint_without_the_hidden_diagnosis():
    out = run("flops", FLOPS.format(f"return {PROJ} + 4 * B * H * T * T * E"), hidden=False)
    assert not out.passed
    assert "count the six matrix products one at a time" in out.output, out.output
    assert "H times over" not in out.output


def _flops_test_cell():
    return next(c for c in nbf.read_notebook(SOLUTIONS / NB).cells
                if nbf.grade_id(c) == "mha-flops-test").source


def _counted(B, T, E, H, H_kv, device="meta", module="gqa"):
    """What PyTorch's FlopCounterMode counts while the course's layer runs on x (B, T, E)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from attn_course.grouped_query import GroupedQueryAttention
    from attn_course.multihead import MultiHeadAttention

    with torch.device(device):
        layer = (GroupedQueryAttention(E, H, num_kv_heads=H_kv) if module == "gqa"
                 else MultiHeadAttention(E, H))
        x = torch.zeros(B, T, E)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        layer(x)
    return counter.get_total_flops()


def test_flops_expected_counts_are_what_flop_counter_mode_counts_in_the_course_layer():
    """Every count the test cell expects equals what FlopCounterMode counts when the course's
    GroupedQueryAttention runs on meta tensors (the huge shapes included, exact Python ints),
    and the formula of the derivation gives them all."""
    import ast

    calls = [node for node in ast.walk(ast.parse(_flops_test_cell()))
             if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "check_count"]
    cases = [(ast.literal_eval(c.args[1]), ast.literal_eval(c.args[2])) for c in calls]
    assert len(cases) >= 10
    for shape, expected in cases:
        B, T, E, H, H_kv = shape
        D = E // H
        assert _counted(*shape) == expected, shape
        assert 2 * B * T * (E * E + 2 * E * H_kv * D + E * E) + 2 * 2 * B * H * T * T * D == expected
    assert {s[4] for s, _ in cases} >= {1}
    assert any(s[3] == s[4] for s, _ in cases)
    assert any(1 < s[4] < s[3] for s, _ in cases)  # grouped
    assert any(float(e) != e for _, e in cases)  # a count that a float cannot hold exactly
    assert max(e for _, e in cases) >= 2**63


@pytest.mark.parametrize("shape", [(2, 5, 12, 6, 2), (1, 7, 8, 4, 4), (3, 4, 12, 3, 1), (2, 3, 10, 1, 1)])
def test_flops_counted_alike_on_meta_and_real_tensors_and_for_multihead(shape):
    """FlopCounterMode counts on meta tensors what it counts on real ones; with H_kv = H the
    course's MultiHeadAttention counts the same as GroupedQueryAttention."""
    B, T, E, H, H_kv = shape
    meta = _counted(*shape)
    assert _counted(*shape, device="cpu") == meta
    if H_kv == H:
        assert _counted(*shape, module="mha") == meta
    D = E // H
    assert meta == 2 * B * T * (2 * E * E + 2 * E * H_kv * D) + 4 * B * H * T * T * D


def test_the_exercise_has_8_tasks():
    """Numbering and points are checked for every exercise in test_grading_exercise_table.py."""
    import re

    from attn_course.grading import notebooks as nbf

    nb = nbf.read_notebook(SOLUTIONS / NB)
    assert sum(bool(re.match(r"## Task \d+: ", c.source)) for c in nb.cells
               if c.cell_type == "markdown") == 8


def test_derive_goals_name_the_skill_not_the_result():
    goals = harness.derive_goals(NB)
    assert len(goals) == 2
    for goal in goals:
        assert not any(ch.isdigit() for ch in goal), goal
        assert not any(s in goal for s in ("independent", "E^2", "E**2", "T^2", "T**2", "costs nothing")), goal


def test_the_flops_task_grade_ids_are_unique_and_the_written_answer_follows_its_task():
    nb = nbf.read_notebook(SOLUTIONS / NB)
    ids = harness.grade_ids(NB)
    assert len(ids) == len(set(ids))
    i = ids.index("mha-flops-written")
    assert ids[i - 1] == "mha-flops-written-task"
    assert (ids.index("mha-predict-measure") < ids.index("mha-flops-test") < ids.index("mha-flops-demo")
            < i < ids.index("mha-explain-answer"))
    demo = next(c for c in nb.cells if nbf.grade_id(c) == "mha-flops-demo")
    assert demo.metadata["attn_course"] == {"demo": True}
    written = next(c for c in nb.cells if nbf.grade_id(c) == "mha-flops-written")
    assert written.metadata["nbgrader"]["points"] == 2
    assert written.metadata["attn_course"]["kind"] == "derive"


def test_no_hint_and_no_text_of_a_test_cell_contains_a_line_of_the_solution():
    from tests import exercise_harness as harness

    assert harness.solution_in_hints(NB) == []
    assert harness.solution_in_test_text(NB) == []
