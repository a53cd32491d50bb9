"""Exercise 10's feedback: the reference passes, the blank stub fails, typical wrong answers
fail with their own hint, and other correct answers pass (the learner's-kernel path)."""

import pytest

from tests import exercise_harness as harness
from tests.exercise_harness import run_task, stub

NB = "10_efficient_attention.ipynb"


def fails_with(test_id, answer_id, code, phrase):
    harness.fails_with(NB, test_id, answer_id, code, phrase)


def passes(test_id, answer_id, code):
    harness.passes(NB, test_id, answer_id, code)


TASKS = [("eff-linear-test", "eff-linear-answer"), ("eff-recurrent-test", "eff-recurrent-answer"),
         ("eff-window-test", "eff-window-answer"), ("eff-performer-test", "eff-performer-answer"),
         ("eff-debug-test", "eff-debug-answer"), ("eff-derive-test", "eff-derive-answer"),
         ("eff-predict-test", "eff-predict-answer")]


@pytest.mark.parametrize(("test_id", "answer_id"), TASKS)
def test_reference_passes_and_stub_fails(test_id, answer_id):
    assert run_task(NB, test_id).passed
    blank = stub(NB, answer_id)
    if answer_id == "eff-predict-answer":  # its stub raises in its own cell; the test runs after it
        blank = blank.replace("raise NotImplementedError()", "")
    blank = run_task(NB, test_id, {answer_id: blank})
    assert not blank.passed
    expected = "predicted_error is None" if answer_id == "eff-predict-answer" else "NotImplementedError"
    assert expected in blank.output, blank.output


# Task 1: linear_attention_parallel
PAR = "def linear_attention_parallel(q, k, v):\n    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1\n{}"


@pytest.mark.parametrize(("body", "phrase"), [
    ("    w = phi_q @ phi_k.transpose(-1, -2)\n    return (w @ v) / w.sum(-1, keepdim=True)",
     "the (T, S) matrix this task avoids"),
    ("    return (phi_q @ (phi_k.transpose(-1, -2) @ v))", "divided by their sum"),
    ("    q2, k2 = torch.relu(q), torch.relu(k)\n    kv = k2.transpose(-1, -2) @ v\n"
     "    return (q2 @ kv) / (q2 @ k2.sum(-2).unsqueeze(-1))", "elu + 1"),
    ("    kv = phi_k.T @ v\n    return (phi_q @ kv) / (phi_q @ phi_k.sum(0)[:, None])",
     "leading (batch, head) axes must pass through"),
])
def test_parallel_wrong_answers_get_their_hints(body, phrase):
    fails_with("eff-linear-test", "eff-linear-answer", PAR.format(body), phrase)


def test_parallel_alternatives_pass():
    einsum = ("    kv = torch.einsum('...sr,...sd->...rd', phi_k, v)\n"
              "    z = phi_k.sum(-2)\n"
              "    return torch.einsum('...tr,...rd->...td', phi_q, kv) / torch.einsum('...tr,...r->...t', phi_q, z)[..., None]")
    passes("eff-linear-test", "eff-linear-answer", PAR.format(einsum))
    f32 = ("    pq, pk, vv = phi_q.float(), phi_k.float(), v.float()\n"
           "    return ((pq @ (pk.transpose(-1, -2) @ vv)) / (pq @ pk.sum(-2, keepdim=True).transpose(-1, -2))).double()")
    passes("eff-linear-test", "eff-linear-answer", PAR.format(f32))


# Task 2: linear_attention_recurrent
REC = ("def linear_attention_recurrent(q, k, v):\n    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1\n"
       "    S = q.new_zeros(*q.shape[:-2], phi_k.shape[-1], v.shape[-1])\n"
       "    z = q.new_zeros(*q.shape[:-2], phi_k.shape[-1])\n    outs = []\n"
       "    for t in range(q.shape[-2]):\n{}\n    return torch.stack(outs, dim=-2)")
READ = ("        num = (phi_q[..., t, None, :] @ S).squeeze(-2)\n"
        "        outs.append(num / (phi_q[..., t, :] * z).sum(-1, keepdim=True))")
ADD = ("        S = S + phi_k[..., t, :, None] * v[..., t, None, :]\n"
       "        z = z + phi_k[..., t, :]")


@pytest.mark.parametrize(("body", "phrase"), [
    (REC.format(READ + "\n" + ADD).replace("outs.append(num", "outs.append(num if t else v[..., t, :] + 0 * num"),
     "add token t to the state before reading out token t"),
    (REC.format("        kk, vv = phi_k[..., :t + 1, :], v[..., :t + 1, :]\n"
                "        w = phi_q[..., t, None, :] @ kk.transpose(-1, -2)\n"
                "        outs.append((w @ vv).squeeze(-2) / w.sum(-1))"), "growing prefix"),
    ("def linear_attention_recurrent(q, k, v):\n    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1\n"
     "    w = (phi_q @ phi_k.transpose(-1, -2)).tril()\n    return (w @ v) / w.sum(-1, keepdim=True)",
     "update them inside a for loop"),
    (REC.format(ADD.replace("S + ", "").replace("z + ", "") + "\n" + READ), "query t sees keys 0..t"),
])
def test_recurrent_wrong_answers_get_their_hints(body, phrase):
    fails_with("eff-recurrent-test", "eff-recurrent-answer", body, phrase)


def test_recurrent_alternatives_pass():
    einsum = REC.format("        S = S + torch.einsum('...r,...d->...rd', phi_k[..., t, :], v[..., t, :])\n"
                        "        z = z + phi_k[..., t, :]\n"
                        "        outs.append(torch.einsum('...r,...rd->...d', phi_q[..., t, :], S)"
                        " / torch.einsum('...r,...r->...', phi_q[..., t, :], z)[..., None])")
    passes("eff-recurrent-test", "eff-recurrent-answer", einsum)
    while_loop = REC.replace("    for t in range(q.shape[-2]):\n{}",
                             "    t = 0\n    while t < q.shape[-2]:\n{}\n        t += 1").format(ADD + "\n" + READ)
    passes("eff-recurrent-test", "eff-recurrent-answer", while_loop)


# Task 3: sliding_window_mask
WIN = "def sliding_window_mask(T, window):\n    d = torch.arange(T)[:, None] - torch.arange(T)[None, :]\n{}"


@pytest.mark.parametrize(("body", "phrase"), [
    ("    return (d >= 0) & (d <= window)", "off-by-one in the window's length"),
    ("    return (d <= 0) & (d > -window)", "transposed or not causal"),
    ("    return d.abs() < window", "transposed or not causal"),
    ("    import numpy as np\n    i = np.arange(T)\n    return (i[:, None] - i[None, :] >= 0) & (i[:, None] - i[None, :] < window)",
     "build it with torch"),
])
def test_window_wrong_answers_get_their_hints(body, phrase):
    fails_with("eff-window-test", "eff-window-answer", WIN.format(body), phrase)


def test_window_alternatives_pass():
    passes("eff-window-test", "eff-window-answer",
           "def sliding_window_mask(T, window):\n"
           "    ones = torch.ones(T, T, dtype=torch.bool)\n"
           "    return ones.tril() & ~ones.tril(-window)")
    passes("eff-window-test", "eff-window-answer",
           "def sliding_window_mask(T, window):\n"
           "    m = torch.zeros(T, T, dtype=torch.bool)\n"
           "    for i in range(T):\n        m[i, max(0, i - window + 1):i + 1] = True\n    return m")


# Task 4: positive_features
FEAT = "def positive_features(x, W):\n{}"


@pytest.mark.parametrize(("body", "phrase"), [
    ("    return torch.exp(x @ W.T - 0.5 * (x * x).sum(-1, keepdim=True))", "1 / sqrt(R)"),
    ("    return torch.exp(x @ W.T) * torch.exp(-0.5 * (x * x).sum(-1, keepdim=True)) / math.sqrt(W.shape[0])",
     "exp(w . x) alone overflows"),
    ("    return torch.exp(x @ W.T - 0.5 * (x * x).sum()) / math.sqrt(W.shape[0])", "per token t and feature r"),
    ("    return torch.exp(x @ W.T - 0.5 * (x * x).sum(-1, keepdim=True)) / math.sqrt(W.shape[1])",
     "R = W's number of rows"),
])
def test_features_wrong_answers_get_their_hints(body, phrase):
    fails_with("eff-performer-test", "eff-performer-answer", FEAT.format(body), phrase)


def test_features_alternative_passes():
    passes("eff-performer-test", "eff-performer-answer", FEAT.format(
        "    e = torch.einsum('...d,rd->...r', x, W) - 0.5 * x.pow(2).sum(-1)[..., None]\n"
        "    return (e - 0.5 * math.log(W.shape[0])).exp()"))


# Task 5: debug
FIX = ("def causal_linear_attention(q, k, v):\n    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1\n"
       "    kv = torch.cumsum(phi_k[..., :, :, None] * v[..., :, None, :], dim=-3)\n"
       "    num = (phi_q[..., :, None, :] @ kv).squeeze(-2)\n{}")


@pytest.mark.parametrize(("body", "phrase"), [
    ("def causal_linear_attention(q, k, v):\n    return causal_linear_attention_buggy(q, k, v)",
     "the outputs are not averages"),
    (FIX.format("    return num / (phi_q * phi_k.sum(-2, keepdim=True)).sum(-1, keepdim=True)"),
     "summing over all T keys lets the future in"),
    (FIX.format("    return num / num.sum(-1, keepdim=True)"), "the outputs are not averages"),
    ("from attn_course.efficient import linear_attention\n"
     "def causal_linear_attention(q, k, v):\n    return linear_attention(q, k, v, causal=True, eps=0.0)",
     "fix the code shown above"),
])
def test_debug_wrong_answers_get_their_hints(body, phrase):
    fails_with("eff-debug-test", "eff-debug-answer", body, phrase)


def test_debug_alternatives_pass():
    weights = ("def causal_linear_attention(q, k, v):\n    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1\n"
               "    T = q.shape[-2]\n"
               "    w = (phi_q @ phi_k.transpose(-1, -2)) * torch.ones(T, T, dtype=torch.bool).tril()\n"
               "    return (w @ v) / w.sum(-1, keepdim=True)")
    passes("eff-debug-test", "eff-debug-answer", weights)
    loop = ("def causal_linear_attention(q, k, v):\n    outs = []\n"
            "    for t in range(q.shape[-2]):\n"
            "        pq, pk = F.elu(q[..., t:t + 1, :]) + 1, F.elu(k[..., :t + 1, :]) + 1\n"
            "        w = pq @ pk.transpose(-1, -2)\n"
            "        outs.append((w @ v[..., :t + 1, :]) / w.sum(-1, keepdim=True))\n"
            "    return torch.cat(outs, dim=-2).float().double()")
    passes("eff-debug-test", "eff-debug-answer", loop)


# Task 6: derive the variance of one feature
VAR = "def feature_variance(x, y):\n    s = x + y\n{}"


@pytest.mark.parametrize(("body", "phrase"), [
    ("    return torch.exp(2 * (s * s).sum(-1) - (x * x).sum(-1) - (y * y).sum(-1))", "this is E[est^2]"),
    ("    return torch.exp((s * s).sum(-1) - (x * x).sum(-1) - (y * y).sum(-1)) - torch.exp(2 * (x * y).sum(-1))",
     "not exp(|u|^2)"),
    ("    return torch.exp(2 * (s * s).sum() - (x * x).sum() - (y * y).sum()) - torch.exp(2 * (x * y).sum())",
     "sum over the last axis only"),
    ("    return torch.exp((s * s).sum(-1) / 2)", "apply it to est and to est^2"),
])
def test_derive_wrong_answers_get_their_hints(body, phrase):
    fails_with("eff-derive-test", "eff-derive-answer", VAR.format(body), phrase)


def test_derive_alternatives_pass():
    factored = ("    xy = (x * y).sum(-1)\n"
                "    return torch.exp(2 * xy) * torch.expm1(((x + y) ** 2).sum(-1))")
    passes("eff-derive-test", "eff-derive-answer", VAR.format(factored))
    f32 = ("    x32, y32 = x.float(), y.float()\n"
           "    v = torch.exp(2 * ((x32 + y32) ** 2).sum(-1) - (x32 ** 2).sum(-1) - (y32 ** 2).sum(-1))"
           " - torch.exp(2 * (x32 * y32).sum(-1))\n    return v.double()")
    run = run_task(NB, "eff-derive-test", {"eff-derive-answer": VAR.format(f32)})
    # float32 passes the Monte Carlo, batch and x = -y checks; exp(24) in float32 keeps 7 digits only
    assert "PASS a (2, 3) batch of pairs, D = 5" in run.output, run.output


# Task 8: predict
@pytest.mark.parametrize(("value", "phrase"), [
    ("0.378", "more features help more than that"),
    ("0.378 / 4", "does not fall like 1 / R"),
    ("0.33", "too pessimistic"),
    ("'0.2'", "write a single number"),
    ("0", "never exact"),
])
def test_prediction_wrong_answers_get_their_hints(value, phrase):
    fails_with("eff-predict-test", "eff-predict-answer", f"predicted_error = {value}", phrase)


@pytest.mark.parametrize("value", ["0.19", "0.378 / 2", "np.float32(0.25)", "0.22"])
def test_prediction_within_tolerance_passes(value):
    passes("eff-predict-test", "eff-predict-answer", f"import numpy as np\npredicted_error = {value}")


def test_no_hint_contains_a_line_of_the_solution():
    assert harness.solution_in_hints(NB) == []


def test_the_memory_question_quotes_the_lectures_checked_output():
    """Task 9 quotes the lecture's measured peaks; the quote must stay what the lecture prints
    (that cell's output is compared whenever the lecture notebook is tested)."""
    from attn_course.grading import notebooks as nbf
    from tests.exercise_harness import ROOT, SOLUTIONS

    task = next(c for c in nbf.read_notebook(SOLUTIONS / NB).cells if nbf.grade_id(c) == "eff-explain-task")
    quoted = task.source.split("```")[1].strip("\n").splitlines()
    lecture = nbf.read_notebook(ROOT / "notebooks" / NB)
    cell = next(c for c in lecture.cells if c.cell_type == "code"
                and c.source.startswith("# NBVAL_CHECK_OUTPUT") and "least peak memory" in c.source)
    printed = "".join(o.get("text", "") for o in cell.outputs).splitlines()
    assert len(quoted) >= 6
    assert quoted == printed


def test_the_visible_prediction_check_cannot_be_searched():
    """The visible test accepts any number; only the hidden tests grade it (no bisection)."""
    run = run_task(NB, "eff-predict-test", {"eff-predict-answer": "predicted_error = 0.9"}, hidden=False)
    assert run.passed, run.output
