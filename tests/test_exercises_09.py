"""Feedback of exercise 09 (FlashAttention): for every task, the reference solution passes,
the blank stub fails, typical wrong answers fail with their own hint, and other correct
answers pass. In-process (tests/exercise_harness.py); the Triton task runs under Triton's
CPU interpreter where there is no GPU (set by tests/conftest.py and by the notebook)."""

import importlib.util
import re

import pytest

from tests.exercise_harness import SOLUTIONS, run_task, stub

NB = "09_flash_attention.ipynb"
# The predict task's experiment (the tiled pass at T = 4096) is not needed by later tests.
SKIP_MEASURE = {"flash-io-measure": "pass"}


def run(test_id, answer_id=None, code=None, hidden=True):
    answers = dict(SKIP_MEASURE)
    if answer_id is not None:
        answers[answer_id] = code
    return run_task(NB, test_id, answers, hidden=hidden)


def assert_fails_with(result, *phrases):
    assert not result.passed, result.output
    for phrase in phrases:
        assert phrase in result.output, f"{phrase!r} not in:\n{result.output}"


def solution_of(answer_id):
    from attn_course.grading import notebooks as nbf

    nb = nbf.read_notebook(SOLUTIONS / NB)
    return next(c.source for c in nb.cells if nbf.grade_id(c) == answer_id)


def with_body(answer_id, body):
    """The solution cell with its solution region replaced by ``body`` (indented as given)."""
    return re.sub(r"[ \t]*### BEGIN SOLUTION\n.*?### END SOLUTION\n?", lambda _: body, solution_of(answer_id),
                  flags=re.S)


@pytest.mark.parametrize(("test_id", "answer_id"), [
    ("flash-online-test", "flash-online-answer"),
    ("flash-tile-test", "flash-tile-answer"),
    ("flash-tiled-test", "flash-tiled-answer"),
    ("flash-rescale-test", "flash-rescale-answer"),
    ("flash-causal-test", "flash-causal-answer"),
    ("flash-delta-test", "flash-delta-answer"),
    ("flash-backward-test", "flash-backward-answer"),
    ("flash-decode-test", "flash-decode-answer"),
])
def test_reference_passes_and_stub_fails(test_id, answer_id):
    assert run(test_id).passed
    blank = run(test_id, answer_id, stub(NB, answer_id))
    assert_fails_with(blank, "not written yet")


# Task 1: online_step ---------------------------------------------------------------------

ONLINE = "import numpy as np\n\ndef online_step(m, l, x_block):\n{}"


@pytest.mark.parametrize(("body", "phrase"), [
    ("    m_new = np.maximum(m, x_block.max(-1))\n    alpha = np.exp(m - m_new)\n"
     "    return m_new, l + np.exp(x_block - m_new[:, None]).sum(-1), alpha",
     "rescale it before adding"),
    ("    m_new = np.maximum(m, x_block.max(-1))\n    alpha = np.exp(m_new - m)\n"
     "    return m_new, alpha * l + np.exp(x_block - m_new[:, None]).sum(-1), alpha",
     "it depends on m and m_new only"),
    ("    m_new = x_block.max(-1)\n    alpha = np.exp(m - m_new)\n"
     "    return m_new, alpha * l + np.exp(x_block - m_new[:, None]).sum(-1), alpha",
     "larger of the old maximum and the block's maximum"),
])
def test_online_step_wrong_answers_get_their_hint(body, phrase):
    assert_fails_with(run("flash-online-test", "flash-online-answer", ONLINE.format(body)), phrase)


@pytest.mark.parametrize("body", [
    # keepdims and a subtraction instead of an indexed broadcast
    "    m_new = np.maximum(m, np.max(x_block, axis=1))\n"
    "    e = np.exp(x_block - np.max(np.stack([m, x_block.max(1)]), 0, keepdims=True).T)\n"
    "    alpha = np.exp(m - m_new)\n    return m_new, alpha * l + e.sum(1), alpha",
    # a loop over rows
    "    m_new, l_new, alpha = np.empty_like(m), np.empty_like(l), np.empty_like(m)\n"
    "    for r in range(len(m)):\n        m_new[r] = max(m[r], x_block[r].max())\n"
    "        alpha[r] = np.exp(m[r] - m_new[r])\n"
    "        l_new[r] = alpha[r] * l[r] + np.exp(x_block[r] - m_new[r]).sum()\n"
    "    return m_new, l_new, alpha",
    # float32 arithmetic
    "    m32, x32 = m.astype(np.float32), x_block.astype(np.float32)\n"
    "    m_new = np.maximum(m32, x32.max(-1))\n    alpha = np.exp(m32 - m_new)\n"
    "    return m_new, alpha * l.astype(np.float32) + np.exp(x32 - m_new[:, None]).sum(-1), alpha",
])
def test_online_step_other_correct_answers_pass(body):
    assert run("flash-online-test", "flash-online-answer", ONLINE.format(body)).passed


# Task 2: tile_update ---------------------------------------------------------------------

TILE = "def tile_update(m, l, acc, s, v_block):\n    m_new, l_new, alpha = online_step(m, l, s)\n{}"


@pytest.mark.parametrize(("body", "phrase"), [
    ("    return m_new, l_new, acc + np.exp(s - m_new[:, None]) @ v_block",
     "rescale each of its rows by that row's alpha"),
    ("    return m_new, l_new, alpha[:, None] * acc + np.exp(s - m[:, None]) @ v_block",
     "taken against m_new"),
    ("    return m_new, l_new, alpha * acc + np.exp(s - m_new[:, None]) @ v_block",
     "give each row of acc its own factor"),
    ("    return m_new, l_new, (alpha[:, None] * acc + np.exp(s - m_new[:, None]) @ v_block)"
     " / l_new[:, None]", "rescale each of its rows"),
])
def test_tile_update_wrong_answers_get_their_hint(body, phrase):
    assert_fails_with(run("flash-tile-test", "flash-tile-answer", TILE.format(body)), phrase)


def test_tile_update_other_correct_answers_pass():
    einsum = ("    p = np.exp(s - m_new[:, None])\n"
              "    return m_new, l_new, np.einsum('r,rd->rd', alpha, acc) + np.einsum('rc,cd->rd', p, v_block)")
    assert run("flash-tile-test", "flash-tile-answer", TILE.format(einsum)).passed


# Task 3: tiled_attention -----------------------------------------------------------------

TILED = "import numpy as np\n\ndef tiled_attention(q, k, v, block_q, block_k):\n{}"
TILED_BODY = """    T, D = q.shape
    out = np.zeros((T, v.shape[1]))
    {full}
    for i0 in range(0, T, block_q):
        q_i = q[i0:i0 + block_q] {scale}
        br = q_i.shape[0]
        m, l, acc = np.full(br, -np.inf), np.zeros(br), np.zeros((br, v.shape[1]))
        for j0 in range(0, k.shape[0], {step}):
            s = {scores}
            m, l, acc = tile_update(m, l, acc, s, v[j0:j0 + {step}])
        out[i0:i0 + block_q] = acc / l[:, None]
    return out"""
RIGHT3 = dict(full="", scale="/ np.sqrt(D)", step="block_k", scores="q_i @ k[j0:j0 + block_k].T")


@pytest.mark.parametrize(("change", "phrase"), [
    (dict(scale=""), "scale the scores by 1/sqrt(D)"),
    (dict(full="whole = q @ k.T / np.sqrt(D)", scale="/ np.sqrt(D)",
          scores="whole[i0:i0 + block_q, j0:j0 + block_k]"), "compute the scores of one tile"),
    (dict(step="block_q", scores="q_i @ k[j0:j0 + block_q].T"),
     "slice q into blocks of block_q rows and k into blocks of block_k rows"),
])
def test_tiled_attention_wrong_answers_get_their_hint(change, phrase):
    code = TILED.format(TILED_BODY.format(**{**RIGHT3, **change}))
    assert_fails_with(run("flash-tiled-test", "flash-tiled-answer", code), phrase)


def test_tiled_attention_with_a_while_loop_passes():
    code = TILED.format("""    T, D = q.shape
    rows = []
    i0 = 0
    while i0 < T:
        q_i = q[i0:i0 + block_q] * D ** -0.5
        m, l, acc = np.full(len(q_i), -np.inf), np.zeros(len(q_i)), 0.0 * q_i[:, :1] * v[:1]
        j0 = 0
        while j0 < k.shape[0]:
            m, l, acc = tile_update(m, l, acc, q_i @ k[j0:j0 + block_k].T, v[j0:j0 + block_k])
            j0 += block_k
        rows.append(acc / l[:, None])
        i0 += block_q
    return np.concatenate(rows)""")
    assert run("flash-tiled-test", "flash-tiled-answer", code).passed


# Task 4 (debug): fixed_flash_rows --------------------------------------------------------

ROWS = """import numpy as np

def fixed_flash_rows(s, v, block):
    n = s.shape[0]
    m, l, acc = np.full(n, -np.inf), np.zeros(n), np.zeros((n, v.shape[1]))
    for j0 in range(0, s.shape[1], block):
        x = s[:, j0:j0 + block]
        m_new = np.maximum(m, x.max(axis=1))
        alpha = np.exp(m - m_new)
        p = np.exp(x - m_new[:, None])
        l = alpha * l + p.sum(axis=1)
        acc = {update}
        m = m_new
    return acc / l[:, None]"""


@pytest.mark.parametrize(("update", "phrase"), [
    ("acc + p @ v[j0:j0 + block]", "acc is still added to without being rescaled"),
    ("acc / alpha[:, None] + p @ v[j0:j0 + block]", "rescaled by the inverse factor"),
    ("alpha[:, None] * (acc + p @ v[j0:j0 + block])", "compare how l and acc are updated"),
])
def test_fixed_flash_rows_wrong_fixes_get_their_hint(update, phrase):
    code = ROWS.format(update=update)
    assert_fails_with(run("flash-rescale-test", "flash-rescale-answer", code), phrase)


def test_fixed_flash_rows_without_the_maximum_fails_only_on_large_scores():
    code = """import numpy as np

def fixed_flash_rows(s, v, block):
    l, acc = np.zeros(len(s)), np.zeros((len(s), v.shape[1]))
    for j0 in range(0, s.shape[1], block):
        p = np.exp(s[:, j0:j0 + block])
        l, acc = l + p.sum(1), acc + p @ v[j0:j0 + block]
    return acc / l[:, None]"""
    assert run("flash-rescale-test", "flash-rescale-answer", code, hidden=False).passed
    assert_fails_with(run("flash-rescale-test", "flash-rescale-answer", code),
                      "scores near 800", "exp(800) overflows")


@pytest.mark.parametrize("code", [
    # FlashAttention-1's form: the output kept normalised after every block
    """import numpy as np

def fixed_flash_rows(s, v, block):
    n = s.shape[0]
    m, l, out = np.full(n, -np.inf), np.zeros(n), np.zeros((n, v.shape[1]))
    for j0 in range(0, s.shape[1], block):
        x = s[:, j0:j0 + block]
        m_new = np.maximum(m, x.max(axis=1))
        p = np.exp(x - m_new[:, None])
        l_new = np.exp(m - m_new) * l + p.sum(1)
        out = ((np.exp(m - m_new) * l)[:, None] * out + p @ v[j0:j0 + block]) / l_new[:, None]
        m, l = m_new, l_new
    return out""",
    # float32 throughout
    ROWS.format(update="(alpha[:, None] * acc + p @ v[j0:j0 + block]).astype(np.float32)"),
])
def test_fixed_flash_rows_other_correct_fixes_pass(code):
    assert run("flash-rescale-test", "flash-rescale-answer", code).passed


# Task 5: causal_tiled_attention ----------------------------------------------------------

CAUSAL = """import numpy as np

def causal_tiled_attention(q, k, v, block_q, block_k):
    T, D = q.shape
    out, lse = np.zeros((T, v.shape[1])), np.zeros(T)
    for i0 in range(0, T, block_q):
        i1 = min(i0 + block_q, T)
        q_i = q[i0:i1] / np.sqrt(D)
        m, l, acc = np.full(i1 - i0, -np.inf), np.zeros(i1 - i0), np.zeros((i1 - i0, v.shape[1]))
        for j0 in range(0, {j_end}, block_k):
            j1 = min(j0 + block_k, T)
            s = q_i @ k[j0:j1].T
            if {crossed}:
                s = np.where({visible}, s, -np.inf)
            m, l, acc = tile_update(m, l, acc, s, v[j0:j1])
        out[i0:i1] = acc / l[:, None]
        lse[i0:i1] = {lse}
    return out, lse"""
RIGHT5 = dict(j_end="i1", crossed="j1 - 1 > i0",
              visible="np.arange(j0, j1)[None, :] <= np.arange(i0, i1)[:, None]",
              lse="m + np.log(l)")


@pytest.mark.parametrize(("change", "phrase", "hidden"), [
    (dict(j_end="T", crossed="True"), "stop the key loop before it", False),
    (dict(crossed="False"), "set the scores of keys after their query to -inf", False),
    (dict(j_end="i0 if i0 else 1"), "including the tile that the diagonal crosses", False),
    (dict(visible="np.arange(j1 - j0)[None, :] <= np.arange(i1 - i0)[:, None]"),
     "compare global positions", True),
    (dict(lse="m + l"), "plus log of the running sum", False),
])
def test_causal_wrong_answers_get_their_hint(change, phrase, hidden):
    code = CAUSAL.format(**{**RIGHT5, **change})
    assert_fails_with(run("flash-causal-test", "flash-causal-answer", code, hidden=hidden), phrase)


def test_causal_local_positions_pass_the_square_visible_case_only():
    code = CAUSAL.format(**{**RIGHT5,
                            "visible": "np.arange(j1 - j0)[None, :] <= np.arange(i1 - i0)[:, None]"})
    assert run("flash-causal-test", "flash-causal-answer", code, hidden=False).passed


def test_causal_with_a_tril_mask_on_every_visited_tile_passes():
    code = CAUSAL.format(**{**RIGHT5, "crossed": "True",
                            "visible": "np.tril(np.ones((i1 - i0, j1 - j0), dtype=bool), k=i0 - j0)"})
    assert run("flash-causal-test", "flash-causal-answer", code).passed


# Task 6 (predict): HBM reads -------------------------------------------------------------

@pytest.mark.parametrize(("code", "phrase"), [
    ("predicted_reads = 3 * 4096 * 64 + 2 * 4096 ** 2\npredicted_reads_causal = 9e6",
     "standard attention's count"),
    ("predicted_reads = 3 * 4096 * 64\npredicted_reads_causal = 9e6", "K and V are not read once"),
    ("predicted_reads = 2 * 4096 * 4096 * 64\npredicted_reads_causal = 9e6", "per query"),
    ("predicted_reads = 17e6\npredicted_reads_causal = 17e6", "predicted_reads_causal within 10%"),
    ("predicted_reads = '17 million'\npredicted_reads_causal = 9e6", "predicted_reads is a number"),
])
def test_predictions_far_off_get_their_hint(code, phrase):
    assert_fails_with(run("flash-io-test", "flash-io-answer", code), phrase)


def test_predictions_within_ten_percent_pass_and_a_missing_one_fails():
    assert run("flash-io-test", "flash-io-answer",
               "predicted_reads = 16_000_000\npredicted_reads_causal = 9_500_000").passed
    with pytest.raises(AssertionError, match="NotImplementedError"):  # the stub cell raises
        run("flash-io-test", "flash-io-answer", stub(NB, "flash-io-answer"))
    assert_fails_with(run("flash-io-test", "flash-io-answer", "pass"), "predicted_reads")


# Task 7 (derive): tile_grad_scores -------------------------------------------------------

DS = "import numpy as np\n\ndef tile_grad_scores(p, dp, dout, out):\n{}"


@pytest.mark.parametrize(("body", "phrase", "visible_passes"), [
    ("    return p * (dp - (p * dp).sum(-1, keepdims=True))", "the tile's columns only", True),
    ("    return p * dp", "the row term D_i is missing", False),
    ("    return p * ((dout * out).sum(-1, keepdims=True) - dp)", "with D_i one number per row", False),
])
def test_tile_grad_scores_wrong_answers_get_their_hint(body, phrase, visible_passes):
    code = DS.format(body)
    assert run("flash-delta-test", "flash-delta-answer", code, hidden=False).passed == visible_passes
    assert_fails_with(run("flash-delta-test", "flash-delta-answer", code), phrase)


@pytest.mark.parametrize("body", [
    "    return p * dp - p * np.einsum('rc,rc->r', dout, out)[:, None]",
    "    d = np.array([dout[r] @ out[r] for r in range(len(out))], dtype=np.float32)\n"
    "    return (p * (dp - d[:, None])).astype(np.float32)",
])
def test_tile_grad_scores_other_correct_answers_pass(body):
    assert run("flash-delta-test", "flash-delta-answer", DS.format(body)).passed


# Task 9: tiled_backward ------------------------------------------------------------------

BWD = """import numpy as np

def tiled_backward(q, k, v, out, lse, dout, block_q, block_k, causal):
    T, D = q.shape
    scale = 1 / np.sqrt(D)
    delta = {delta}
    dq, dk, dv = np.zeros(q.shape), np.zeros(k.shape), np.zeros(v.shape)
    for i0 in range(0, T, block_q):
        i1 = min(i0 + block_q, T)
        for j0 in range(0, i1 if causal else T, block_k):
            j1 = min(j0 + block_k, T)
            s = scale * q[i0:i1] @ k[j0:j1].T
            p = {p}
            if {mask}:
                p = np.where(np.arange(j0, j1)[None, :] <= np.arange(i0, i1)[:, None], p, 0.0)
            dv[j0:j1] += p.T @ dout[i0:i1]
            dp = dout[i0:i1] @ v[j0:j1].T
            ds = p * (dp - {delta_i})
            dq[i0:i1] += {g} * ds @ k[j0:j1]
            dk[j0:j1] += {g} * ds.T @ q[i0:i1]
    return dq, dk, dv"""
RIGHT9 = dict(delta="np.sum(dout * out, axis=-1)", p="np.exp(s - lse[i0:i1, None])",
              mask="causal and j1 - 1 > i0", delta_i="delta[i0:i1, None]", g="scale")


@pytest.mark.parametrize(("change", "phrase", "hidden"), [
    (dict(delta_i="0"), "the row term D_i is missing", False),
    (dict(delta="(dout @ v.T).sum(-1)"), "not the row sum of dP", False),
    (dict(g="1.0"), "the chain rule brings the scale into dQ and dK", False),
    (dict(mask="False"), "must be 0 where the forward masked the scores", True),
    (dict(p="np.exp(s - s.max(-1, keepdims=True)) / np.exp(s - s.max(-1, keepdims=True)).sum(-1, keepdims=True)"),
     "recompute P = exp(scaled scores - lse)", False),
    # renormalised over the whole row of scores instead of using lse: right values, wrong source
    (dict(p="np.exp(s) / (np.exp(scale * q[i0:i1] @ k.T) * ((np.arange(T)[None, :] <= "
            "np.arange(i0, i1)[:, None]) if causal else 1)).sum(-1, keepdims=True)"),
     "from the lse argument", True),
])
def test_tiled_backward_wrong_answers_get_their_hint(change, phrase, hidden):
    code = BWD.format(**{**RIGHT9, **change})
    assert_fails_with(run("flash-backward-test", "flash-backward-answer", code, hidden=hidden), phrase)


def test_tiled_backward_d_from_p_and_dp_fails_only_when_out_is_perturbed():
    # D_i recomputed as the row sum of P * dP over whole rows: right value, wrong source.
    delta = ("np.array([np.sum(np.exp(scale * q[i] @ k.T - lse[i]) * (dout[i] @ v.T)"
             " * ((np.arange(T) <= i) if causal else 1)) for i in range(T)])")
    code = BWD.format(**{**RIGHT9, "delta": delta})
    result = run("flash-backward-test", "flash-backward-answer", code)
    assert_fails_with(result, "D_i follows the out it is given", "compute D_i from dout and out")


def test_tiled_backward_dense_answer_fails_on_memory_and_a_float32_one_passes():
    dense = """import numpy as np

def tiled_backward(q, k, v, out, lse, dout, block_q, block_k, causal):
    T, D = q.shape
    s = q @ k.T / np.sqrt(D)
    p = np.exp(s - lse[:, None])
    if causal:
        p = np.tril(p)
    dp = dout @ v.T
    ds = p * (dp - (dout * out).sum(-1, keepdims=True))
    return (ds @ k / np.sqrt(D)).astype(np.float32), ds.T @ q / np.sqrt(D), p.T @ dout"""
    assert_fails_with(run("flash-backward-test", "flash-backward-answer", dense),
                      "no T x T matrix is built", "recompute the scores and P of one tile")
    float32 = BWD.format(**{**RIGHT9, "p": "np.exp(s - lse[i0:i1, None]).astype(np.float32)"})
    assert run("flash-backward-test", "flash-backward-answer", float32).passed


# Task 10: the Triton kernel's inner loop (under the CPU interpreter without a GPU) --------

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="triton is not installed")

BODY = """        kt = tl.load(kt_ptrs, mask=cols[None, :] < T, other=0.0)
        s = tl.dot(q, kt) * {scale}
        keep = {keep}
        if CAUSAL:
            keep = keep & ({causal})
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_ptrs, mask=cols[:, None] < T, other=0.0)
        acc = {acc} + tl.dot(p, v)
        m_i = m_new
"""
RIGHT10 = dict(scale="scale", keep="cols[None, :] < T", causal="cols[None, :] <= offs_m[:, None]",
               acc="acc * alpha[:, None]")


def kernel_with(**change):
    return with_body("flash-triton-answer", BODY.format(**{**RIGHT10, **change}))


@needs_triton
def test_kernel_reference_passes_and_stub_fails():
    assert run("flash-triton-test").passed
    blank = run("flash-triton-test", "flash-triton-answer", stub(NB, "flash-triton-answer"))
    assert_fails_with(blank, "not written yet: the kernel's loop body")
    body = with_body("flash-triton-answer", "        # YOUR CODE HERE\n        raise NotImplementedError()\n")
    assert_fails_with(run("flash-triton-test", "flash-triton-answer", body),
                      "not written yet: the kernel's loop body")


@needs_triton
@pytest.mark.parametrize(("change", "phrase"), [
    (dict(acc="acc"), "acc is not rescaled by alpha"),
    (dict(scale="1.0"), "not multiplied by scale"),
    (dict(keep="cols[None, :] >= 0"), "keys past T are loaded as 0 and still counted"),
    (dict(causal="cols[None, :] >= 0"), "look at the causal mask"),
])
def test_kernel_wrong_loop_bodies_get_their_hint(change, phrase):
    assert_fails_with(run("flash-triton-test", "flash-triton-answer", kernel_with(**change)), phrase)


@needs_triton
def test_kernel_other_correct_loop_body_passes():
    # the mask as an additive bias, the product accumulated into acc by tl.dot
    body = """        kt = tl.load(kt_ptrs, mask=cols[None, :] < T, other=0.0)
        keep = cols[None, :] < T
        if CAUSAL:
            keep = keep & (offs_m[:, None] >= cols[None, :])
        s = tl.dot(q, kt) * scale + tl.where(keep, 0.0, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        v = tl.load(v_ptrs, mask=cols[:, None] < T, other=0.0)
        acc = tl.dot(p, v, acc * alpha[:, None])
        l_i = alpha * l_i + tl.sum(p, axis=1)
        m_i = m_new
"""
    assert run("flash-triton-test", "flash-triton-answer", with_body("flash-triton-answer", body)).passed


def test_every_graded_cell_names_its_kind_and_goal_and_written_answers_are_not_handed_out():
    from attn_course.grading import notebooks as nbf
    from attn_course.grading.release import release_notebook

    nb = nbf.read_notebook(SOLUTIONS / NB)
    graded = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert len(graded) == 13
    for cell in graded:
        info = cell.metadata["attn_course"]
        assert info["kind"] in ("build", "predict", "debug", "derive", "explain"), info
        assert info["goal"], nbf.grade_id(cell)
    kinds = {c.metadata["attn_course"]["kind"] for c in graded}
    assert kinds == {"build", "predict", "debug", "derive", "explain"}
    learner = release_notebook(nb)
    written = [c for c in learner.cells if c.cell_type == "markdown"
               and c.metadata.get("nbgrader", {}).get("grade")]
    assert [nbf.grade_id(c) for c in written] == ["flash-delta-why", "flash-recompute-why"]
    assert all(c.source.strip() == "YOUR ANSWER HERE" for c in written)


def _texts(source: str) -> list[str]:
    """Every string written in a test cell: its hints (stages, hint= and the hints of known
    mistakes) and the rest of what it can print."""
    import ast

    return [n.value for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _solution_lines_in(texts, solution: str) -> list[str]:
    """The lines of ``solution``'s solution region (12 characters or more, comments and
    spacing dropped) that appear in one of ``texts``."""
    region = solution.split("### BEGIN SOLUTION")[1].split("### END SOLUTION")[0]
    lines = {" ".join(line.split("#")[0].split()) for line in region.splitlines()}
    flat = [" ".join(text.split()) for text in texts]
    return sorted(line for line in lines if len(line) >= 12 and any(line in f for f in flat))


def test_every_task_has_staged_hints_and_no_test_text_holds_a_line_of_the_solution():
    from attn_course.grading import notebooks as nbf

    nb = nbf.read_notebook(SOLUTIONS / NB)
    answers = {nbf.grade_id(c): c.source for c in nb.cells if nbf.is_answer(c)}
    rescale = answers["flash-rescale-answer"]
    planted = 'hints("Task 4", "write acc = alpha[:, None] * acc + p @ v[j0:j0 + block]")'
    assert _solution_lines_in(_texts(planted), rescale)  # the check sees a line given away
    for cell in nb.cells:
        if not (nbf.is_test(cell) and cell.cell_type == "code"):
            continue
        task = re.match(r"# Tests for (Task \d+)", cell.source).group(1)
        assert len(re.findall(rf'hints\("{task}",', cell.source)) == 1, task
        texts = _texts(cell.source)
        assert len(texts) > 4, task
        solution = answers[nbf.grade_id(cell).replace("-test", "-answer")]
        assert not _solution_lines_in(texts, solution), task


# Task 12: Flash-Decoding -----------------------------------------------------------------

BLOCK = '''import numpy as np

def block_partial(q, k_blk, v_blk):
    s = q @ np.swapaxes(k_blk, -1, -2) {scale}
    m = s.max(axis=-1, keepdims=True)
    p = np.exp(s - m)
    l = p.sum(axis=-1, keepdims=True)
    return (p @ v_blk) / l, {lse}
'''
RIGHT_BLOCK = dict(scale="/ np.sqrt(q.shape[-1])", lse="(m + np.log(l))[..., 0]")
SPLIT = BLOCK.format(**RIGHT_BLOCK) + '''
def split_decode(q, k, v, splits):
    S = k.shape[-2]
    {edges}
    parts = [block_partial(q, k[..., a:b, :], v[..., a:b, :]) for a, b in zip(edges[:-1], edges[1:])]
    outs, lses = np.stack([o for o, _ in parts]), np.stack([l for _, l in parts])
    {merge}
    return out, lse
'''
RIGHT_SPLIT = dict(
    edges="edges = [S * i // splits for i in range(splits + 1)]",
    merge="top = lses.max(0)\n    lse = top + np.log(np.exp(lses - top).sum(0))\n"
          "    out = (np.exp(lses - lse)[..., None] * outs).sum(0)")


def split_with(**change):
    return SPLIT.format(**{**RIGHT_SPLIT, **change})


def decode(code, hidden=True):
    return run("flash-decode-test", "flash-decode-answer", code, hidden=hidden)


@pytest.mark.parametrize(("change", "phrase", "hidden"), [
    (dict(merge="lse = np.log(np.exp(lses).sum(0))\n    out = outs.mean(0)"),
     "every block is counted equally", False),
    (dict(merge="top = lses.max(0)\n    lse = top + np.log(np.exp(lses - top).sum(0))\n"
                "    out = (np.exp(lses - top)[..., None] * outs).sum(0)"),
     "the weights do not sum to 1", False),
    # no shift by the largest lse: right on the visible cases, inf at scores near 900
    (dict(merge="lse = np.log(np.exp(lses).sum(0))\n"
                "    out = (np.exp(lses)[..., None] * outs).sum(0) / np.exp(lses).sum(0)[..., None]"),
     "exp of an lse near 900 overflows to inf", True),
    # shifted by 0 instead of the largest lse: lse = inf, every weight exp(lse_s - inf) = 0
    (dict(merge="lse = np.log(np.exp(lses).sum(0))\n    out = (np.exp(lses - lse)[..., None] * outs).sum(0)"),
     "exp of an lse near 900 overflows to inf", True),
    (dict(merge="out = (np.exp(lses - np.logaddexp.reduce(lses, 0))[..., None] * outs).sum(0)\n"
                "    lse = lses.sum(0)"),
     "not their sum, not their maximum", False),
    # a block length rounded down: 5 blocks for S = 10, splits = 4
    (dict(edges="n = S // splits\n    edges = list(range(0, S, n)) + [S]"),
     "make exactly `splits` blocks", False),
    # a block length rounded up: right for S = 10, splits = 4; 5 blocks for splits = 6
    (dict(edges="n = -(-S // splits)\n    edges = list(range(0, S, n)) + [S]"),
     "make exactly `splits` blocks", True),
    # the last S % splits keys dropped
    (dict(edges="edges = [i * (S // splits) for i in range(splits + 1)]"),
     "without dropping the last keys", False),
])
def test_split_decode_wrong_answers_get_their_hint(change, phrase, hidden):
    code = split_with(**change)
    assert_fails_with(decode(code, hidden=hidden), phrase)
    if hidden:
        assert decode(code, hidden=False).passed


@pytest.mark.parametrize(("change", "phrase"), [
    (dict(scale=""), "scale the scores by 1/sqrt(D)"),
    (dict(lse="np.log(l)[..., 0]"), "the maximum must be added back"),
])
def test_block_partial_wrong_answers_get_their_hint(change, phrase):
    code = SPLIT.replace(BLOCK.format(**RIGHT_BLOCK), BLOCK.format(**{**RIGHT_BLOCK, **change}))
    assert_fails_with(decode(code, hidden=False), phrase)


def test_split_decode_that_never_calls_block_partial_fails():
    inline = SPLIT.format(**RIGHT_SPLIT).replace("block_partial(q, k[", "_whole(q, k[") + '''
def _whole(q, k, v):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    m = s.max(axis=-1, keepdims=True)
    p = np.exp(s - m)
    return (p @ v) / p.sum(-1, keepdims=True), (m + np.log(p.sum(-1, keepdims=True)))[..., 0]
'''
    assert_fails_with(decode(inline, hidden=False), "block_partial is called once per block",
                      "0 calls for splits = 4")


@pytest.mark.parametrize("code", [
    # np.array_split's blocks (the longer ones first) and np.logaddexp for the merge
    BLOCK.format(**RIGHT_BLOCK) + '''
def split_decode(q, k, v, splits):
    parts = [block_partial(q, kb, vb) for kb, vb in
             zip(np.array_split(k, splits, axis=-2), np.array_split(v, splits, axis=-2))]
    lses = np.stack([l for _, l in parts])
    lse = np.logaddexp.reduce(lses, axis=0)
    return sum(np.exp(l - lse)[..., None] * o for o, l in parts), lse
''',
    # a running merge, one block at a time, as the online softmax does
    BLOCK.format(**RIGHT_BLOCK) + '''
def split_decode(q, k, v, splits):
    S = k.shape[-2]
    out, lse = None, None
    for i in range(splits):
        a, b = round(i * S / splits), round((i + 1) * S / splits)
        o, l = block_partial(q, k[..., a:b, :], v[..., a:b, :])
        if out is None:
            out, lse = o, l
        else:
            new = np.logaddexp(lse, l)
            out = np.exp(lse - new)[..., None] * out + np.exp(l - new)[..., None] * o
            lse = new
    return out, lse
''',
    # float32 throughout
    BLOCK.format(**RIGHT_BLOCK).replace("return (p @ v_blk) / l,", "return ((p @ v_blk) / l).astype(np.float32),")
    + SPLIT.format(**RIGHT_SPLIT).split(BLOCK.format(**RIGHT_BLOCK))[1],
])
def test_split_decode_other_correct_answers_pass(code):
    result = decode(code)
    assert result.passed, result.output


def test_split_decode_hints_hold_no_piece_of_a_solution_line():
    from attn_course.grading import notebooks as nbf
    from tests.exercise_harness import hint_texts, solution_in_hints

    nb = nbf.read_notebook(SOLUTIONS / NB)
    cell = next(c for c in nb.cells if nbf.grade_id(c) == "flash-decode-test")
    mine = hint_texts(cell.source)
    assert len(mine) >= 10
    assert [h for h, _ in solution_in_hints(NB) if h in mine] == []


# Task 13 (predict): writes of FlashAttention-1 against FlashAttention-2 ------------------

def fa1(code):
    return run("flash-fa1-test", "flash-fa1-answer", code)


def test_write_ratio_reference_passes_and_stub_fails():
    assert run("flash-fa1-test").passed
    with pytest.raises(AssertionError, match="NotImplementedError"):  # the stub cell raises
        fa1(stub(NB, "flash-fa1-answer"))
    assert_fails_with(fa1("pass"), "predicted_write_ratio")


@pytest.mark.parametrize(("code", "phrase"), [
    ("predicted_write_ratio = 1", "but not their writes"),
    ("predicted_write_ratio = 8192 / 64", "one store per query block"),
    ("predicted_write_ratio = 8192", "one store per key"),
    ("predicted_write_ratio = 1.03", "but not their writes"),  # the ratio of the reads
    ("predicted_write_ratio = 60", "count per row"),
    ("predicted_write_ratio = 'about 33'", "predicted_write_ratio is a number"),
])
def test_write_ratio_far_off_gets_its_hint(code, phrase):
    assert_fails_with(fa1(code), phrase)


@pytest.mark.parametrize("code", [
    "predicted_write_ratio = 8192 / 256",  # the number of key blocks alone: 32, within 10%
    "predicted_write_ratio = (8192 * 66 * 33) / (8192 * 65)",
    "import numpy as np\npredicted_write_ratio = np.float64(33.5)",
])
def test_write_ratio_within_ten_percent_passes(code):
    result = fa1(code)
    assert result.passed, result.output
