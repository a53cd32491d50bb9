import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attn_course.attention import sdpa_torch
from attn_course.cost import (
    IMPLEMENTATIONS,
    cpu_sdpa_backends,
    fit_loglog,
    fit_loglog_slope,
    measure,
    median_iqr,
    peak_bytes_numpy,
    peak_bytes_torch,
    plot_cost,
    quadratic_regime,
    score_matrix_bytes,
    time_samples,
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
    rows = measure(["course sdpa_torch"], [16, 48], H=2, D=8, repeat=3)
    assert [r["T"] for r in rows] == [16, 48]
    assert all(r["seconds"] > 0 and r["peak_bytes"] >= r["score_bytes"] for r in rows)
    for r in rows:
        assert len(r["samples"]) == 3
        assert (r["seconds"], r["seconds_q1"], r["seconds_q3"]) == median_iqr(r["samples"])
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
        (lambda: fit_loglog([1, 2], [1, 2]), ValueError, ["(2,)", ">= 3"]),
        (lambda: fit_loglog([2, 2, 2], [1, 2, 3]), ValueError, ["2 distinct", "[2.0]"]),
        (lambda: fit_loglog([1, 2, 3], [1, 2, 3], level=95), ValueError, ["level", "95"]),
        (lambda: median_iqr([]), ValueError, ["samples", "(0,)"]),
        (lambda: quadratic_regime([1, 2], [1], 1e-3), ValueError, ["(2,)", "(1,)"]),
        (lambda: quadratic_regime([1, 2], [1, 2], 1e-3, share=1), ValueError, ["share", "1"]),
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


def test_fit_loglog_matches_scipy_linregress_and_its_interval_covers_95_percent():
    from scipy import stats

    rng = np.random.default_rng(0)
    x = np.repeat([128, 256, 384, 512, 768, 1024], 5).astype(float)
    covered = 0
    for trial in range(400):
        y = 3e-9 * x**2.0 * np.exp(rng.normal(0, 0.1, x.size))  # 10% multiplicative noise
        fit = fit_loglog(x, y)
        if trial == 0:  # the independent reference: scipy's regression and t quantile
            ref = stats.linregress(np.log(x), np.log(y))
            half = stats.t.ppf(0.975, x.size - 2) * ref.stderr
            assert abs(fit.slope - ref.slope) < 1e-12
            assert abs(fit.low - (ref.slope - half)) < 1e-12
            assert abs(fit.high - (ref.slope + half)) < 1e-12
            assert abs(np.log(fit.prefactor) - ref.intercept) < 1e-12
            assert fit.n == 30
        covered += fit.low <= 2.0 <= fit.high
    assert 0.92 <= covered / 400 <= 0.98, covered / 400


def test_fit_compare_reads_the_interval():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert fit_loglog(x, x**2.5 * np.array([1, 1.01, 0.99, 1])).compare(2) == "above 2"
    assert fit_loglog(x, x**1.5 * np.array([1, 1.01, 0.99, 1])).compare(2) == "below 2"
    assert fit_loglog(x, x**2 * np.array([1, 1.5, 0.7, 1.2])).compare(2) == "consistent with 2"


def test_median_iqr_and_time_samples():
    assert median_iqr([4.0, 1.0, 3.0, 2.0, 5.0]) == (3.0, 2.0, 4.0)
    samples = time_samples(lambda: time.sleep(0.002), repeat=3, min_time=1e-3)
    assert samples.shape == (3,)
    assert (samples >= 0.002).all()
    assert (samples < 0.2).all()


def test_quadratic_regime_finds_where_the_fixed_cost_is_small():
    T = np.array([16, 32, 64, 128, 256, 512, 1024, 2048], dtype=float)
    seconds = 1e-4 + 1e-9 * T**2  # the fixed cost is <= 10% of the time from T^2 >= 9e5: T >= 949
    assert quadratic_regime(T, seconds, fixed_seconds=1e-4) == 1024
    assert quadratic_regime(T, seconds, fixed_seconds=1e-4, share=0.5) == 512  # T >= 317
    assert quadratic_regime(T[::-1], seconds[::-1], fixed_seconds=1e-4) == 1024  # any order
    noisy = seconds.copy()
    noisy[6] = 5e-4  # one slow-looking dip below 10x the fixed cost after the start
    assert quadratic_regime(T, noisy, fixed_seconds=1e-4) == 2048
    assert quadratic_regime(T, seconds, fixed_seconds=1.0) is None


def test_plot_cost_legend_gives_the_fitted_slopes_with_intervals():
    import matplotlib

    matplotlib.use("Agg")
    rng = np.random.default_rng(1)
    rows = []
    for name, k in (("a", 2.0), ("b", 2.5)):
        for T in (64, 128, 256, 512):
            samples = (1e-9 * T**k * np.exp(rng.normal(0, 0.05, 4))).tolist()
            med, q1, q3 = median_iqr(samples)
            rows.append(dict(name=name, T=T, seconds=med, seconds_q1=q1, seconds_q3=q3, samples=samples,
                             peak_bytes=8 * T * T, score_bytes=4 * T * T))
    fig = plot_cost(rows, fit_from={"a": 128}, memory_fit_from=64)
    time_labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    used = [r for r in rows if r["name"] == "a" and r["T"] >= 128]
    f = fit_loglog([r["T"] for r in used for _ in r["samples"]], [s for r in used for s in r["samples"]])
    assert time_labels[0] == f"a  (slope {f.slope:.2f} [{f.low:.2f}, {f.high:.2f}])"
    assert time_labels[1] == "b"  # not in fit_from: no slope
    mem_labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert mem_labels[0].startswith("a  (slope 2.00 [2.00, 2.00])")
