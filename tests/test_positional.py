import math

import numpy as np
import pytest
import torch

from attn_course.attention import sdpa_torch
from attn_course.multihead import MultiHeadAttention
from attn_course.positional import (
    apply_rope,
    rope_angles,
    rope_frequencies,
    rope_rotation_matrix,
    sinusoidal_encoding,
)
from attn_course.testing import assert_close


def sinusoidal_loop(T, E, base=10000.0, offset=0):
    """The formula of Vaswani et al. (2017), section 3.5, one entry at a time."""
    pe = np.zeros((T, E))
    for pos in range(offset, offset + T):
        for i in range(E // 2):
            angle = pos / base ** (2 * i / E)
            pe[pos - offset, 2 * i] = math.sin(angle)
            pe[pos - offset, 2 * i + 1] = math.cos(angle)
    return pe


def rope_complex(x, positions, base=10000.0):
    """RoPE as complex multiplication: pair (x_2i, x_2i+1) is z = x_2i + i x_2i+1, times e^{i p theta}."""
    x = np.asarray(x, dtype=np.float64)
    D = x.shape[-1]
    theta = np.array([base ** (-2 * i / D) for i in range(D // 2)])
    z = x[..., 0::2] + 1j * x[..., 1::2]
    z = z * np.exp(1j * np.asarray(positions, dtype=np.float64)[:, None] * theta)
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def rope_rotation_loop(x, positions, base=10000.0):
    """RoPE as an explicit 2x2 rotation of every feature pair of every row, in plain floats."""
    x = np.asarray(x, dtype=np.float64)
    T, D = x.shape[-2:]
    out = np.zeros_like(x)
    for idx in np.ndindex(*x.shape[:-2]):
        for t in range(T):
            for i in range(D // 2):
                a = float(positions[t]) * base ** (-2 * i / D)
                c, s = math.cos(a), math.sin(a)
                x0, x1 = float(x[idx][t, 2 * i]), float(x[idx][t, 2 * i + 1])
                out[idx][t, 2 * i] = c * x0 - s * x1
                out[idx][t, 2 * i + 1] = s * x0 + c * x1
    return out


@pytest.mark.parametrize(("T", "E", "base", "offset"), [(1, 2, 10000.0, 0), (7, 6, 10000.0, 0),
                                                        (50, 64, 10000.0, 3), (13, 10, 100.0, 0)])
def test_sinusoidal_matches_the_formula(T, E, base, offset):
    pe = sinusoidal_encoding(T, E, base=base, offset=offset)
    assert pe.shape == (T, E)
    assert pe.dtype == np.float64
    assert_close(pe, sinusoidal_loop(T, E, base, offset), "sinusoidal encoding")


def test_sinusoidal_offset_continues_the_table():
    assert_close(sinusoidal_encoding(5, 8, offset=7), sinusoidal_encoding(12, 8)[7:], "offset rows")


# (leading dims, T, D): a single row, non-powers of two, batch and head dims
ROPE_SHAPES = [((), 1, 2), ((), 9, 6), ((2,), 5, 8), ((2, 3), 7, 10), ((1, 4), 16, 32)]


@pytest.mark.parametrize("shape", ROPE_SHAPES)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_rope_matches_complex_and_loop_references(rng, shape, backend):
    lead, T, D = shape
    x = rng.standard_normal((*lead, T, D))
    positions = rng.integers(0, 500, size=T)  # arbitrary, not sorted
    for pos in (None, positions):
        p = np.arange(T) if pos is None else pos
        xin = torch.from_numpy(x) if backend == "torch" else x
        out = apply_rope(xin, positions=pos)
        assert type(out) is type(xin)
        assert out.shape == x.shape
        assert_close(out, rope_complex(x, p), f"RoPE ({backend}) vs complex numbers")
        assert_close(out, rope_rotation_loop(x, p), f"RoPE ({backend}) vs 2x2 rotation loop")


@pytest.mark.parametrize("dtype", [torch.float32, np.float32])
def test_rope_float32_and_custom_base(rng, dtype):
    x = rng.standard_normal((3, 11, 12))
    positions = np.arange(100, 111) + 0.5  # fractional positions are allowed
    xin = torch.from_numpy(x).to(dtype) if isinstance(dtype, torch.dtype) else x.astype(dtype)
    out = apply_rope(xin, positions, base=500.0)
    assert out.dtype == dtype
    assert_close(out, rope_complex(x, positions, base=500.0), "float32 RoPE")


def test_rope_range_positions_and_angles(rng):
    x = rng.standard_normal((2, 4, 6))
    assert_close(apply_rope(x, range(3, 7)), rope_complex(x, [3, 4, 5, 6]), "range positions")
    theta = rope_frequencies(6)
    assert_close(theta, np.array([1.0, 10000 ** (-1 / 3), 10000 ** (-2 / 3)]), "frequencies")
    assert_close(rope_angles([0, 2], 6), np.array([[0, 0, 0], 2 * theta]), "angles")


def test_rope_score_depends_only_on_the_offset(rng):
    D = 16
    q, k = rng.standard_normal((2, 1, D))
    def score(m, n):
        return float(apply_rope(q, [m])[0] @ apply_rope(k, [n])[0])
    for m, n in [(0, 0), (3, 7), (10, 2), (5, 5)]:
        for shift in (1, 13, 250):
            assert math.isclose(score(m, n), score(m + shift, n + shift), rel_tol=1e-9, abs_tol=1e-12)
    # ... and it does depend on the offset: the test above is not trivially true
    assert abs(score(0, 1) - score(0, 5)) > 1e-3
    # the whole score matrix of a shifted sequence equals the unshifted one
    Q, K = rng.standard_normal((2, 9, D))
    S0 = apply_rope(Q) @ apply_rope(K).T
    S1 = apply_rope(Q, np.arange(9) + 40) @ apply_rope(K, np.arange(9) + 40).T
    assert_close(S1, S0, "scores after shifting every position by 40")


def test_rotation_matrix_is_orthogonal_and_composes(rng):
    D = 8
    R3, R7 = rope_rotation_matrix(3, D), rope_rotation_matrix(7, D)
    assert_close(R3.T @ R3, np.eye(D), "R^T R")
    assert_close(R3.T @ R7, rope_rotation_matrix(4, D), "R_3^T R_7 = R_4")
    x = rng.standard_normal((1, D))
    assert_close(apply_rope(x, [3])[0], R3 @ x[0], "apply_rope vs its matrix")
    assert_close(np.linalg.norm(apply_rope(x, [123])), np.linalg.norm(x), "norm preserved")


def test_rope_gradient_matches_finite_differences():
    x = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: apply_rope(t, range(2, 7)), (x,))


def test_attention_without_positions_is_permutation_equivariant():
    torch.manual_seed(0)
    mha = MultiHeadAttention(12, 3).double()
    x = torch.randn(2, 7, 12, dtype=torch.float64)
    perm = torch.randperm(7)
    out = mha(x)[0]
    assert_close(mha(x[:, perm])[0], out[:, perm], "attention of permuted inputs")
    # with sinusoidal positions added, permuting the tokens changes more than the order
    pe = torch.from_numpy(sinusoidal_encoding(7, 12))
    with_pos = mha(x + pe)[0]
    assert (mha(x[:, perm] + pe)[0] - with_pos[:, perm]).abs().max() > 1e-3
    # with RoPE on queries and keys, likewise
    q, k, v = torch.randn(3, 1, 7, 8, dtype=torch.float64)
    def rope_attn(q, k, v):
        return sdpa_torch(apply_rope(q), apply_rope(k), v)
    assert (rope_attn(q[:, perm], k[:, perm], v[:, perm]) - rope_attn(q, k, v)[:, perm]).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("call", "exc", "words"),
    [
        (lambda: sinusoidal_encoding(4, 5), ValueError, ["E", "even", "5"]),
        (lambda: sinusoidal_encoding(0, 4), ValueError, ["T", "0"]),
        (lambda: sinusoidal_encoding(3, 4, offset=-1), ValueError, ["offset", "-1"]),
        (lambda: sinusoidal_encoding(3, 4, base=0), ValueError, ["base"]),
        (lambda: apply_rope(np.zeros((3, 5))), ValueError, ["x", "even", "(3, 5)"]),
        (lambda: apply_rope(np.zeros((3, 4)), positions=[0, 1]), ValueError, ["positions", "T=3", "(2,)"]),
        (lambda: apply_rope(np.zeros((3, 4), dtype=int)), TypeError, ["x", "floating"]),
        (lambda: apply_rope([[1.0, 2.0]]), TypeError, ["x", "list"]),
        (lambda: rope_rotation_matrix("3", 4), TypeError, ["position"]),
    ],
)
def test_bad_input_names_the_argument(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for w in words:
        assert w in str(info.value), str(info.value)


def test_long_term_decay_holds_for_the_aligned_part_only():
    """The module docstring's claim: q = k decays as sum_f |pair_f|^2 cos(offset theta_f);
    independent zero-mean q and k have expected score 0 at every offset."""
    rng = np.random.default_rng(3)
    D, offsets = 16, np.array([0, 1, 7, 50, 300])
    theta = 10000.0 ** (-np.arange(0, D, 2) / D)
    k = rng.standard_normal(D)
    rotated = apply_rope(np.broadcast_to(k, (len(offsets), D)), offsets)  # (offsets, D)
    pair_norms = k[0::2] ** 2 + k[1::2] ** 2  # (D/2,)
    expected = [math.fsum(pair_norms * np.cos(d * theta)) for d in offsets]
    assert_close(rotated @ k, np.array(expected), "q = k score against offset")
    q, kk = rng.standard_normal((2, 20000, D))
    for d in offsets:
        s = np.einsum("nd,nd->n", q, apply_rope(kk[:, None, :], [int(d)])[:, 0])
        assert abs(s.mean()) <= 4 * s.std() / np.sqrt(len(s)), (d, s.mean())
        assert abs(s.std() - np.sqrt(D)) < 0.1 * np.sqrt(D)  # the spread does not shrink either
