"""Exercise 07's feedback: the reference passes, the blank stub fails, typical wrong answers
fail with their own hint, alternative correct answers pass (tests/exercise_harness.py)."""

import pytest

from attn_course.grading import notebooks as nbf
from tests.exercise_harness import SOLUTIONS, run_task, stub

NB = "07_transformer.ipynb"

TASKS = {
    "block": ("tfm-block-test", "tfm-block-answer"),
    "step": ("tfm-step-test", "tfm-step-answer"),
    "generate": ("tfm-generate-test", "tfm-generate-answer"),
    "cached": ("tfm-cached-test", "tfm-cached-answer"),
    "lr": ("tfm-lr-test", "tfm-lr-answer"),
    "train": ("tfm-train-test", "tfm-train-answer"),
    "predict": ("tfm-predict-test", "tfm-predict-answer"),
    "sample": ("tfm-sample-test", "tfm-sample-answer"),
    "grad": ("tfm-grad-test", "tfm-grad-answer"),
}


def run(task, answer=None, hidden=True):
    test_id, answer_id = TASKS[task]
    return run_task(NB, test_id, None if answer is None else {answer_id: answer}, hidden=hidden)


@pytest.mark.parametrize("task", TASKS)
def test_reference_passes_and_stub_fails(task):
    ref = run(task)
    assert ref.passed, ref.output
    blank = stub(NB, TASKS[task][1])
    if task == "predict":  # the stub raises, so the prediction is never set
        assert "raise NotImplementedError()" in blank
        blank = "pass"
    out = run(task, blank)
    assert not out.passed
    assert "NotImplementedError" in out.output or "NameError" in out.output


CACHED = '''def cached_attention(q, k, v):
    T, S = q.shape[-2], k.shape[-2]
    BODY
'''


@pytest.mark.parametrize(("body", "phrase"), [
    ("return F.scaled_dot_product_attention(q, k, v, is_causal=True)", "aligned to the top-left"),
    ("return F.scaled_dot_product_attention(q, k, v)", "sees the new tokens after it"),
    ("m = torch.ones(T, S, dtype=torch.bool).tril(S - T - 1)\n"
     "    return F.scaled_dot_product_attention(q, k, v, attn_mask=m)", "misses its own key"),
])
def test_cached_wrong_answers_get_their_hint(body, phrase):
    out = run("cached", CACHED.replace("BODY", body))
    assert not out.passed
    assert phrase in out.output, out.output


@pytest.mark.parametrize("body", [
    # an additive float mask, in float32
    "m = torch.zeros(T, S).masked_fill(torch.ones(T, S, dtype=torch.bool).triu(S - T + 1), float('-inf'))\n"
    "    return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=m)",
    # one query at a time, by hand
    "rows = []\n    for i in range(T):\n        n = S - T + i + 1\n"
    "        s = q[..., i:i + 1, :] @ k[..., :n, :].transpose(-1, -2) / math.sqrt(q.shape[-1])\n"
    "        rows.append(s.softmax(-1) @ v[..., :n, :])\n    return torch.cat(rows, dim=-2)",
])
def test_cached_alternatives_pass(body):
    out = run("cached", CACHED.replace("BODY", body))
    assert out.passed, out.output


@pytest.mark.parametrize(("answer", "phrase"), [
    ("def lr_at(step, base_lr, warmup, total, min_lr=0.0):\n    if step < warmup:\n"
     "        return base_lr * step / warmup\n    if step >= total:\n        return min_lr\n"
     "    p = (step - warmup) / (total - warmup)\n"
     "    return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * p)) / 2", "the warm-up starts at 0"),
    ("def lr_at(step, base_lr, warmup, total, min_lr=0.0):\n    if step < warmup:\n"
     "        return base_lr * (step + 1) / warmup\n    if step >= total:\n        return min_lr\n"
     "    return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * step / total)) / 2",
     "the cosine runs over all `total` steps"),
    ("def lr_at(step, base_lr, warmup, total, min_lr=0.0):\n    if step < warmup:\n"
     "        return base_lr * (step + 1) / warmup\n    if step >= total:\n        return 0.0\n"
     "    p = (step - warmup) / (total - warmup)\n    return base_lr * (1 + math.cos(math.pi * p)) / 2",
     "the decay ends at 0"),
    ("def lr_at(step, base_lr, warmup, total, min_lr=0.0):\n    if step < warmup:\n"
     "        return base_lr * (step + 1) / warmup\n    p = (step - warmup) / (total - warmup)\n"
     "    return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * p)) / 2", "past `total`"),
])
def test_lr_wrong_answers_get_their_hint(answer, phrase):
    out = run("lr", answer)
    assert not out.passed
    assert phrase in out.output, out.output


def test_lr_alternatives_pass():
    numpy32 = ("import numpy as np\n\ndef lr_at(step, base_lr, warmup, total, min_lr=0.0):\n"
               "    warm = base_lr * min(1.0, (step + 1) / warmup) if warmup else base_lr\n"
               "    p = np.clip((step - warmup) / (total - warmup), 0, 1)\n"
               "    cos = min_lr + (base_lr - min_lr) * 0.5 * (1 + np.cos(np.pi * p))\n"
               "    return float(np.float32(warm if step < warmup else cos))")
    out = run("lr", numpy32)
    assert out.passed, out.output


TRAIN = '''def train_step(model, optimizer, inputs, targets, mask, lr):
    TRAIN_MODE
    for group in optimizer.param_groups:
        SET_LR
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=AUTOCAST):
        logits = model(inputs)
    LOSS
    ZERO
    loss.backward()
    optimizer.step()
    return RETURN


def evaluate(model, inputs, targets, mask):
    EVAL_MODE
    with torch.no_grad(NO_GRAD):
        logits = model(inputs)
    return F.cross_entropy(logits[mask], targets[mask]).item()
'''
DEFAULTS = {"TRAIN_MODE": "model.train()", "SET_LR": 'group["lr"] = lr', "AUTOCAST": "True",
            "LOSS": "loss = F.cross_entropy(logits[mask].float(), targets[mask])",
            "ZERO": "optimizer.zero_grad()", "RETURN": "loss.item()", "EVAL_MODE": "model.eval()",
            "NO_GRAD": ""}


def train(**changes):
    src = TRAIN.replace("torch.no_grad(NO_GRAD)", "torch.no_grad()" if "NO_GRAD" not in changes
                        else "torch.enable_grad()")
    for key, value in {**DEFAULTS, **changes}.items():
        src = src.replace(key, value)
    return src


@pytest.mark.parametrize(("changes", "phrase", "hidden"), [
    ({"LOSS": "loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())"},
     "masked-out targets contribute nothing", False),
    ({"LOSS": "loss = (F.cross_entropy(logits.float().transpose(1, 2), targets, reduction='none')"
              " * mask).mean()"}, "not by B * T", False),
    ({"ZERO": "pass"}, "clear the gradients before backward", True),
    ({"AUTOCAST": "False"}, "autocast", False),
    ({"TRAIN_MODE": "pass"}, "switch it to training mode", False),
    ({"SET_LR": "pass"}, "set the rate of each of optimizer.param_groups", False),
    ({"RETURN": "loss"}, "return loss.item()", False),
    ({"EVAL_MODE": "pass"}, "switch the model to evaluation mode", True),
    ({"NO_GRAD": "x"}, "torch.no_grad()", True),
])
def test_train_wrong_answers_get_their_hint(changes, phrase, hidden):
    out = run("train", train(**changes), hidden=hidden)
    assert not out.passed
    assert phrase in out.output, out.output


def test_train_alternatives_pass():
    summed = train(LOSS="per = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction='none')\n"
                        "    loss = (per * mask).sum() / mask.sum()",
                   ZERO="model.zero_grad(set_to_none=False)")
    out = run("train", summed)
    assert out.passed, out.output
    no_cast_back = train(LOSS="loss = F.cross_entropy(logits[mask], targets[mask])")
    out = run("train", no_cast_back)
    assert out.passed, out.output


@pytest.mark.parametrize(("value", "phrase"), [
    ("math.log10(11)", "base-10"),
    ("5.0", "when all V tokens are equally likely"),
    ("0.1", "not nearly right"),
    ("'about two'", "predicted_initial_loss is a number"),
])
def test_prediction_out_of_tolerance_gets_its_hint(value, phrase):
    out = run("predict", f"predicted_initial_loss = {value}")
    assert not out.passed
    assert phrase in out.output, out.output


def test_prediction_within_the_tolerance_passes():
    assert run("predict", "predicted_initial_loss = 2.5").passed
    assert not run("predict", "predicted_initial_loss = 2.7").passed


SAMPLE = '''def sampling_distribution(logits, temperature=1.0, top_k=None, top_p=None):
    x = logits.float()
    V = x.shape[-1]
    if temperature == 0:
        return F.one_hot(x.argmax(dim=-1), V).float()
    TEMPERATURE
    if top_k is not None and top_k < V:
        TOP_K
    probs = x.softmax(dim=-1)
    if top_p is not None and top_p < 1:
        sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
        KEEP
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        probs = probs * keep
    return probs / probs.sum(dim=-1, keepdim=True)
'''
SAMPLE_PARTS = {"TEMPERATURE": "x = x / temperature",
                "TOP_K": "kth = x.topk(top_k, dim=-1).values[..., -1:]\n"
                         "        x = x.masked_fill(x < kth, float('-inf'))",
                "KEEP": "keep_sorted = sorted_p.cumsum(dim=-1) - sorted_p < top_p"}


def sampling(**changes):
    src = SAMPLE
    for key, value in {**SAMPLE_PARTS, **changes}.items():
        src = src.replace(key, value)
    return src


@pytest.mark.parametrize(("changes", "phrase"), [
    ({"KEEP": "keep_sorted = sorted_p.cumsum(dim=-1) <= top_p"}, "dropped the token that crosses top_p"),
    ({"TEMPERATURE": "pass"}, "the temperature is missing"),
    ({"TEMPERATURE": "x = x * temperature"}, "multiplied by the temperature"),
    ({"TOP_K": "idx = x.topk(top_k, dim=-1).indices\n"
               "        x = x.masked_fill(~torch.zeros_like(x, dtype=torch.bool).scatter(-1, idx, True), float('-inf'))"},
     "tied with the top_k-th"),
])
def test_sampling_wrong_answers_get_their_hint(changes, phrase):
    out = run("sample", sampling(**changes))
    assert not out.passed
    assert phrase in out.output, out.output


def test_sampling_top_p_before_the_temperature_gets_its_hint():
    answer = sampling(KEEP="sorted_p, order = (x * temperature).softmax(dim=-1).sort(dim=-1, descending=True, "
                           "stable=True)\n        keep_sorted = sorted_p.cumsum(dim=-1) - sorted_p < top_p")
    out = run("sample", answer)
    assert not out.passed
    assert "top-p ran before the temperature" in out.output, out.output


def test_sampling_alternatives_pass():
    # top-p with a loop over rows and over the sorted tokens, in float64
    loop = sampling(KEEP="keep_sorted = torch.zeros_like(sorted_p, dtype=torch.bool)\n"
                         "        flat, kflat = sorted_p.reshape(-1, V), keep_sorted.view(-1, V)\n"
                         "        for r in range(flat.shape[0]):\n"
                         "            total = 0.0\n"
                         "            for j in range(V):\n"
                         "                if total >= top_p:\n"
                         "                    break\n"
                         "                kflat[r, j] = True\n"
                         "                total += float(flat[r, j])").replace("x = logits.float()", "x = logits.double()")
    out = run("sample", loop)
    assert out.passed, out.output


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
    assert sorted(kinds) == ["build", "build", "build", "build", "build", "build", "debug", "derive",
                            "derive", "explain", "predict"]


# Task 9 (derive): the gradient of the masked mean cross-entropy with respect to the logits

GRAD = '''def cross_entropy_grad(logits, targets, mask):
    PROBS
    onehot = F.one_hot(targets, logits.shape[-1]).to(logits.dtype)
    counted = MASK
    return SIGN(probs - ONEHOT) * counted / COUNT
'''
GRAD_PARTS = {"PROBS": "probs = logits.softmax(dim=-1)", "MASK": "mask.unsqueeze(-1).to(logits.dtype)",
              "SIGN": "", "ONEHOT": "onehot", "COUNT": "mask.sum()"}


def grad_answer(**changes):
    src = GRAD
    for key, value in {**GRAD_PARTS, **changes}.items():
        src = src.replace(key, value)
    return src


@pytest.mark.parametrize(("changes", "phrase", "hidden"), [
    ({"COUNT": "1"}, "times too large: the loss is the mean over the N", False),
    ({"COUNT": "mask.numel()"}, "not by all B * T", False),
    ({"ONEHOT": "0"}, "the term from minus the target's own logit is missing", False),
    ({"SIGN": "-"}, "the sign is flipped", False),
    ({"MASK": "1"}, "positions where mask is False are not zero", False),
    ({"PROBS": "probs = logits.exp() / logits.exp().sum(dim=-1, keepdim=True)"},
     "subtract each row's largest logit", True),
])
def test_grad_wrong_answers_get_their_hint(changes, phrase, hidden):
    out = run("grad", grad_answer(**changes), hidden=hidden)
    assert not out.passed
    assert phrase in out.output, out.output


def test_grad_naive_exponential_passes_the_visible_tests_only():
    naive = grad_answer(PROBS="probs = logits.exp() / logits.exp().sum(dim=-1, keepdim=True)")
    assert run("grad", naive, hidden=False).passed


@pytest.mark.parametrize("answer", [
    # log_softmax, then exp; a float mask and its count as a float
    grad_answer(PROBS="probs = torch.log_softmax(logits, dim=-1).exp()", MASK="mask[..., None].float()",
                COUNT="mask.float().sum()"),
    # float64 inside, cast back at the end
    "def cross_entropy_grad(logits, targets, mask):\n"
    "    z = logits.double()\n"
    "    z = z - z.max(dim=-1, keepdim=True).values\n"
    "    p = z.exp() / z.exp().sum(-1, keepdim=True)\n"
    "    p[torch.arange(p.shape[-1]) == targets[..., None]] -= 1\n"
    "    return (p * mask[..., None] / mask.sum()).to(logits.dtype)\n",
    # a loop over the counted positions, with a log-sum-exp per position
    "def cross_entropy_grad(logits, targets, mask):\n"
    "    out = torch.zeros_like(logits)\n"
    "    n = int(mask.sum())\n"
    "    B, T, V = logits.shape\n"
    "    for b in range(B):\n"
    "        for t in range(T):\n"
    "            if mask[b, t]:\n"
    "                z = logits[b, t]\n"
    "                p = torch.exp(z - torch.logsumexp(z, dim=0))\n"
    "                p[targets[b, t]] -= 1\n"
    "                out[b, t] = p / n\n"
    "    return out\n",
])
def test_grad_alternatives_pass(answer):
    out = run("grad", answer)
    assert out.passed, out.output


@pytest.mark.parametrize("body", [
    "z = logits.detach().clone().requires_grad_(True)\n"
    "    F.cross_entropy(z[mask], targets[mask]).backward()\n    return z.grad",
    "z = logits.detach().clone().requires_grad_(True)\n"
    "    return torch.autograd.grad(F.cross_entropy(z[mask], targets[mask]), z)[0]",
    "from torch.func import grad\n"
    "    return grad(lambda z: F.cross_entropy(z[mask], targets[mask]))(logits)",
])
def test_grad_autograd_is_not_the_exercise(body):
    out = run("grad", f"def cross_entropy_grad(logits, targets, mask):\n    {body}\n")
    assert not out.passed
    assert "without autograd" in out.output, out.output


def test_grad_hints_and_test_text_hold_no_solution_code():
    from tests import exercise_harness as harness

    cell = next(c for c in nbf.read_notebook(SOLUTIONS / NB).cells if nbf.grade_id(c) == "tfm-grad-test")
    mine = harness.hint_texts(cell.source)
    assert len(mine) >= 10
    assert [h for h, _ in harness.solution_in_hints(NB) if h in mine] == []
    texts = harness.string_literals(cell.source)
    assert [t for t, _ in harness.solution_in_test_text(NB) if t in texts] == []


def test_derive_tasks_are_numbered_in_order_and_their_goals_hide_the_result():
    nb = nbf.read_notebook(SOLUTIONS / NB)
    headings = [c.source.split(":")[0] for c in nb.cells
                if c.cell_type == "markdown" and c.source.startswith("## Task ")]
    assert headings == [f"## Task {n}" for n in range(1, len(headings) + 1)]
    titles = [c.source.splitlines()[0] for c in nb.cells if nbf.is_test(c) and c.cell_type == "code"]
    assert [t.split(":")[0] for t in titles] == [f"# Tests for Task {n}" for n in range(1, 10)]
    goals = [c.metadata["attn_course"]["goal"] for c in nb.cells
             if c.metadata.get("attn_course", {}).get("kind") == "derive"]
    assert len(goals) == 2
    for goal in goals:
        assert [word for word in ("onehot", "one-hot", "softmax", "/ N") if word in goal] == []
