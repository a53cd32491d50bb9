"""Circuits of the shipped induction model: each against an independent computation."""

import numpy as np
import pytest
import torch

from attn_course.data.induction_lm import (
    corrupt_first_copy,
    induction_answers,
    load_induction_lm,
    make_batch,
)
from attn_course.interp.circuits import (
    copying_score,
    direct_logit_attribution,
    head_contributions,
    noising_sweep,
    ov_circuit,
    path_patch,
    qk_circuit_kcomposition,
)
from attn_course.interp.hooks import hooks, run_with_cache
from attn_course.interp.patching import logit_diff, patch
from attn_course.testing import assert_close

N = 8


@pytest.fixture(scope="module")
def setup():
    model = load_induction_lm()
    x, _, _, start = make_batch(12, torch.Generator().manual_seed(0), repeat=N)
    x_bad = corrupt_first_copy(x, start, N, torch.Generator().manual_seed(1))
    good, bad = induction_answers(x, start, N), induction_answers(x_bad, start, N)
    valid = (good >= 0) & (bad >= 0) & (good != bad)

    def metric(logits):
        return logit_diff(logits, good.clamp(min=0), bad.clamp(min=0))[valid].mean()

    return model, x, x_bad, metric


def test_attribution_adds_up_and_each_head_term_is_its_own_output(setup):
    model, x, _, _ = setup
    terms = direct_logit_attribution(model, x)
    with torch.no_grad():
        logits = model(x)
    assert_close(sum(terms.values()), logits, "sum of the terms", atol=1e-4, rtol=1e-4)
    # layer 1, head 2 recomputed in float64 numpy from the cached q, k, v
    _, cache = run_with_cache(model, x)
    q, k, v = (cache[f"blocks.1.attn.hook_{p}"][:, 2].double().numpy() for p in "qkv")
    T, D = q.shape[1], q.shape[2]
    s = q @ k.transpose(0, 2, 1) / np.sqrt(D)
    s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    z = (p / p.sum(-1, keepdims=True)) @ v  # (B, T, Dh)
    attn = model.blocks[1].attn
    w_o = attn.out_proj.weight.detach().double().numpy()[:, 2 * D:3 * D]  # (E, Dh)
    c = z @ w_o.T  # (B, T, E) this head's output in the residual stream
    seen = {}  # the final residual stream, as ln_f receives it
    handle = model.ln_f.register_forward_pre_hook(lambda m, a: seen.update(r=a[0].detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    resid = seen["r"].double().numpy()
    sigma = np.sqrt(resid.var(-1, keepdims=True) + model.ln_f.eps)
    gamma = model.ln_f.weight.detach().double().numpy()
    w_u = model.head.weight.detach().double().numpy()
    expected = ((c - c.mean(-1, keepdims=True)) / sigma * gamma) @ w_u.T
    assert_close(terms["L1H2"], expected, "L1H2 term", atol=1e-4, rtol=1e-4)


def test_ov_circuit_column_is_what_the_head_writes_for_a_lone_token(setup):
    model, *_ = setup
    tokens = torch.tensor([[3, 5], [17, 2], [40, 9]])  # position 0 attends only to itself
    _, cache = run_with_cache(model, tokens)
    for head in range(4):
        written = head_contributions(model, cache, 0)[:, head, 0]  # (3, E) at position 0
        written = written - written.mean(-1, keepdim=True)
        expected = (written * model.ln_f.weight) @ model.head.weight.T  # (3, V)
        assert_close(ov_circuit(model, 0, head)[tokens[:, 0]], expected, f"head {head}",
                     atol=1e-4, rtol=1e-4)


def test_copying_score_of_simple_matrices():
    assert copying_score(torch.eye(5)) == pytest.approx(1.0)
    assert copying_score(-2 * torch.eye(5)) == pytest.approx(-1.0)
    rot = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])  # eigenvalues +-i
    assert copying_score(rot) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="ov must be a square matrix"):
        copying_score(torch.zeros(2, 3))


def test_noising_is_the_lost_fraction_by_hand(setup):
    model, x, x_bad, metric = setup
    _, bad_cache = run_with_cache(model, x_bad)
    with torch.no_grad():
        m_clean, m_bad = float(metric(model(x))), float(metric(model(x_bad)))
    name = "blocks.0.attn.hook_z"

    def swap(t, n):
        t = t.clone()
        t[:, 1] = bad_cache[name][:, 1]
        return t

    with torch.no_grad(), hooks(model, [(name, swap)]):
        lost = (m_clean - float(metric(model(x)))) / (m_clean - m_bad)
    assert float(noising_sweep(model, x, x_bad, metric)[0, 1]) == pytest.approx(lost, abs=1e-6)


def test_path_patching_along_every_path_is_activation_patching(setup):
    model, x, x_bad, _ = setup
    _, clean_cache = run_with_cache(model, x)
    everything = [(1, h, w) for h in range(4) for w in "qkv"]
    for head in (1, 3):
        full = patch(model, x_bad, clean_cache, "blocks.0.attn.hook_z", head=head)
        paths = path_patch(model, x, x_bad, sender=(0, head), receivers=everything, direct=True)
        assert_close(paths, full, f"sender head {head}", atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        assert_close(path_patch(model, x, x_bad, sender=(0, 1)), model(x_bad), "no path")


def test_path_patch_errors_name_the_argument(setup):
    model, x, x_bad, _ = setup
    with pytest.raises(ValueError, match="receivers must be"):
        path_patch(model, x, x_bad, sender=(0, 1), receivers=[(1, 0, "o")])
    with pytest.raises(ValueError, match="later layer than the sender"):
        path_patch(model, x, x_bad, sender=(1, 1), receivers=[(1, 0, "k")])
    with pytest.raises(ValueError, match="head must be in"):
        path_patch(model, x, x_bad, sender=(0, 9))


def test_qk_circuit_equals_the_models_scores_on_a_built_residual(setup):
    """Feed layer 1 a residual stream built by hand (the key's and the query's contents)
    and read the induction head's score from its hook_scores."""
    model, *_ = setup
    V, offset, p_k = 64, 7, 3
    qk = qk_circuit_kcomposition(model, 1, 0, source=(0, 1), offset=offset)
    assert qk.shape == (V, V)
    attn0 = model.blocks[0].attn
    with torch.no_grad():
        d = attn0.head_dim
        x = model.blocks[0].ln(model.tok_emb.weight)  # (V, E)
        v = x @ attn0.v_proj.weight[d:2 * d].T + attn0.v_proj.bias[d:2 * d]
        write = v @ attn0.out_proj.weight[:, d:2 * d].T  # (V, E) head 1 of layer 0
    a, b = torch.arange(V), torch.arange(V).roll(5)  # query token a, key token b
    resid = torch.zeros(V, 24, 64)
    resid[:, p_k] = write[b] + attn0.out_proj.bias.detach()
    resid[:, p_k + offset] = model.tok_emb.weight.detach()[a] + attn0.out_proj.bias.detach()
    _, cache = run_with_cache(model, torch.zeros(V, 24, dtype=torch.long),
                              names=["blocks.1.attn.hook_scores"],
                              extra_hooks=[("blocks.1.hook_resid_pre", lambda t, n: resid)])
    got = cache["blocks.1.attn.hook_scores"][:, 0, p_k + offset, p_k]  # (V,)
    assert_close(qk[a, b], got, "scores", atol=1e-4, rtol=1e-4)


def test_qk_errors_name_the_argument(setup):
    model, *_ = setup
    with pytest.raises(ValueError, match="source must be in an earlier layer"):
        qk_circuit_kcomposition(model, 0, 0, source=(0, 1), offset=1)
    with pytest.raises(ValueError, match="offset must be an integer"):
        qk_circuit_kcomposition(model, 1, 0, source=(0, 1), offset=-1)
