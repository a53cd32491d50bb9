"""Associative scans of h_t = a_t h_{t-1} + b_t against a float64 numpy loop; their counts."""

import math

import numpy as np
import pytest
import torch

from attn_course.ssm import selective_scan_sequential
from attn_course.ssm.scan import (
    blelloch_scan,
    hillis_steele_scan,
    linear_recurrence_loop,
    selective_scan_associative,
)
from attn_course.testing import assert_close

SCANS = [linear_recurrence_loop, hillis_steele_scan, blelloch_scan]


def numpy_loop(a, b, h0=0.0):
    """h[:, t] = a[:, t] * h[:, t - 1] + b[:, t], time on axis 1, plain float64."""
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    h = np.zeros(a.shape)
    prev = np.broadcast_to(np.asarray(h0, np.float64), a[:, 0].shape)
    for t in range(a.shape[1]):
        prev = a[:, t] * prev + b[:, t]
        h[:, t] = prev
    return h


@pytest.mark.parametrize("scan", SCANS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("T", [1, 2, 3, 7, 8, 64, 100])
def test_every_scan_equals_the_numpy_loop(scan, T):
    g = torch.Generator().manual_seed(T)
    a = torch.rand(2, T, 3, generator=g, dtype=torch.float64) * 1.5  # some |a| > 1
    b = torch.randn(2, T, 3, generator=g, dtype=torch.float64)
    assert_close(scan(a, b), numpy_loop(a.numpy(), b.numpy()), scan.__name__)


@pytest.mark.parametrize("scan", SCANS, ids=lambda f: f.__name__)
def test_initial_state_broadcasting_and_other_time_axis(scan):
    g = torch.Generator().manual_seed(1)
    a = torch.rand(4, 1, generator=g, dtype=torch.float64)  # (batch, 1): broadcasts
    b = torch.randn(4, 13, 2, generator=g, dtype=torch.float64).transpose(0, 1)  # (T, batch, 2)
    h0 = torch.randn(4, 2, generator=g, dtype=torch.float64)
    expected = numpy_loop(np.broadcast_to(a.numpy()[:, None, :], (4, 13, 2)),
                          b.transpose(0, 1).numpy(), h0.numpy())
    got = scan(a[None].expand(13, 4, 2), b, dim=0, h0=h0).transpose(0, 1)
    assert_close(got, expected, scan.__name__)


@pytest.mark.parametrize("T", [1, 2, 5, 8, 100, 1024])
def test_work_and_depth(T):
    a, b = torch.ones(1, T), torch.zeros(1, T)
    _, loop = linear_recurrence_loop(a, b, return_counts=True)
    _, hs = hillis_steele_scan(a, b, return_counts=True)
    _, bl = blelloch_scan(a, b, return_counts=True)
    assert loop == {"work": T - 1, "depth": T - 1}
    log = math.ceil(math.log2(T)) if T > 1 else 0
    assert hs["depth"] == log
    assert hs["work"] == sum(T - 2**d for d in range(log))
    n = 2**log
    expected_work = (n - 1) + (n - log - 1) if T > 1 else 0  # up-sweep + down-sweep
    assert bl["work"] == expected_work
    assert bl["depth"] == max(0, 2 * log - 1)
    assert bl["work"] < 2 * n


def test_selective_scan_by_associative_scan_equals_the_loop():
    g = torch.Generator().manual_seed(2)
    u = torch.randn(2, 50, 3, generator=g, dtype=torch.float64)
    delta = torch.rand(2, 50, 3, generator=g, dtype=torch.float64) + 0.05
    A = -torch.rand(3, 4, generator=g, dtype=torch.float64) - 0.1
    B, C = torch.randn(2, 2, 50, 4, generator=g, dtype=torch.float64)
    expected = selective_scan_sequential(u, delta, A, B, C)
    for scan in SCANS:
        assert_close(selective_scan_associative(u, delta, A, B, C, scan=scan), expected,
                     scan.__name__)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="a and b must broadcast"):
        blelloch_scan(torch.ones(2, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="dim must index the time axis"):
        hillis_steele_scan(torch.ones(2, 3), torch.ones(2, 3), dim=2)
    with pytest.raises(TypeError, match="a must be a torch tensor"):
        linear_recurrence_loop(np.ones((2, 3)), torch.ones(2, 3))
