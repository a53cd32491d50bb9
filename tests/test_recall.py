"""Recall study (lecture 13): task formats, seeding, the mixers against references,
causality, and that every model can fit a tiny batch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attn_course.multihead import merge_heads, split_heads
from attn_course.positional import apply_rope
from attn_course.recall import (
    MIXERS,
    RecallLM,
    ShortConv,
    induction_batch,
    make_mixer,
    mqar_batch,
    mqar_layout,
    selective_copy_batch,
    state_size,
)
from attn_course.recall.mixers import ROPE_BASE
from attn_course.testing import assert_close
from tests.reference import attention_loop


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- data


@pytest.mark.parametrize(("B", "P", "T", "V"), [(3, 1, 4, 6), (5, 4, 16, 16), (4, 8, 37, 40), (2, 6, 24, 14)])
def test_mqar_format(B, P, T, V):
    inputs, targets, mask = mqar_batch(B, P, T, V, gen(1))
    assert inputs.shape == targets.shape == mask.shape == (B, T)
    assert inputs.dtype == targets.dtype == torch.long
    assert mask.dtype == torch.bool
    keys, values = mqar_layout(V)
    assert (inputs[:, 1:] == targets[:, :-1]).all()  # targets are the next tokens
    for b in range(B):
        seq = inputs[b].tolist() + [targets[b, -1].item()]
        ks, vs = seq[0:2 * P:2], seq[1:2 * P:2]
        assert len(set(ks)) == P
        assert all(k in keys for k in ks)
        assert all(v in values for v in vs)
        pairs = dict(zip(ks, vs, strict=True))
        asked = mask[b].nonzero().flatten().tolist()
        assert len(asked) == P
        assert min(asked) >= 2 * P
        assert sorted(inputs[b, asked].tolist()) == sorted(ks)  # every key asked exactly once
        for t in asked:
            assert targets[b, t].item() == pairs[inputs[b, t].item()]
        rest = [seq[i] for i in range(2 * P, T + 1) if i not in asked and i - 1 not in asked]
        assert all(tok == 0 for tok in rest)  # everything else is the filler


def test_mqar_seeding():
    a = mqar_batch(4, 3, 16, 16, gen(7))
    b = mqar_batch(4, 3, 16, 16, gen(7))
    c = mqar_batch(4, 3, 16, 16, gen(8))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_mqar_errors():
    with pytest.raises(ValueError, match=r"seq_len must be >= 4 \* n_pairs = 16 for n_pairs=4, got 15"):
        mqar_batch(2, 4, 15, 32)
    with pytest.raises(ValueError, match="vocab_size=8 has 3 key tokens"):
        mqar_batch(2, 4, 32, 8)
    with pytest.raises(ValueError, match="n_pairs must be an integer >= 1, got 0"):
        mqar_batch(2, 0, 32, 8)
    with pytest.raises(ValueError, match="batch_size"):
        mqar_batch(2.5, 1, 8, 8)


def test_selective_copy_format():
    B, n, T, V = 6, 3, 13, 9
    inputs, targets, mask = selective_copy_batch(B, n, T, V, gen(2))
    assert inputs.shape == targets.shape == mask.shape == (B, T)
    L = T - n
    for b in range(B):
        coloured = [tok for tok in inputs[b, :L].tolist() if tok != 0]
        assert len(coloured) == n
        assert all(2 <= tok < V for tok in coloured)
        assert inputs[b, L].item() == 1  # the separator
        assert targets[b][mask[b]].tolist() == coloured  # copied, in order
    assert mask.sum().item() == B * n
    assert torch.equal(selective_copy_batch(B, n, T, V, gen(2))[0], inputs)


def test_induction_format():
    B, T, V = 50, 12, 10
    inputs, targets, mask = induction_batch(B, T, V, gen(3))
    assert inputs.shape == targets.shape == mask.shape == (B, T)
    assert (mask.sum(dim=1) == 1).all()
    assert mask[:, -1].all()
    for b in range(B):
        row = inputs[b].tolist()
        triggers = [i for i, tok in enumerate(row) if tok == 1]
        assert len(triggers) == 2
        assert triggers[1] == T - 1
        assert targets[b, -1].item() == row[triggers[0] + 1]
    assert torch.equal(induction_batch(B, T, V, gen(3))[0], inputs)


# ---------------------------------------------------------------- mixers


def _mixer(name, E=8, seed=0, **options):
    torch.manual_seed(seed)
    if name == "sliding_window":
        options.setdefault("window", 3)
    if name in ("conv", "mamba"):
        options.setdefault("state_size", 4)
    return make_mixer(name, E, **options).double()


@pytest.mark.parametrize("name", sorted(MIXERS))
@pytest.mark.parametrize(("B", "T"), [(2, 7), (1, 11)])
def test_mixer_shape_and_causality(name, B, T):
    E = 8
    mixer = _mixer(name, E)
    x = torch.randn(B, T, E, dtype=torch.float64, requires_grad=True)
    out = mixer(x)
    assert out.shape == (B, T, E)
    # The gated convolution runs through an FFT, whose rounding leaks ~1e-16 of the
    # future into the past; every other mixer is exactly causal.
    leak = 1e-12 if name == "conv" else 0.0
    for t in range(T):
        (grad,) = torch.autograd.grad(out[:, t].sum(), x, retain_graph=True)
        future = grad[:, t + 1:].abs().max().item() if t + 1 < T else 0.0
        assert future <= leak * grad.abs().max().item(), f"{name}: output {t} depends on a later input"
        assert grad[:, t].abs().sum() > 0, f"{name}: output {t} ignores its own input"


def test_model_causality():
    T = 9
    for name in MIXERS:
        torch.manual_seed(0)
        model = RecallLM(name, 16, 8, window=3) if name == "sliding_window" else RecallLM(name, 16, 8)
        idx = torch.randint(0, 16, (2, T))
        base = model(idx)
        changed = idx.clone()
        changed[:, 5:] = (changed[:, 5:] + 1) % 16  # change the future of position 4
        if name == "conv":  # the FFT's rounding: equal to float32 precision, not bit for bit
            assert_close(model(changed)[:, :5], base[:, :5], f"{name} before the change")
        else:
            assert torch.equal(model(changed)[:, :5], base[:, :5]), name


def test_attention_mixer_matches_reference():
    B, T, E = 2, 6, 8
    mixer = _mixer("attention", E)
    x = torch.randn(B, T, E, dtype=torch.float64)
    a = mixer.attn
    q = apply_rope(split_heads(a.q_proj(x), 2), range(T), ROPE_BASE)
    k = apply_rope(split_heads(a.k_proj(x), 2), range(T), ROPE_BASE)
    v = split_heads(a.v_proj(x), 2)
    z = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert_close(mixer(x), a.out_proj(merge_heads(z)), "attention mixer")


@pytest.mark.parametrize("window", [1, 3, 20])
def test_sliding_window_mixer_matches_reference(window):
    B, T, E = 2, 10, 8
    mixer = _mixer("sliding_window", E, window=window)
    x = torch.randn(B, T, E, dtype=torch.float64)
    a = mixer.attn
    with torch.no_grad():
        q = apply_rope(split_heads(a.q_proj(x), 2), range(T), ROPE_BASE).numpy()
        k = apply_rope(split_heads(a.k_proj(x), 2), range(T), ROPE_BASE).numpy()
        v = split_heads(a.v_proj(x), 2).numpy()
        i, j = np.arange(T)[:, None], np.arange(T)[None, :]
        keep = (i - j >= 0) & (i - j < window)  # (T, T) band
        z, _ = attention_loop(q, k, v, keep=np.broadcast_to(keep, (B, 2, T, T)))
        expected = a.out_proj(merge_heads(torch.from_numpy(z)))
        assert_close(mixer(x), expected, "sliding-window mixer")


def test_linear_mixer_matches_loop():
    B, T, E, H = 2, 7, 8, 2
    mixer = _mixer("linear", E)
    x = torch.randn(B, T, E, dtype=torch.float64)
    a = mixer.attn
    with torch.no_grad():
        q, k, v = (split_heads(p(x), H).numpy() for p in (a.q_proj, a.k_proj, a.v_proj))
        phi = lambda u: np.where(u > 0, u + 1, np.exp(u))  # elu + 1  # noqa: E731
        z = np.zeros_like(v)
        for b in range(B):
            for h in range(H):
                kv, s = np.zeros((E // H, E // H)), np.zeros(E // H)
                for t in range(T):
                    kv += np.outer(phi(k[b, h, t]), v[b, h, t])
                    s += phi(k[b, h, t])
                    z[b, h, t] = phi(q[b, h, t]) @ kv / (phi(q[b, h, t]) @ s + 1e-6)
        expected = a.out_proj(merge_heads(torch.from_numpy(z)))
        assert_close(mixer(x), expected, "linear-attention mixer")


def test_conv_mixer_matches_recurrence():
    B, T, E, N = 2, 9, 4, 3
    mixer = _mixer("conv", E, state_size=N)
    x = torch.randn(B, T, E, dtype=torch.float64)
    with torch.no_grad():
        a, g = mixer.in_proj(x).chunk(2, dim=-1)
        A, Bm, C, dt = (t.numpy() for t in mixer.ssm.parameters_ABC())
        Abar = np.exp(dt[:, None] * A)  # zero-order hold, per channel and state
        Bbar = (Abar - 1) / A * Bm
        y = np.zeros((B, T, E))
        for b in range(B):
            h = np.zeros((E, N), complex)
            for t in range(T):
                h = Abar * h + Bbar * a[b, t].numpy()[:, None]
                y[b, t] = 2 * (h * C).sum(-1).real + mixer.ssm.D.numpy() * a[b, t].numpy()
        expected = mixer.out_proj(torch.from_numpy(y) * g)
        assert_close(mixer(x), expected, "gated-convolution mixer")


@pytest.mark.parametrize("chunk", [None, 4])
def test_mamba_mixer_matches_loop(chunk):
    B, T, E, N = 2, 10, 4, 3
    mixer = _mixer("mamba", E, state_size=N, chunk=chunk)
    x = torch.randn(B, T, E, dtype=torch.float64)
    with torch.no_grad():
        a, g = mixer.in_proj(x).chunk(2, dim=-1)
        u = torch.nn.functional.silu(a)
        delta, A, Bm, C = (t.numpy() for t in mixer.ssm.coefficients(u))
        u = u.numpy()
        y = np.zeros((B, T, E))
        for b in range(B):
            h = np.zeros((E, N))
            for t in range(T):
                h = np.exp(delta[b, t][:, None] * A) * h + (delta[b, t] * u[b, t])[:, None] * Bm[b, t][None]
                y[b, t] = h @ C[b, t] + mixer.ssm.D.numpy() * u[b, t]
        expected = mixer.out_proj(torch.from_numpy(y) * torch.nn.functional.silu(g))
        assert_close(mixer(x), expected, "Mamba mixer")


def test_short_conv_matches_loop():
    torch.manual_seed(0)
    conv = ShortConv(3, 4).double()
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    w, bias = conv.conv.weight[:, 0].detach(), conv.conv.bias.detach()  # (E, k): w[:, k-1] is x_t's
    expected = torch.zeros_like(x)
    for t in range(6):
        for i in range(4):
            if t - i >= 0:
                expected[:, t] += w[:, 3 - i] * x[:, t - i]
    assert_close(conv(x), expected + bias, "short convolution")


def test_state_sizes():
    E, T = 16, 50
    assert state_size(make_mixer("attention", E), T) == 2 * T * E
    assert state_size(make_mixer("sliding_window", E, window=8), T) == 2 * 8 * E
    assert state_size(make_mixer("linear", E, num_heads=2), T) == 2 * (8 * 8 + 8)
    assert state_size(make_mixer("conv", E, state_size=4), T) == 2 * E * 4
    assert state_size(make_mixer("mamba", E, state_size=4), T) == E * 4
    model = RecallLM("linear", 10, E, num_layers=3)
    assert model.state_size(T) == 3 * (2 * (8 * 8 + 8) + 3 * E)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="mixer must be one of .* got 'lstm'"):
        RecallLM("lstm", 10, 8)
    with pytest.raises(ValueError, match="width must be an integer >= 1, got 0"):
        make_mixer("linear", 0)
    with pytest.raises(ValueError, match=r"x must be a tensor of shape \(B, T, 8\), got \(2, 5, 4\)"):
        make_mixer("mamba", 8)(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match=r"idx must be an integer tensor .* got shape \(2, 5, 3\)"):
        RecallLM("conv", 10, 8)(torch.zeros(2, 5, 3, dtype=torch.long))


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_each_model_fits_a_tiny_batch(name):
    torch.manual_seed(0)
    options = {"window": 4} if name == "sliding_window" else {}
    model = RecallLM(name, 12, 16, **options)
    inputs, targets, mask = mqar_batch(8, 2, 8, 12, gen(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(inputs)[mask], targets[mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 0.8 * math.log(12), (name, losses[0])  # starts near chance
    assert losses[-1] < 0.5 * losses[0], (name, losses[0], losses[-1])


def test_train_and_score_are_seeded():
    from attn_course.recall.train import mqar_accuracy, new_model, train_mqar

    runs = []
    for _ in range(2):
        model = new_model("linear", 8, vocab_size=12, seed=3)
        losses = train_mqar(model, n_pairs=2, seq_len=8, steps=5, batch_size=4, seed=3, progress=False)
        runs.append((losses, mqar_accuracy(model, n_pairs=2, seq_len=8, n=20)))
    assert runs[0] == runs[1]
    assert len(runs[0][0]) == 5
    assert 0 <= runs[0][1] <= 1


# ---------------------------------------------------------------- shipped models


def test_shipped_models_load_and_fit_the_budget():
    from importlib import resources

    from attn_course.data.recall_models import load_recall_model
    from attn_course.recall.train import TASK, mqar_accuracy

    files = [resources.files("attn_course.data").joinpath(f"recall_{name}.pt") for name in MIXERS]
    assert sum(f.stat().st_size for f in files) <= 2 * 2**20  # <= 2 MB in all
    attention = load_recall_model("attention")
    assert not attention.training
    assert mqar_accuracy(attention, TASK["n_pairs"], TASK["seq_len"], n=100) >= 0.95
    for name in MIXERS:  # each loads into the model its module describes
        model = load_recall_model(name)
        assert model.config["mixer"] == name
    with pytest.raises(ValueError, match="mixer must be one of .* got 'rnn'"):
        load_recall_model("rnn")
