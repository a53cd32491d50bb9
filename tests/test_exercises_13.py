"""Exercise 13's feedback: the reference passes, the blank stub fails, typical wrong answers
fail with their own hint, and other correct answers pass (the learner's-kernel path)."""

import functools
import tempfile
from pathlib import Path

import nbformat
import pytest

from attn_course.grading import notebooks as nbf
from tests import exercise_harness as harness

NB = "13_recall.ipynb"


@functools.cache
def graded_cells() -> str:
    """The source notebook without its demo cells (the measurements, which load and run every
    shipped model), as the grader runs it: the path of a copy."""
    nb = nbf.read_notebook(harness.SOLUTIONS / NB)
    nb.cells = [c for c in nb.cells if not (c.metadata.get("attn_course") or {}).get("demo")]
    path = Path(tempfile.mkdtemp()) / NB
    nbformat.write(nb, str(path))
    return str(path)


def run_task(test_id, answers=None, hidden=True):
    return harness.run_task(graded_cells(), test_id, answers, hidden=hidden)


def fails_with(test_id, answer_id, code, phrase):
    harness.fails_with(graded_cells(), test_id, answer_id, code, phrase)


def passes(test_id, answer_id, code):
    harness.passes(graded_cells(), test_id, answer_id, code)


TASKS = [("recall-mqar-test", "recall-mqar-answer"), ("recall-predict-test", "recall-predict-answer"),
         ("recall-first-test", "recall-first-answer"), ("recall-far-test", "recall-far-answer"),
         ("recall-conv-test", "recall-conv-answer")]
PREDICTIONS = {"recall-far-answer": "predicted_far_accuracy is None"}


@pytest.mark.parametrize(("test_id", "answer_id"), TASKS)
def test_reference_passes_and_stub_fails(test_id, answer_id):
    assert run_task(test_id).passed
    blank = harness.stub(NB, answer_id)
    if answer_id in PREDICTIONS:  # its stub raises in its own cell; the test runs after it
        blank = blank.replace("raise NotImplementedError()", "")
    blank = run_task(test_id, {answer_id: blank})
    assert not blank.passed
    assert PREDICTIONS.get(answer_id, "NotImplementedError") in blank.output, blank.output


# Task 1: mqar_batch
MQAR = """def mqar_batch(batch_size, n_pairs, seq_len, vocab_size, seed):
    B, P, T, V = batch_size, n_pairs, seq_len, vocab_size
    if T < 4 * P:
        raise ValueError(f"seq_len={{T}} < 4 * n_pairs")
    if V // 2 - 1 < P:
        raise ValueError(f"vocab_size={{V}} has too few keys")
    g = torch.Generator().manual_seed(seed)
    keys = {keys}
    values = torch.randint(V // 2, V, (B, P), generator=g)
    seq = torch.zeros(B, T + 1, dtype=torch.long)
    seq[:, 0:2 * P:2], seq[:, 1:2 * P:2] = keys, values
    slots = (T + 1 - 2 * P) // 2
    where = torch.rand(B, slots, generator=g).argsort(dim=1)[:, :P].sort(dim=1).values
    pos = {pos}
    order = {order}
    seq.scatter_(1, pos, keys.gather(1, order))
    seq.scatter_(1, pos + 1, {asked_values})
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask.scatter_(1, {mask_at}, True)
    return {ret}"""


def mqar(keys="torch.rand(B, V // 2 - 1, generator=g).argsort(dim=1)[:, :P] + 1", pos="2 * P + 2 * where",
         order="torch.rand(B, P, generator=g).argsort(dim=1)", asked_values="values.gather(1, order)",
         mask_at="pos", ret="seq[:, :-1], seq[:, 1:], mask"):
    return MQAR.format(keys=keys, pos=pos, order=order, asked_values=asked_values, mask_at=mask_at, ret=ret)


@pytest.mark.parametrize(("code", "phrase"), [
    (mqar(keys="torch.randint(1, V // 2, (B, P), generator=g)"), "must be distinct"),
    (mqar(keys="torch.rand(B, V // 2 - 1, generator=g).argsort(dim=1)[:, :P]"), "0 is the filler"),
    (mqar(mask_at="pos + 1"), "one position earlier"),
    (mqar(ret="seq[:, :-1], seq[:, :-1], mask"), "targets[:, t] is the token after inputs[:, t]"),
    (mqar(asked_values="values"), "reorder the values with the same permutation"),
    (mqar(pos="2 * P + 1 + 2 * where"), "an asked key sits at position 2P + 2j"),
    (mqar(order="torch.arange(P).expand(B, P)"), "shuffle the order of the questions"),
    (mqar().replace(", generator=g)", ")"), "draw every random number from one torch.Generator"),
    (mqar(ret="seq[:, :-1], seq[:, 1:], mask.long()"), "mask must be torch.bool"),
    (mqar(ret="seq[:, :-1], seq[:, 1:], mask").replace(
        '    if T < 4 * P:\n        raise ValueError(f"seq_len={T} < 4 * n_pairs")\n', ""),
     "raise ValueError naming seq_len"),
    ("from attn_course.recall import mqar_batch as course\n"
     "def mqar_batch(batch_size, n_pairs, seq_len, vocab_size, seed):\n"
     "    return course(batch_size, n_pairs, seq_len, vocab_size, torch.Generator().manual_seed(seed))",
     "not with attn_course.recall"),
])
def test_mqar_wrong_answers_get_their_hints(code, phrase):
    fails_with("recall-mqar-test", "recall-mqar-answer", code, phrase)


def test_mqar_alternatives_pass():
    # row by row with randperm and Python lists
    rows = """def mqar_batch(batch_size, n_pairs, seq_len, vocab_size, seed):
    B, P, T, V = batch_size, n_pairs, seq_len, vocab_size
    if T < 4 * P:
        raise ValueError(f"seq_len={T} is too short for {P} pairs")
    if V // 2 - 1 < P:
        raise ValueError(f"vocab_size={V} has fewer than {P} key tokens")
    g = torch.Generator().manual_seed(seed)
    inputs, targets, masks = [], [], []
    for _ in range(B):
        keys = (torch.randperm(V // 2 - 1, generator=g)[:P] + 1).tolist()
        values = torch.randint(V // 2, V, (P,), generator=g).tolist()
        seq = [0] * (T + 1)
        for i in range(P):
            seq[2 * i], seq[2 * i + 1] = keys[i], values[i]
        slots = sorted(torch.randperm((T + 1 - 2 * P) // 2, generator=g)[:P].tolist())
        order = torch.randperm(P, generator=g).tolist()
        m = [False] * T
        for slot, i in zip(slots, order):
            t = 2 * P + 2 * slot
            seq[t], seq[t + 1] = keys[i], values[i]
            m[t] = True
        inputs.append(seq[:-1])
        targets.append(seq[1:])
        masks.append(m)
    return torch.tensor(inputs), torch.tensor(targets), torch.tensor(masks)"""
    passes("recall-mqar-test", "recall-mqar-answer", rows)
    # the questions placed in a random order of slots, not sorted
    passes("recall-mqar-test", "recall-mqar-answer",
           mqar().replace("[:, :P].sort(dim=1).values", "[:, :P]"))


# Task 2: predict which mixer fails first
@pytest.mark.parametrize(("value", "phrase"), [
    ('"attention"', "the four fixed-state mixers"),
    ('"Linear"', 'spell it exactly as the task does: "linear"'),
    ('"sliding window"', 'spell it exactly as the task does: "sliding_window"'),
    ('["linear"]', "return the name as a string"),
    ("None", "return the name as a string"),
    ('"transformer"', 'return exactly one of "sliding_window", "linear", "conv", "mamba"'),
])
def test_mixer_prediction_wrong_answers_get_their_hints(value, phrase):
    fails_with("recall-predict-test", "recall-predict-answer",
               f"def predicted_first_to_fail():\n    return {value}", phrase)


@pytest.mark.parametrize("name", ["sliding_window", "linear", "conv", "mamba"])
def test_any_fixed_state_mixer_earns_the_point(name):
    passes("recall-predict-test", "recall-predict-answer", f"def predicted_first_to_fail():\n    return {name!r}")


# Task 3: first_to_fail
FIRST = "def first_to_fail(accuracy, threshold=0.5, solved=0.9):\n{}"
LOOP = ("    best = None\n"
        "    for name, by_p in accuracy.items():\n"
        "        ps = {ps}\n"
        "        if {skip}:\n            continue\n"
        "        for p in ps:\n"
        "            if {below}:\n"
        "                if best is None or {better}:\n"
        "                    best = (p, by_p[p], name)\n"
        "                break\n"
        "    return {ret}")


def first(ps="sorted(by_p)", skip="by_p[ps[0]] < solved", below="by_p[p] < threshold",
          better="(p, by_p[p]) < best[:2]", ret="None if best is None else best[2]"):
    return FIRST.format(LOOP.format(ps=ps, skip=skip, below=below, better=better, ret=ret))


@pytest.mark.parametrize(("code", "phrase"), [
    (first(better="p < best[0]"), "a tie in P goes to the mixer with the lower accuracy"),
    (first(skip="False"), "skip a mixer whose accuracy at its smallest P is below solved"),
    (first(ps="list(by_p)"), "sort each mixer's P values"),
    (first(below="by_p[p] <= threshold"), "below means accuracy < threshold"),
    (first(ret="None if best is None else best[0]"), "return the mixer's name"),
    (FIRST.format("    best = None\n"
                  "    for name, by_p in accuracy.items():\n"
                  "        ps = sorted(by_p)\n"
                  "        if by_p[ps[0]] < solved:\n            continue\n"
                  "        after = [p for i, p in enumerate(ps) if all(by_p[r] < threshold for r in ps[i:])]\n"
                  "        if after and (best is None or (after[0], by_p[after[0]]) < best[:2]):\n"
                  "            best = (after[0], by_p[after[0]], name)\n"
                  "    return None if best is None else best[2]"),
     "only the first P below the threshold counts"),
])
def test_first_to_fail_wrong_answers_get_their_hints(code, phrase):
    fails_with("recall-first-test", "recall-first-answer", code, phrase)


def test_first_to_fail_alternatives_pass():
    drops = ("def first_to_fail(accuracy, threshold=0.5, solved=0.9):\n"
             "    found = []\n"
             "    for name, by_p in accuracy.items():\n"
             "        ps = sorted(by_p)\n"
             "        if by_p[ps[0]] >= solved:\n"
             "            low = [p for p in ps if by_p[p] < threshold]\n"
             "            if low:\n"
             "                found.append((low[0], by_p[low[0]], name))\n"
             "    return min(found)[2] if found else None")
    passes("recall-first-test", "recall-first-answer", drops)
    keyed = ("def first_to_fail(accuracy, threshold=0.5, solved=0.9):\n"
             "    def drop(by_p):\n"
             "        ps = sorted(by_p)\n"
             "        return next(((p, by_p[p]) for p in ps if by_p[p] < threshold), None)\n"
             "    learned = {n: drop(a) for n, a in accuracy.items() if a[min(a)] >= solved}\n"
             "    learned = {n: d for n, d in learned.items() if d is not None}\n"
             "    return min(learned, key=learned.get) if learned else None")
    passes("recall-first-test", "recall-first-answer", keyed)


# Task 4: predict linear attention's accuracy on far pairs
@pytest.mark.parametrize(("value", "phrase"), [
    ("0.3", "nothing in S decays"),
    ("0.5", "nothing in S decays"),
    ("0.97", "distance neither helps nor hurts"),
    ("'0.7'", "write a single number"),
    ("74", "0.5, not 50"),
    ("[0.7, 0.8]", "write a single number"),
])
def test_far_prediction_wrong_answers_get_their_hints(value, phrase):
    fails_with("recall-far-test", "recall-far-answer", f"predicted_far_accuracy = {value}", phrase)


@pytest.mark.parametrize("value", ["0.74", "0.7", "0.65", "np.float32(0.8)", "3 / 4"])
def test_far_prediction_within_tolerance_passes(value):
    passes("recall-far-test", "recall-far-answer", f"import numpy as np\npredicted_far_accuracy = {value}")


def test_the_visible_prediction_check_cannot_be_searched():
    """The visible test accepts any well-formed prediction; only the hidden tests grade it."""
    run = run_task("recall-far-test", {"recall-far-answer": "predicted_far_accuracy = 0.1"}, hidden=False)
    assert run.passed, run.output


# Task 5: debug the short convolution
CONV = ("def short_conv(x, weight, bias):\n"
        "    E, k = x.shape[-1], weight.shape[-1]\n{}")


def padded(left, right, w="weight", b="bias"):
    return CONV.format(f"    y = F.conv1d(F.pad(x.transpose(1, 2), ({left}, {right})), {w}, {b}, groups=E)\n"
                       "    return y.transpose(1, 2)")


@pytest.mark.parametrize(("code", "phrase"), [
    ("def short_conv(x, weight, bias):\n    return short_conv_buggy(x, weight, bias)", "padding='same' puts"),
    (padded("0", "k - 1"), "reads 3 inputs after t"),
    (padded("k - 2", "1"), "reads 1 input after t"),
    (padded("k - 1", "0", w="weight.flip(-1)"), "the kernel is reversed"),
    (padded("k", "-1"), "must read input t itself"),
    (padded("k - 1", "0", b="None"), "add the bias"),
    (CONV.format("    return F.conv1d(F.pad(x.transpose(1, 2), (k - 1, 0)), weight, bias, groups=E)"),
     "keeps the input's shape (B, T, E)"),
    (CONV.format("    y = F.conv1d(x.transpose(1, 2), weight, bias, padding=k - 1, groups=E)\n"
                 "    return y.transpose(1, 2)"), "keeps the input's shape (B, T, E)"),
    ("from attn_course.recall import ShortConv\n"
     "def short_conv(x, weight, bias):\n"
     "    conv = ShortConv(x.shape[-1], weight.shape[-1])\n"
     "    conv.conv.weight.data, conv.conv.bias.data = weight, bias\n"
     "    with torch.no_grad():\n        return conv(x)", "not with attn_course.recall"),
])
def test_conv_wrong_answers_get_their_hints(code, phrase):
    fails_with("recall-conv-test", "recall-conv-answer", code, phrase)


def test_conv_alternatives_pass():
    # padded on both sides, the first T outputs kept (as the course's ShortConv does)
    both = CONV.format("    T = x.shape[1]\n"
                       "    y = F.conv1d(x.transpose(1, 2), weight, bias, padding=k - 1, groups=E)\n"
                       "    return y[..., :T].transpose(1, 2)")
    passes("recall-conv-test", "recall-conv-answer", both)
    # a sum of shifted copies, no convolution at all
    shifts = CONV.format("    T = x.shape[1]\n"
                         "    out = bias.expand_as(x).clone()\n"
                         "    for j in range(k):\n"
                         "        lag = k - 1 - j\n"
                         "        if lag < T:\n"
                         "            out[:, lag:] += weight[:, 0, j] * x[:, :T - lag]\n"
                         "    return out")
    passes("recall-conv-test", "recall-conv-answer", shifts)


def test_no_hint_contains_a_line_of_the_solution():
    assert harness.solution_in_hints(NB) == []


def test_no_test_text_contains_solution_code():
    assert harness.solution_in_test_text(NB) == []


def test_the_explain_task_is_graded_by_hand():
    nb = nbf.read_notebook(harness.SOLUTIONS / NB)
    cell = next(c for c in nb.cells if nbf.grade_id(c) == "recall-explain")
    assert cell.cell_type == "markdown"
    assert nbf.is_manual(cell)
    assert cell.metadata["nbgrader"]["points"] == 2
