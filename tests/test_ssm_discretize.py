"""Euler, bilinear and zero-order-hold discretisations against scipy and closed forms."""

import importlib.util
import math

import numpy as np
import pytest
import torch

from attn_course.ssm.discretize import (
    METHODS,
    discrete_kernel,
    discretize,
    held_input_kernel,
    kernel_error,
)

HAVE_SCIPY = importlib.util.find_spec("scipy") is not None


@pytest.mark.skipif(not HAVE_SCIPY, reason="scipy (the reference) is not installed")
@pytest.mark.parametrize(("method", "scipy_name"),
                         [("euler", "euler"), ("bilinear", "bilinear"), ("zoh", "zoh")])
def test_matches_scipy_cont2discrete(method, scipy_name):
    from scipy.signal import cont2discrete

    a, b, dt = np.array([-0.3, -1.0, -4.0]), np.array([1.0, 0.5, 2.0]), 0.07
    Ad, Bd, *_ = cont2discrete((np.diag(a), b[:, None], np.ones((1, 3)), np.zeros((1, 1))),
                               dt, method=scipy_name)
    abar, bbar = discretize(a, b, dt, method)
    np.testing.assert_allclose(abar, np.diag(Ad), rtol=1e-12)
    np.testing.assert_allclose(bbar, Bd[:, 0], rtol=1e-12)


def test_complex_zoh_matches_the_matrix_exponential():
    a, b, dt = -0.5 + 2.0j, 1.0 + 0.5j, 0.3
    aug = torch.linalg.matrix_exp(dt * torch.tensor([[a, b], [0, 0]], dtype=torch.complex128))
    abar, bbar = discretize([a], [b], dt, "zoh")
    assert abs(abar[0] - aug[0, 0].item()) < 1e-12
    assert abs(bbar[0] - aug[0, 1].item()) < 1e-12
    assert discretize([a], [b], dt, "zoh_euler")[1][0] == pytest.approx(dt * b)


def test_held_input_kernel_equals_the_closed_form_integral():
    a, b, c, dt = np.array([-0.7 + 3j]), np.array([1.5]), np.array([0.3 - 0.2j]), 0.05
    l = np.arange(40)
    closed = 2 * (c * b * (np.exp(a * (l + 1) * dt) - np.exp(a * l * dt)) / a).real
    np.testing.assert_allclose(held_input_kernel(a, b, c, dt, 40), closed, rtol=1e-12,
                               atol=1e-15)
    # zero-order hold is exact for a held input, by construction
    np.testing.assert_allclose(discrete_kernel(a, b, c, dt, 40, "zoh"), closed, rtol=1e-10,
                               atol=1e-15)


def test_orders_of_convergence():
    a, b, c = np.array([-1.0, -3.0 + 2j]), np.ones(2), np.array([1.0, 0.5j])
    for method, order in (("euler", 1), ("bilinear", 2), ("zoh_euler", 1)):
        e1, e2 = (kernel_error(a, b, c, dt, 5.0, method) for dt in (0.02, 0.01))
        assert math.log2(e1 / e2) == pytest.approx(order, abs=0.15), method
    assert kernel_error(a, b, c, 0.5, 5.0, "zoh") < 1e-12


def test_euler_is_unstable_past_its_threshold():
    a, b = np.array([-0.5 + 3j]), np.ones(1)
    threshold = -2 * a.real[0] / abs(a[0]) ** 2  # |1 + dt a| = 1
    assert abs(discretize(a, b, 0.9 * threshold, "euler")[0][0]) < 1
    assert abs(discretize(a, b, 1.1 * threshold, "euler")[0][0]) > 1
    for method in ("bilinear", "zoh"):
        assert abs(discretize(a, b, 10.0, method)[0][0]) < 1


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="method must be one of"):
        discretize([-1.0], [1.0], 0.1, "rk4")
    with pytest.raises(ValueError, match="dt must be a finite number > 0"):
        discretize([-1.0], [1.0], 0.0)
    assert set(METHODS) == {"euler", "bilinear", "zoh", "zoh_euler"}
