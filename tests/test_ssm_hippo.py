"""HiPPO-LegS and the S4D initialisations, against their definitions written as loops."""

import math

import numpy as np
import pytest

from attn_course.ssm import s4d_lin_init
from attn_course.ssm.hippo import hippo_legs, legs_normal_part, s4d_inv, s4d_legs, s4d_lin


def legs_loop(N):
    A = np.zeros((N, N))
    for n in range(N):
        for k in range(N):
            if n > k:
                A[n, k] = -math.sqrt(2 * n + 1) * math.sqrt(2 * k + 1)
            elif n == k:
                A[n, k] = -(n + 1)
    return A


@pytest.mark.parametrize("N", [1, 2, 5, 16])
def test_hippo_legs_matches_its_definition(N):
    np.testing.assert_array_equal(hippo_legs(N), legs_loop(N))


@pytest.mark.parametrize("N", [2, 8, 64])
def test_normal_part_is_minus_half_identity_plus_skew(N):
    AN, P = legs_normal_part(N)
    np.testing.assert_allclose(AN + AN.T, -np.eye(N), atol=1e-12)
    np.testing.assert_allclose(AN - np.outer(P, P), legs_loop(N), atol=1e-12)
    ev = s4d_legs(N)
    assert ev.shape == (N // 2,)
    np.testing.assert_allclose(ev.real, -0.5, atol=1e-8)
    assert np.all(np.diff(ev.imag) > 0)


def test_closed_forms_by_hand():
    # N = 4: n = 0, 1 give (4 / pi) * (4 - 1) and (4 / pi) * (4 / 3 - 1)
    np.testing.assert_allclose(s4d_inv(4), [-0.5 + 4j / (3 * math.pi), -0.5 + 12j / math.pi])
    np.testing.assert_allclose(s4d_lin(4), [-0.5, -0.5 + 1j * math.pi])
    np.testing.assert_allclose(s4d_lin(8), s4d_lin_init(1, 4).numpy()[0], rtol=1e-6)


def test_s4d_inv_approximates_s4d_legs():
    for N in (16, 64):
        ratio = s4d_inv(N).imag / s4d_legs(N).imag
        assert np.all((ratio > 0.75) & (ratio < 1.25)), ratio  # within 25% everywhere
        lin = s4d_lin(N).imag[1:] / s4d_legs(N).imag[1:]
        assert lin.max() / lin.min() > 3  # a different law: linear, not inverse


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="N must be an even integer"):
        s4d_inv(5)
    with pytest.raises(ValueError, match="N must be a positive integer"):
        hippo_legs(0)
