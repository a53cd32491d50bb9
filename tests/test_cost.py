import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attn_course.attention import sdpa_torch
from attn_course.cost import (
    IMPLEMENTATIONS,
    cpu_sdpa_backends,
    fit_loglog_slope,
    measure,
    peak_bytes_numpy,
    peak_bytes_torch,
    score_matrix_bytes,
    torch_sdpa_with,
    torch_threads,
)
from attn_course.testing import assert_close


def test_torch_peak_is_exact_on_known_allocations():
    assert peak_bytes_torch(lambda: torch.empty(1000, 1000)) == 4_000_000

    def alloc_free_alloc():
        a = torch.empty(1000, 1000)  # 4 MB
        b = torch.empty(500, 1000, dtype=torch.float64)  # 4 MB, held: 8 MB
        del a  # held: 4 MB
        c = torch.empty(3000, 1000)  # 12 MB, held: 16 MB (the peak)
        return b, c

    assert peak_bytes_torch(alloc_free_alloc) == 16_000_000
    assert peak_bytes_torch(lambda: None) == 0


def test_numpy_peak_is_exact_up_to_python_objects():
    peak = peak_bytes_numpy(lambda: np.ones((1000, 1000)))
    assert 8_000_000 <= peak < 8_000_000 + 4096

    def temporaries():
        x = np.ones(1_000_000)  # 8 MB
        y = x * 2  # 8 MB more
        z = x + y  # 8 MB more: 24 MB held at once
        del x, y  # freed: the peak stays 24 MB
        return z

    assert 24_000_000 <= peak_bytes_numpy(temporaries) < 24_000_000 + 4096


def test_math_path_materialises_the_scores_and_flash_does_not():
    B, H, T, D = 1, 2, 1024, 32
    q, k, v = torch.randn(3, B, H, T, D).unbind(0)
    scores = score_matrix_bytes(T, T, B, H)
    assert scores == B * H * T * T * 4
    math_peak = peak_bytes_torch(lambda: torch_sdpa_with("MATH")(q, k, v))
    ours_peak = peak_bytes_torch(lambda: sdpa_torch(q, k, v))
    assert math_peak >= scores
    assert ours_peak >= 2 * scores
    if "FLASH_ATTENTION" in cpu_sdpa_backends():
        flash_peak = peak_bytes_torch(lambda: torch_sdpa_with("FLASH_ATTENTION")(q, k, v))
        assert flash_peak < scores / 4, (flash_peak, scores)
        assert flash_peak >= q.nbytes  # at least the output


def test_cpu_backends_found_by_trying():
    found = cpu_sdpa_backends()
    assert "MATH" in found
    assert "EFFICIENT_ATTENTION" not in found
    assert "CUDNN_ATTENTION" not in found


@pytest.mark.parametrize("causal", [False, True])
def test_every_implementation_computes_attention(causal):
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(3, 2, 3, 37, 16, generator=g).unbind(0)
    expected = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=causal)
    for name, (fn, kind) in IMPLEMENTATIONS.items():
        if name.endswith("flash (CPU)") and "FLASH_ATTENTION" not in cpu_sdpa_backends():
            continue
        args = (q.numpy(), k.numpy(), v.numpy()) if kind == "numpy" else (q, k, v)
        assert_close(np.asarray(fn(*args, causal=causal)), expected, name, atol=1e-5, rtol=1e-4)


def test_measure_rows_and_slope_fit():
    rows = measure(["course sdpa_torch"], [16, 48], H=2, D=8, repeat=1)
    assert [r["T"] for r in rows] == [16, 48]
    assert all(r["seconds"] > 0 and r["peak_bytes"] >= r["score_bytes"] for r in rows)
    assert rows[1]["score_bytes"] == 2 * 48 * 48 * 4
    x = np.array([64, 128, 256, 512])
    k, c = fit_loglog_slope(x, 3e-9 * x**2.0)
    assert abs(k - 2.0) < 1e-9
    assert abs(c - 3e-9) < 1e-15


@pytest.mark.parametrize(
    ("call", "exc", "words"),
    [
        (lambda: score_matrix_bytes(0), ValueError, ["T", "0"]),
        (lambda: torch_sdpa_with("FAST"), ValueError, ["backend", "FAST", "MATH"]),
        (lambda: measure(["nope"], [8]), ValueError, ["nope", "course sdpa_numpy"]),
        (lambda: fit_loglog_slope([1, 2], [1, 0]), ValueError, ["positive"]),
        (lambda: fit_loglog_slope([1], [1]), ValueError, ["(1,)", ">= 2"]),
    ],
)
def test_bad_input_names_the_argument(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for w in words:
        assert w in str(info.value), str(info.value)


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("restored even on error")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
