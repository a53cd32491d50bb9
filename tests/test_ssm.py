import cmath
import math

import numpy as np
import pytest
import torch

from attn_course.efficient.linear import elu_feature_map, linear_attention
from attn_course.ssm import (
    S4D,
    SelectiveSSM,
    discretize_zoh,
    fft_causal_conv,
    s4d_convolutional,
    s4d_kernel,
    s4d_lin_init,
    s4d_recurrent,
    selective_scan_chunked,
    selective_scan_sequential,
    selective_scan_step,
)
from attn_course.testing import assert_close


def s4d_params(D, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = s4d_lin_init(D, N, dtype=torch.complex128)
    A = A - torch.rand(D, N, generator=g, dtype=torch.float64)  # vary the decay rates
    B = torch.randn(D, N, generator=g, dtype=torch.complex128)
    C = torch.randn(D, N, generator=g, dtype=torch.complex128)
    dt = torch.rand(D, generator=g, dtype=torch.float64) * 0.3 + 0.01
    return A, B, C, dt


def s4d_loop(u, A, B, C, dt):
    """y_t = sum_{s<=t} K_{t-s} u_s, K_l = 2 Re sum_n C Bbar Abar^l, with Python complex numbers."""
    batch, T, D = u.shape
    y = np.zeros((batch, T, D))
    for d in range(D):
        K = [0.0] * T
        for n in range(A.shape[1]):
            a, b, c, h = complex(A[d, n]), complex(B[d, n]), complex(C[d, n]), float(dt[d])
            abar, bbar = cmath.exp(h * a), (cmath.exp(h * a) - 1) / a * b
            power = 1.0 + 0j
            for lag in range(T):
                K[lag] += 2 * (c * bbar * power).real
                power *= abar
        for bi in range(batch):
            for t in range(T):
                y[bi, t, d] = math.fsum(K[t - s] * float(u[bi, s, d]) for s in range(t + 1))
    return y


def test_zoh_matches_the_matrix_exponential():
    A, B, _, dt = s4d_params(3, 4)
    Abar, Bbar = discretize_zoh(A, B, dt)
    for d in range(3):
        for n in range(4):
            # exp(dt [[a, b], [0, 0]]) = [[Abar, Bbar], [0, 1]]
            M = torch.tensor([[A[d, n], B[d, n]], [0, 0]], dtype=torch.complex128) * dt[d]
            E = torch.linalg.matrix_exp(M)
            assert_close(torch.view_as_real(Abar[d, n]), torch.view_as_real(E[0, 0]), "Abar")
            assert_close(torch.view_as_real(Bbar[d, n]), torch.view_as_real(E[0, 1]), "Bbar")


@pytest.mark.parametrize(("batch", "T", "D", "N"), [(1, 1, 1, 1), (2, 9, 3, 4), (1, 23, 2, 5)])
@pytest.mark.parametrize("impl", [s4d_recurrent, s4d_convolutional])
def test_s4d_forms_match_the_loop(impl, batch, T, D, N):
    A, B, C, dt = s4d_params(D, N, seed=T)
    u = torch.randn(batch, T, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert_close(impl(u, A, B, C, dt), s4d_loop(u, A, B, C, dt), impl.__name__)


def test_recurrent_equals_convolutional_on_a_long_sequence_and_state_carries_over():
    A, B, C, dt = s4d_params(4, 8, seed=5)
    u = torch.randn(2, 300, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = s4d_recurrent(u, A, B, C, dt)
    assert_close(y, s4d_convolutional(u, A, B, C, dt), "recurrent vs FFT convolution")
    y1, x1 = s4d_recurrent(u[:, :120], A, B, C, dt, return_state=True)
    y2 = s4d_recurrent(u[:, 120:], A, B, C, dt, x0=x1)
    assert_close(torch.cat([y1, y2], dim=1), y, "two halves with the state carried")


def test_kernel_is_the_impulse_response_and_fft_conv_matches_numpy():
    A, B, C, dt = s4d_params(2, 3, seed=6)
    K = s4d_kernel(A, B, C, dt, 12)  # (D, T)
    impulse = torch.zeros(1, 12, 2, dtype=torch.float64)
    impulse[0, 0] = 1.0
    assert_close(s4d_recurrent(impulse, A, B, C, dt)[0].T, K, "K = response to an impulse")
    g = torch.Generator().manual_seed(7)
    u = torch.randn(3, 12, 2, generator=g, dtype=torch.float64)
    y = fft_causal_conv(u, K)
    for b in range(3):
        for d in range(2):
            assert_close(y[b, :, d], np.convolve(u[b, :, d].numpy(), K[d].numpy())[:12], "conv")


def test_s4d_module_modes_agree_and_train():
    torch.manual_seed(0)
    m = S4D(5, 8)
    u = torch.randn(2, 40, 5)
    assert_close(m(u), m(u, mode="recurrent"), "conv vs recurrent", atol=1e-4)
    m(u).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def scan_loop(u, delta, A, B, C):
    """h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t, y_t = C_t . h_t, scalar by scalar in float64."""
    u, delta, A, B, C = (x.detach().double().numpy() for x in (u, delta, A, B, C))
    batch, T, D = u.shape
    N = A.shape[1]
    y = np.zeros((batch, T, D))
    for b in range(batch):
        for d in range(D):
            h = [0.0] * N
            for t in range(T):
                for n in range(N):
                    h[n] = math.exp(delta[b, t, d] * A[d, n]) * h[n] + delta[b, t, d] * u[b, t, d] * B[b, t, n]
                y[b, t, d] = math.fsum(C[b, t, n] * h[n] for n in range(N))
    return y


def scan_inputs(batch, T, D, N, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, T, D, generator=g, dtype=dtype)
    delta = torch.rand(batch, T, D, generator=g, dtype=dtype) + 0.05
    A = -torch.rand(D, N, generator=g, dtype=dtype) * 3 - 0.1
    B = torch.randn(batch, T, N, generator=g, dtype=dtype)
    C = torch.randn(batch, T, N, generator=g, dtype=dtype)
    return u, delta, A, B, C


@pytest.mark.parametrize(("batch", "T", "D", "N"), [(1, 1, 1, 1), (2, 13, 3, 4), (1, 20, 2, 3)])
def test_sequential_scan_matches_the_loop(batch, T, D, N):
    args = scan_inputs(batch, T, D, N, seed=T)
    assert_close(selective_scan_sequential(*args), scan_loop(*args), "sequential scan")


@pytest.mark.parametrize(("T", "chunk"), [(1, 4), (13, 4), (16, 4), (37, 8), (37, 1), (10, 64), (50, 7)])
@pytest.mark.parametrize("impl", [selective_scan_chunked])
def test_chunked_scan_equals_the_sequential_scan(impl, T, chunk):
    args = scan_inputs(2, T, 3, 4, seed=T + chunk)
    D_skip = torch.randn(3, dtype=torch.float64)
    y_seq, h_seq = selective_scan_sequential(*args, D_skip=D_skip, return_state=True)
    y, h = impl(*args, D_skip=D_skip, chunk=chunk, return_state=True)
    assert_close(y, y_seq, f"outputs, T={T}, chunk={chunk}")
    assert_close(h, h_seq, f"final state, T={T}, chunk={chunk}")


def test_chunked_scan_gradients_and_initial_state_match():
    u, delta, A, B, C = (x.requires_grad_() for x in scan_inputs(2, 19, 3, 4, seed=3))
    h0 = torch.randn(2, 3, 4, dtype=torch.float64)
    a = selective_scan_chunked(u, delta, A, B, C, h0=h0, chunk=5)
    b = selective_scan_sequential(u, delta, A, B, C, h0=h0)
    assert_close(a, b, "with an initial state")
    ga = torch.autograd.grad(a.square().sum(), (u, delta, A, B, C))
    gb = torch.autograd.grad(b.square().sum(), (u, delta, A, B, C))
    for name, x, y in zip(["u", "delta", "A", "B", "C"], ga, gb, strict=True):
        assert_close(x, y, f"d{name}")


def test_one_step_matches_the_formula():
    u, delta, A, B, C = scan_inputs(2, 1, 3, 4, seed=8)
    h = torch.randn(2, 3, 4, dtype=torch.float64)
    h2, y = selective_scan_step(h, u[:, 0], delta[:, 0], A, B[:, 0], C[:, 0])
    for b in range(2):
        for d in range(3):
            for n in range(4):
                expected = (math.exp(delta[b, 0, d] * A[d, n]) * h[b, d, n]
                            + delta[b, 0, d] * u[b, 0, d] * B[b, 0, n])
                assert abs(h2[b, d, n].item() - expected) < 1e-12
            assert abs(y[b, d].item() - float((C[b, 0] * h2[b, d]).sum())) < 1e-12


@pytest.mark.parametrize("impl", [selective_scan_sequential, selective_scan_chunked])
def test_a_scan_that_never_forgets_is_causal_linear_attention(impl):
    """A = 0, dt = 1, B_t = phi(k_t), C_t = phi(q_t), u = v: the numerator of linear attention."""
    g = torch.Generator().manual_seed(9)
    q, k, v = (torch.randn(2, 11, 4, generator=g, dtype=torch.float64) for _ in range(3))
    phi_q, phi_k = elu_feature_map(q), elu_feature_map(k)
    ones = torch.ones(2, 11, 1, dtype=torch.float64)
    num = impl(v, torch.ones_like(v), torch.zeros(4, 4, dtype=torch.float64), phi_k, phi_q)
    den = impl(ones, ones, torch.zeros(1, 4, dtype=torch.float64), phi_k, phi_q)
    assert_close(num / (den + 1e-6), linear_attention(q, k, v, causal=True), "scan vs linear attention")


def test_selective_ssm_module_loop_equals_chunks_and_is_causal():
    torch.manual_seed(0)
    m = SelectiveSSM(8, d_state=4)
    u = torch.randn(2, 30, 8)
    y = m(u, chunk=None)
    assert_close(m(u, chunk=7), y, "module: chunked vs loop", atol=1e-5)
    u2 = u.clone()
    u2[:, 20:] += 1.0
    assert torch.equal(m(u2, chunk=None)[:, :20], y[:, :20])
    delta, A, _, _ = m.coefficients(u)
    assert (delta > 0).all()
    assert (A < 0).all()


def test_bad_arguments_are_refused():
    u, delta, A, B, C = scan_inputs(1, 5, 2, 3)
    with pytest.raises(ValueError, match="delta"):
        selective_scan_sequential(u, delta[:, :4], A, B, C)
    with pytest.raises(ValueError, match=r"B must have shape \(batch, T, N\)"):
        selective_scan_chunked(u, delta, A, B[..., :2], C)
    with pytest.raises(ValueError, match="chunk"):
        selective_scan_chunked(u, delta, A, B, C, chunk=0)
    A4, B4, C4, dt = s4d_params(2, 3)
    with pytest.raises(ValueError, match="dt"):
        s4d_kernel(A4, B4, C4, -dt, 5)
    with pytest.raises(ValueError, match="negative real parts"):
        s4d_kernel(-A4, B4, C4, dt, 5)
    with pytest.raises(ValueError, match="u must be"):
        s4d_recurrent(torch.zeros(1, 5, 3), A4, B4, C4, dt)
