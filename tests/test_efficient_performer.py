"""Performer / FAVOR+. The statistical tests use fixed seeds, so they are deterministic;
their tolerances are chosen so that a correct estimator would fail them with a
probability of about 1e-4 over seeds, and a 5% bias is caught (tested too)."""

import math

import pytest
import torch

from attn_course.attention import sdpa_torch
from attn_course.efficient.linear import kernel_attention
from attn_course.efficient.performer import (
    orthogonal_random_features,
    performer_attention,
    positive_random_features,
    softmax_kernel_estimate,
)
from attn_course.testing import assert_close

Z = 4.0  # |mean - exact| <= Z standard errors: P(|N(0,1)| > 4) = 6e-5


def kernel_estimates(x, y, draws, num_features, orthogonal, seed):
    """One estimate of exp(x . y) per independent draw of W: (draws,).

    Each draw is one orthogonal block (num_features == D), so one call of
    orthogonal_random_features draws them all: its blocks are independent.
    """
    D = x.shape[-1]
    assert num_features == D
    W = orthogonal_random_features(draws * D, D, generator=torch.Generator().manual_seed(seed),
                                   dtype=torch.float64, orthogonal=orthogonal)
    W = W.reshape(draws, D, D)  # (draws, M, D)
    return softmax_kernel_estimate(x, y, W)[:, 0, 0]  # (draws, 1, 1) -> (draws,)


def z_score(estimates, exact):
    se = estimates.std() / math.sqrt(len(estimates))  # standard error of the mean
    return ((estimates.mean() - exact) / se).item()


@pytest.mark.parametrize("orthogonal", [True, False])
@pytest.mark.parametrize("pair", [0, 1, 2])
def test_softmax_kernel_estimate_is_unbiased(pair, orthogonal):
    g = torch.Generator().manual_seed(100 + pair)
    D = 6
    x = 0.4 * torch.randn(1, D, generator=g, dtype=torch.float64)
    y = 0.4 * torch.randn(1, D, generator=g, dtype=torch.float64)
    exact = math.exp((x * y).sum().item())
    est = kernel_estimates(x, y, draws=20000, num_features=D, orthogonal=orthogonal, seed=pair)
    z = z_score(est, exact)
    assert abs(z) <= Z, f"mean {est.mean():.5f} vs exact {exact:.5f}: {z:.2f} standard errors"
    # the same test has the power to see a 5% bias
    assert abs(z_score(1.05 * est, exact)) > Z


def test_rows_are_gaussian_and_orthogonal_in_blocks():
    D, M = 5, 12
    W = orthogonal_random_features(M, D, generator=torch.Generator().manual_seed(0),
                                   dtype=torch.float64)
    assert W.shape == (M, D)
    for start in range(0, M, D):
        block = W[start:start + D]
        gram = block @ block.T
        assert_close(gram - torch.diag(torch.diagonal(gram)), torch.zeros_like(gram),
                     "rows within a block are orthogonal", atol=1e-12)
    # squared row norms follow chi^2(D): mean D, variance 2D
    many = orthogonal_random_features(4000, D, generator=torch.Generator().manual_seed(1),
                                      dtype=torch.float64)
    sq = many.square().sum(dim=-1)
    assert abs(sq.mean().item() - D) <= Z * math.sqrt(2 * D / len(sq))
    # and each coordinate is N(0, 1): mean 0, variance 1
    assert many.mean(dim=0).abs().max().item() <= Z / math.sqrt(len(many))
    assert (many.var(dim=0) - 1).abs().max().item() <= Z * math.sqrt(2 / len(many))
    again = orthogonal_random_features(M, D, generator=torch.Generator().manual_seed(0),
                                       dtype=torch.float64)
    assert torch.equal(W, again), "the same seed gives the same features"


def relative_error(M, q, k, v, seeds=range(6)):
    exact = sdpa_torch(q, k, v)
    errs = [((performer_attention(q, k, v, num_features=M,
                                  generator=torch.Generator().manual_seed(s)) - exact).norm()
             / exact.norm()).item() for s in seeds]
    return sum(errs) / len(errs)


def test_error_falls_as_the_number_of_features_grows():
    g = torch.Generator().manual_seed(7)
    q, k = (0.5 * torch.randn(2, 40, 16, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(2, 40, 16, generator=g, dtype=torch.float64)
    errs = [relative_error(M, q, k, v) for M in (16, 64, 256)]
    # the error should shrink like 1/sqrt(M): by 2x per 4x features; demand 1.4x
    assert errs[0] > 1.4 * errs[1] > 1.4 * 1.4 * errs[2], errs


@pytest.mark.parametrize("causal", [False, True])
def test_attention_equals_normalised_kernel_estimates(causal):
    """The stabilisers cancel: the output is sum_j K_ij v_j / sum_j K_ij with K the
    unstabilised estimate of exp(q_i . k_j * scale)."""
    g = torch.Generator().manual_seed(3)
    q, k = (torch.randn(2, 9, 4, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(2, 9, 3, generator=g, dtype=torch.float64)
    W = orthogonal_random_features(10, 4, generator=g, dtype=torch.float64)
    scale = 0.8
    K = softmax_kernel_estimate(q * math.sqrt(scale), k * math.sqrt(scale), W)  # (2, 9, 9)
    if causal:
        K = K.tril()
    expected = (K @ v) / K.sum(dim=-1, keepdim=True)
    out = performer_attention(q, k, v, W=W, scale=scale, causal=causal, eps=0.0)
    assert_close(out, expected, "performer vs normalised estimates")


def test_features_are_positive_and_stabilisers_only_rescale():
    g = torch.Generator().manual_seed(4)
    x = 3 * torch.randn(2, 7, 5, generator=g, dtype=torch.float64)
    W = orthogonal_random_features(8, 5, generator=g, dtype=torch.float64)
    plain = positive_random_features(x, W)
    assert (plain > 0).all()
    assert plain.shape == (2, 7, 8)
    row = positive_random_features(x, W, stabilizer="row")
    every = positive_random_features(x, W, stabilizer="all")
    assert row.amax(dim=-1).allclose(torch.full((2, 7), 1 / math.sqrt(8), dtype=torch.float64))
    ratio_row = plain / row  # one constant per row
    assert_close(ratio_row, ratio_row[..., :1].expand_as(ratio_row), "row stabiliser", rtol=1e-9)
    ratio_all = plain / every  # one constant per leading index
    assert_close(ratio_all, ratio_all[:, :1, :1].expand_as(ratio_all), "all stabiliser", rtol=1e-9)
    # kernel attention with either form of the key features gives the same output
    assert_close(kernel_attention(row, every, x, eps=0.0), kernel_attention(row, plain, x, eps=0.0),
                 "stabilised keys")


def test_bad_arguments_are_refused():
    q = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="num_features"):
        performer_attention(q, q, q)
    with pytest.raises(ValueError, match=r"W must have shape \(R, D\)"):
        positive_random_features(q, torch.zeros(5, 3))
    with pytest.raises(ValueError, match="stabilizer"):
        positive_random_features(q, torch.zeros(5, 4), stabilizer="max")
    with pytest.raises(ValueError, match="num_features"):
        orthogonal_random_features(0, 4)
