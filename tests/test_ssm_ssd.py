"""Mamba-2's scalar-A chunked scan against a float64 numpy loop and the course's scan."""

import numpy as np
import pytest
import torch

from attn_course.ssm import selective_scan_sequential
from attn_course.ssm.ssd import expand_scalar_A, ssd_chunked, ssd_sequential
from attn_course.testing import assert_close


def numpy_loop(u, dt, a, B, C):
    """h_t = exp(dt_t a_h) h_{t-1} + dt_t u_t B_t^T, y_t = h_t C_t; plain float64 loops."""
    u, dt, a, B, C = (np.asarray(x, dtype=np.float64) for x in (u, dt, a, B, C))
    batch, T, H, P = u.shape
    N = B.shape[-1]
    y = np.zeros((batch, T, H, P))
    h = np.zeros((batch, H, P, N))
    for b in range(batch):
        for t in range(T):
            for hd in range(H):
                decay = np.exp(dt[b, t, hd] * a[hd])
                for p in range(P):
                    for n in range(N):
                        h[b, hd, p, n] = decay * h[b, hd, p, n] + dt[b, t, hd] * u[b, t, hd, p] * B[b, t, n]
                    y[b, t, hd, p] = sum(h[b, hd, p, n] * C[b, t, n] for n in range(N))
    return y, h


def inputs(batch=2, T=23, H=3, P=4, N=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, T, H, P, generator=g, dtype=dtype)
    dt = torch.rand(batch, T, H, generator=g, dtype=dtype) * 0.5 + 0.01
    a = -torch.rand(H, generator=g, dtype=dtype) * 2 - 0.1
    B, C = torch.randn(2, batch, T, N, generator=g, dtype=dtype)
    return u, dt, a, B, C


@pytest.mark.parametrize("chunk", [1, 4, 7, 23, 64])
def test_chunked_equals_the_numpy_loop(chunk):
    u, dt, a, B, C = inputs()
    y_ref, h_ref = numpy_loop(u, dt, a, B, C)
    y, h = ssd_chunked(u, dt, a, B, C, chunk=chunk, return_state=True)
    assert_close(y, y_ref, "y")
    assert_close(h, h_ref, "final state")
    y_seq, h_seq = ssd_sequential(u, dt, a, B, C, return_state=True)
    assert_close(y_seq, y_ref, "y (loop)")
    assert_close(h_seq, h_ref, "final state (loop)")


def test_it_is_the_selective_scan_with_a_scalar_A_per_head():
    u, dt, a, B, C = inputs(T=40, seed=1)
    u_e, delta, A = expand_scalar_A(u, dt, a, N=B.shape[-1])
    assert A.shape == (3 * 4, 5)
    y_course = selective_scan_sequential(u_e, delta, A, B, C)  # (batch, T, E)
    assert_close(ssd_chunked(u, dt, a, B, C, chunk=16).reshape(y_course.shape), y_course, "y")


def test_float32_within_tolerance():
    u, dt, a, B, C = inputs(T=200, seed=2, dtype=torch.float32)
    y_ref, _ = numpy_loop(u, dt, a, B, C)
    assert_close(ssd_chunked(u, dt, a, B, C, chunk=64), y_ref, "y float32")


def test_errors_name_the_argument():
    u, dt, a, B, C = inputs()
    with pytest.raises(ValueError, match=r"a must have shape \(H,\)"):
        ssd_chunked(u, dt, a[:, None], B, C)
    with pytest.raises(ValueError, match=r"dt must have shape \(batch, T, H\)"):
        ssd_chunked(u, dt[..., :1], a, B, C)
    with pytest.raises(ValueError, match="B and C must have shape"):
        ssd_chunked(u, dt, a, B, C[:, :5])
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        ssd_chunked(u, dt, a, B, C, chunk=0)
    with pytest.raises(ValueError, match=r"u must have shape \(batch, T, H, P\)"):
        ssd_chunked(u[0], dt, a, B, C)
