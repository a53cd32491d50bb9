import math

import numpy as np
import pytest
import torch

from attn_course.efficient.linear import (
    elu_feature_map,
    kernel_attention,
    linear_attention,
    linear_attention_recurrent,
    linear_attention_step,
)
from attn_course.testing import assert_close


def phi_loop(x):
    """elu(x) + 1 for one vector, element by element."""
    return [xi + 1.0 if xi > 0 else math.exp(xi) for xi in x]


def linear_attention_loop(q, k, v, causal, eps=1e-6, normalize=True):
    """Katharopoulos et al. (2020), eq. 4 (and 9 when causal), written out in float64.

    q (T, D), k (S, D), v (S, Dv) numpy arrays; one query at a time, no re-association.
    """
    T, S, Dv = q.shape[0], k.shape[0], v.shape[1]
    out = np.zeros((T, Dv))
    fk = [phi_loop(k[j]) for j in range(S)]
    for i in range(T):
        fq = phi_loop(q[i])
        sims = [math.fsum(a * b for a, b in zip(fq, fk[j], strict=True))
                for j in range(S) if not causal or j <= i]
        den = math.fsum(sims) + eps if normalize else 1.0
        for c in range(Dv):
            out[i, c] = math.fsum(s * v[j, c] for j, s in enumerate(sims)) / den
    return out


def loop_over_leading(q, k, v, **kw):
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    q, k, v = (np.broadcast_to(x, (*lead, *x.shape[-2:])) for x in (q, k, v))
    out = np.zeros((*lead, q.shape[-2], v.shape[-1]))
    for idx in np.ndindex(*lead):
        out[idx] = linear_attention_loop(q[idx], k[idx], v[idx], **kw)
    return out


# (leading dims of q, of k and v, T, S, D, Dv): non-powers of two, broadcasting, T != S.
SHAPES = [((), (), 1, 1, 1, 1), ((), (), 6, 6, 3, 2), ((2,), (2,), 9, 9, 5, 7),
          ((2, 3), (2, 3), 5, 5, 8, 4), ((3, 1), (1, 2), 7, 7, 4, 3)]


def make(shape, seed=0):
    lead_q, lead_kv, T, S, D, Dv = shape
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*lead_q, T, D, generator=g, dtype=torch.float64),
            torch.randn(*lead_kv, S, D, generator=g, dtype=torch.float64),
            torch.randn(*lead_kv, S, Dv, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("form", ["cumsum", "quadratic"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_parallel_forms_match_the_float64_loop(shape, causal, form):
    q, k, v = make(shape)
    out = linear_attention(q, k, v, causal=causal, form=form)
    assert_close(out, loop_over_leading(q, k, v, causal=causal), f"{form}, causal={causal}")


def test_cross_attention_with_t_different_from_s():
    q, k, v = make(((2,), (2,), 4, 11, 6, 3))
    assert_close(linear_attention(q, k, v), loop_over_leading(q, k, v, causal=False), "T != S")


@pytest.mark.parametrize("impl", [linear_attention_recurrent])
@pytest.mark.parametrize("shape", SHAPES)
def test_recurrent_form_matches_the_loop_and_the_parallel_form(impl, shape):
    q, k, v = make(shape, seed=1)
    out = impl(q, k, v)
    assert_close(out, loop_over_leading(q, k, v, causal=True), "recurrent vs loop")
    assert_close(out, linear_attention(q, k, v, causal=True), "recurrent vs cumsum form")


def test_unnormalised_identity_map_is_an_outer_product_memory():
    q, k, v = make(((), (), 5, 8, 4, 3), seed=2)
    out = linear_attention(q, k, v, feature_map=lambda x: x, normalize=False)
    assert_close(out, q @ (k.T @ v), "sum_j (q . k_j) v_j")
    causal = kernel_attention(q[:, :3], k[:5, :3], v[:5], causal=True, normalize=False, form="quadratic")
    expected = torch.stack([sum((q[i, :3] @ k[j, :3]) * v[j] for j in range(i + 1)) for i in range(5)])
    assert_close(causal, expected, "causal unnormalised")


def test_state_has_constant_size_and_one_step_matches_the_formula():
    g = torch.Generator().manual_seed(3)
    kv = torch.rand(2, 4, 3, generator=g, dtype=torch.float64)
    z = torch.rand(2, 4, generator=g, dtype=torch.float64)
    q_t, k_t = torch.randn(2, 4, generator=g, dtype=torch.float64), torch.randn(2, 4, generator=g, dtype=torch.float64)
    v_t = torch.randn(2, 3, generator=g, dtype=torch.float64)
    kv2, z2, out = linear_attention_step(kv, z, q_t, k_t, v_t)
    assert kv2.shape == kv.shape
    assert z2.shape == z.shape
    for b in range(2):
        fq, fk = phi_loop(q_t[b].tolist()), phi_loop(k_t[b].tolist())
        new_kv = kv[b].numpy() + np.outer(fk, v_t[b].numpy())
        new_z = z[b].numpy() + np.array(fk)
        expected = np.array(fq) @ new_kv / (np.array(fq) @ new_z + 1e-6)
        assert_close(kv2[b], new_kv, "state update")
        assert_close(out[b], expected, "output")


def test_causal_outputs_never_depend_on_future_tokens():
    q, k, v = make(((2,), (2,), 8, 8, 4, 4), seed=4)
    out = linear_attention(q, k, v, causal=True)
    k2, v2 = k.clone(), v.clone()
    k2[:, 5:] += 10.0
    v2[:, 5:] -= 3.0
    out2 = linear_attention(q, k2, v2, causal=True)
    assert torch.equal(out[:, :5], out2[:, :5])
    assert not torch.allclose(out[:, 5:], out2[:, 5:])


def test_float32_and_gradients_match_the_quadratic_form():
    q, k, v = (x.requires_grad_() for x in make(((2,), (2,), 10, 10, 6, 5), seed=5))
    a = linear_attention(q, k, v, causal=True)
    b = linear_attention(q, k, v, causal=True, form="quadratic")
    for x, ga, gb in zip("qkv", torch.autograd.grad(a.sum(), (q, k, v)),
                         torch.autograd.grad(b.sum(), (q, k, v)), strict=True):
        assert_close(ga, gb, f"d{x}")
    q32, k32, v32 = (x.detach().float() for x in (q, k, v))
    assert_close(linear_attention(q32, k32, v32, causal=True), b, "float32")


def test_feature_map_is_positive():
    x = torch.linspace(-30, 30, 101, dtype=torch.float64)
    assert (elu_feature_map(x) > 0).all()


def test_bad_arguments_are_refused():
    q = torch.zeros(5, 3)
    with pytest.raises(ValueError, match="T == S"):
        linear_attention(q, torch.zeros(6, 3), torch.zeros(6, 2), causal=True)
    with pytest.raises(ValueError, match="form"):
        linear_attention(q, q, q, form="chunked")
    with pytest.raises(TypeError, match="q must be a torch tensor"):
        linear_attention(np.zeros((5, 3)), q, q)
    with pytest.raises(ValueError, match="same last dimension"):
        linear_attention(q, torch.zeros(5, 4), q)
    with pytest.raises(ValueError, match="state"):
        linear_attention_step(torch.zeros(3, 3), torch.zeros(3), q[0], q[0], torch.zeros(2))
