"""Measuring what attention costs: time and peak memory against sequence length (lecture 08).

Standard attention builds the full score matrix: for B sequences, H heads and T queries
against S keys it computes and stores B * H * T * S numbers, so its arithmetic grows
like T^2 (at fixed D) and so does its memory. Measured time need not follow the
arithmetic exactly: once the T x T arrays outgrow the processor's caches each score can
cost more, and the measured exponent can come out above 2. On a log-log plot a power
law y = c * T^k is a straight line of slope k, which is what :func:`fit_loglog` (with
an interval) and :func:`fit_loglog_slope` (the slope alone) measure.

Implementations compared (all on the CPU, ``IMPLEMENTATIONS``):

- the course's ``sdpa_numpy`` and ``sdpa_torch`` (lecture 03), which materialise the
  scores, probabilities and a few temporaries of the same size;
- PyTorch's ``scaled_dot_product_attention`` with each backend that runs on the CPU.
  In PyTorch 2.x the CPU has exactly two: ``MATH`` (the composite reference: matmul,
  softmax, matmul, materialising the scores) and ``FLASH_ATTENTION``, a fused kernel
  (``aten::_scaled_dot_product_flash_attention_for_cpu``) that walks over blocks of
  queries and keys with an online softmax and never stores the T x S matrix.
  ``EFFICIENT_ATTENTION`` and ``CUDNN_ATTENTION`` are CUDA-only; on the CPU they raise
  "No viable backend" (see :func:`cpu_sdpa_backends`, which tries each one). The
  backend is chosen with ``torch.nn.attention.sdpa_kernel``; the older
  ``torch.backends.cuda.sdp_kernel`` switches only affect CUDA tensors.

How memory is measured, and why this way:

- numpy: :mod:`tracemalloc`. numpy reports every array buffer it allocates to
  tracemalloc, so ``get_traced_memory()``'s peak is the exact high-water mark of the
  bytes allocated during the call (plus a few hundred bytes of Python objects).
- torch on the CPU: there is no ``torch.cpu.max_memory_allocated``. The profiler with
  ``profile_memory=True`` records every allocation and free of PyTorch's CPU allocator
  as a ``[memory]`` event with a signed byte count; the running sum of those events in
  time order, maximised, is the peak of the bytes held by tensors created during the
  call. This is exact to the byte for tensors (tested on known allocations), including
  the fused kernel's scratch buffers. The process's resident set size (RSS, e.g. from
  psutil) is not: the allocator returns large blocks to the OS lazily and RSS counts
  pages, not bytes, so its deltas are noisy and can even be zero.

How time is reported, and slopes fitted: :func:`time_samples` times a call several
times; :func:`measure` reports the median with the interquartile range (IQR) as its
spread. :func:`fit_loglog` fits log(seconds) against log(T) through every repeat (not
only the medians) and returns the slope with a 95% t-interval from the regression. At
small T fixed per-call costs (Python, dispatch, allocation) flatten the curve, so a
slope that is to say something about the T^2 term is fitted only where that term
dominates: :func:`quadratic_regime` finds the lengths where the fixed cost of a call,
measured at a tiny length, is at most 10% of the time.

Caveats: wall-clock timings on a machine that may be running other work; the interval
assumes independent errors, which repeats taken one after the other only approximate (a
burst of other work slows several in a row), so read it as a lower bound on the
uncertainty. Peak memory counts what the call
allocates on top of its inputs (including its output). The profiler's own bookkeeping
is not counted, but it makes the call slower, so time and memory are measured in
separate runs.
"""

from __future__ import annotations

import contextlib
import gc
import math
import numbers
import os
import platform
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from attn_course.attention import sdpa_numpy, sdpa_torch

__all__ = [
    "IMPLEMENTATIONS",
    "cpu_sdpa_backends",
    "fit_loglog",
    "fit_loglog_slope",
    "measure",
    "median_iqr",
    "peak_bytes_numpy",
    "peak_bytes_torch",
    "plot_cost",
    "quadratic_regime",
    "score_matrix_bytes",
    "time_call",
    "time_samples",
    "torch_sdpa_with",
    "torch_threads",
]


def cpu_name() -> str:
    """The processor's model name (Linux's /proc/cpuinfo), for stamping benchmark results."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _require_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the ``with`` block with ``n`` intra-op torch threads (None: leave as is), then restore.

    Small models do many tiny operations, and for those one thread is often the fastest:
    splitting a 48 x 48 matrix product over several threads costs more in
    synchronisation than it saves, and on a machine busy with other work a thread that
    waits for a descheduled sibling can make each step many times slower.
    """
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(_require_int("n", n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def score_matrix_bytes(T: int, S: int | None = None, B: int = 1, H: int = 1,
                       dtype=torch.float32) -> int:
    """Bytes of one (B, H, T, S) score matrix: ``B * H * T * S * itemsize``."""
    S = T if S is None else S
    for name, val in (("T", T), ("S", S), ("B", B), ("H", H)):
        _require_int(name, val)
    itemsize = dtype.itemsize if isinstance(dtype, torch.dtype) else np.dtype(dtype).itemsize
    return B * H * T * S * itemsize


def time_call(fn: Callable[[], object], repeat: int = 5, min_time: float = 2e-3) -> float:
    """Seconds per call of ``fn()``: the minimum over ``repeat`` timed runs.

    Each run calls ``fn`` enough times to last about ``min_time`` seconds (as ``timeit``
    does), after one untimed warm-up call. The minimum, not the mean, is reported: on a
    shared machine every other process can only make a run slower.
    """
    _require_int("repeat", repeat)
    t0 = time.perf_counter()
    fn()  # warm-up: first-call allocations, lazy initialisation
    first = time.perf_counter() - t0
    number = max(1, math.ceil(min_time / max(first, 1e-9)))
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def time_samples(fn: Callable[[], object], repeat: int = 7, min_time: float = 2e-3) -> np.ndarray:
    """Seconds per call of ``fn()`` in each of ``repeat`` timed runs, after one warm-up call.

    Each run calls ``fn`` enough times to last about ``min_time`` seconds and records the
    mean time per call. Summarise with :func:`median_iqr`.
    """
    _require_int("repeat", repeat)
    t0 = time.perf_counter()
    fn()  # warm-up: first-call allocations, lazy initialisation
    first = time.perf_counter() - t0
    number = max(1, math.ceil(min_time / max(first, 1e-9)))
    out = np.empty(repeat)
    for i in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        out[i] = (time.perf_counter() - t0) / number
    return out


def median_iqr(samples) -> tuple[float, float, float]:
    """(median, first quartile, third quartile) of ``samples``: a timing and its spread."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1 or x.size < 1:
        raise ValueError(f"samples must be a non-empty 1-D sequence, got shape {x.shape}")
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    return float(med), float(q1), float(q3)


@dataclass(frozen=True)
class LoglogFit:
    """A least-squares line through (log x, log y): y ~ prefactor * x**slope.

    ``low`` and ``high`` bound the slope's ``level`` confidence interval (t-interval of
    the regression, ``n - 2`` degrees of freedom); ``n`` is the number of points.
    """

    slope: float
    prefactor: float
    low: float
    high: float
    level: float
    n: int

    def compare(self, value: float = 2.0) -> str:
        """"consistent with 2", "above 2" or "below 2": where ``value`` lies from the interval."""
        if self.low > value:
            return f"above {value:g}"
        if self.high < value:
            return f"below {value:g}"
        return f"consistent with {value:g}"

    def __str__(self) -> str:
        return (f"{self.slope:.2f} [{self.low:.2f}, {self.high:.2f}] "
                f"({self.level:.0%} interval, {self.n} points)")


def fit_loglog(x, y, level: float = 0.95) -> LoglogFit:
    """Fit log y = log c + k log x by least squares, with a ``level`` t-interval for k.

    x may repeat (several timings per length): every point counts. Needs at least 3
    points and 2 distinct x for an interval.
    """
    from scipy import stats

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 3:
        raise ValueError(f"x and y must be 1-D of the same length >= 3, got shapes {x.shape} and {y.shape}")
    if np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("x and y must be positive to take logarithms")
    if np.unique(x).size < 2:
        raise ValueError(f"x must take at least 2 distinct values, got {np.unique(x).tolist()}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    lx, ly = np.log(x), np.log(y)
    sxx = ((lx - lx.mean()) ** 2).sum()
    k = ((lx - lx.mean()) * (ly - ly.mean())).sum() / sxx
    b = ly.mean() - k * lx.mean()
    resid = ly - (b + k * lx)
    n = x.size
    se = math.sqrt((resid ** 2).sum() / (n - 2) / sxx)
    half = float(stats.t.ppf(0.5 + level / 2, n - 2)) * se
    return LoglogFit(float(k), float(np.exp(b)), float(k - half), float(k + half), level, n)


def quadratic_regime(T, seconds, fixed_seconds: float, share: float = 0.9) -> int | None:
    """Smallest T from which every time is at least ``1 / (1 - share)`` times the fixed cost.

    T: lengths; seconds: one time per length (e.g. the medians); fixed_seconds: the time
    of a call at a tiny length (Python, dispatch, allocation: what does not grow with T).
    With ``share=0.9`` the fixed cost is at most 10% of every time from the returned T
    on. Attention's other terms are the T^2 D work of the scores and the T D work of the
    output, at most 1/T of the former, so from there on the T^2 term dominates. Returns
    None when even the largest T falls short.
    """
    T, y = np.asarray(T, dtype=np.float64), np.asarray(seconds, dtype=np.float64)
    if T.shape != y.shape or T.ndim != 1 or T.size < 1:
        raise ValueError(f"T and seconds must be 1-D of the same length >= 1, got {T.shape} and {y.shape}")
    if not 0 < share < 1:
        raise ValueError(f"share must be in (0, 1), got {share!r}")
    order = np.argsort(T)
    T, y = T[order], y[order]
    ok = y * (1 - share) >= fixed_seconds
    for i in range(T.size):
        if ok[i:].all():
            return int(T[i])
    return None


def peak_bytes_numpy(fn: Callable[[], object]) -> int:
    """Peak bytes allocated while ``fn()`` runs, traced with :mod:`tracemalloc`."""
    gc.collect()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    result = fn()
    peak = tracemalloc.get_traced_memory()[1]
    if not was_tracing:
        tracemalloc.stop()
    del result
    return peak - base


def peak_bytes_torch(fn: Callable[[], object]) -> int:
    """Peak bytes held by torch CPU tensors allocated while ``fn()`` runs.

    Runs ``fn`` under ``torch.profiler`` with ``profile_memory=True`` and returns the
    maximum of the running sum of the allocator's ``[memory]`` events (allocations
    positive, frees negative), in time order.
    """
    from torch.profiler import ProfilerActivity, profile

    # Kineto prints a "profiler_start/stop" line on every use unless told not to.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
        del result
    events = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and str(e.device_type()) == "DeviceType.CPU"]
    events.sort(key=lambda t: t[0])
    held = peak = 0
    for _, nbytes in events:
        held += nbytes
        peak = max(peak, held)
    return peak


def cpu_sdpa_backends() -> list[str]:
    """Names of the ``SDPBackend`` members that run ``scaled_dot_product_attention`` on the CPU.

    Found by trying each one on a small float32 input, not by reading a list, so the
    answer is right for the installed PyTorch.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(1, 1, 8, 8)
    found = []
    for name, backend in SDPBackend.__members__.items():
        if name == "ERROR":
            continue
        try:
            with sdpa_kernel([backend]):
                F.scaled_dot_product_attention(q, q, q)
            found.append(name)
        except RuntimeError:
            pass
    return found


def torch_sdpa_with(backend: str) -> Callable:
    """``F.scaled_dot_product_attention`` restricted to one backend, e.g. ``"MATH"``."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if backend not in SDPBackend.__members__:
        raise ValueError(f"backend must be one of {list(SDPBackend.__members__)}, got {backend!r}")
    chosen = SDPBackend.__members__[backend]

    def sdpa(q, k, v, causal: bool = False):
        with sdpa_kernel([chosen]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    sdpa.__name__ = f"torch_sdpa_{backend.lower()}"
    return sdpa


#: name -> (function(q, k, v, causal), "numpy" or "torch")
IMPLEMENTATIONS: dict[str, tuple[Callable, str]] = {
    "course sdpa_numpy": (lambda q, k, v, causal=False: sdpa_numpy(q, k, v, causal=causal), "numpy"),
    "course sdpa_torch": (lambda q, k, v, causal=False: sdpa_torch(q, k, v, causal=causal), "torch"),
    "torch SDPA, math": (torch_sdpa_with("MATH"), "torch"),
    "torch SDPA, flash (CPU)": (torch_sdpa_with("FLASH_ATTENTION"), "torch"),
}


def measure(names: Sequence[str], lengths: Sequence[int], B: int = 1, H: int = 4, D: int = 64,
            causal: bool = False, repeat: int = 5, min_time: float = 2e-3, memory: bool = True,
            seed: int = 0, progress: bool = False, num_threads: int | None = None) -> list[dict]:
    """Time (and peak memory of) each implementation at each length T = S, float32.

    ``num_threads``: torch threads during the measurement (None: torch's setting; numpy's
    BLAS threads are not affected). ``repeat`` timed runs per (implementation, T), see
    :func:`time_samples`. Returns one dict per (name, T): ``name, T, B, H, D, seconds``
    (the median), ``seconds_q1, seconds_q3`` (its interquartile range), ``samples`` (every
    run's seconds per call), ``peak_bytes, score_bytes`` (``peak_bytes`` is None when
    ``memory`` is False).
    """
    with torch_threads(num_threads):
        return _measure(names, lengths, B, H, D, causal, repeat, min_time, memory, seed, progress)


def _measure(names, lengths, B, H, D, causal, repeat, min_time, memory, seed, progress):
    for n in names:
        if n not in IMPLEMENTATIONS:
            raise ValueError(f"unknown implementation {n!r}; known: {list(IMPLEMENTATIONS)}")
    for name, val in (("B", B), ("H", H), ("D", D)):
        _require_int(name, val)
    rows = []
    jobs = [(n, T) for T in lengths for n in names]
    if progress:
        from tqdm.auto import tqdm

        jobs = tqdm(jobs, desc="measuring")
    for name, T in jobs:
        T = _require_int("T", T)
        fn, kind = IMPLEMENTATIONS[name]
        g = torch.Generator().manual_seed(seed)
        q, k, v = torch.randn(3, B, H, T, D, generator=g).unbind(0)  # each (B, H, T, D)
        if kind == "numpy":
            q, k, v = (x.numpy() for x in (q, k, v))

        def call(fn=fn, q=q, k=k, v=v):
            return fn(q, k, v, causal=causal)

        with torch.inference_mode() if kind == "torch" else contextlib.nullcontext():
            samples = time_samples(call, repeat=repeat, min_time=min_time)
            peak = None
            if memory:
                peak = peak_bytes_numpy(call) if kind == "numpy" else peak_bytes_torch(call)
        med, q1, q3 = median_iqr(samples)
        rows.append(dict(name=name, T=T, B=B, H=H, D=D, seconds=med, seconds_q1=q1,
                         seconds_q3=q3, samples=samples.tolist(), peak_bytes=peak,
                         score_bytes=score_matrix_bytes(T, T, B, H, torch.float32)))
    return rows


def fit_loglog_slope(x, y) -> tuple[float, float]:
    """Least-squares line through (log x, log y): returns (slope k, prefactor c), y ~ c * x^k."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(f"x and y must be 1-D of the same length >= 2, got shapes {x.shape} and {y.shape}")
    if np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("x and y must be positive to take logarithms")
    k, log_c = np.polyfit(np.log(x), np.log(y), 1)
    return float(k), float(np.exp(log_c))


def plot_cost(rows: list[dict], fit_from: int | dict = 0, axes=None, memory_fit_from: int | None = None):
    """Log-log plots of time and peak memory against T, one line per implementation.

    Time: the median with its interquartile range as error bars. The legend gives each
    line's slope fitted over T >= ``fit_from`` (through every timed run) with its 95%
    interval; ``fit_from`` is one length for all, or a dict {name: first length} (names
    missing from it get no time slope). Memory slopes are fitted over T >=
    ``memory_fit_from`` (default: the same lengths as time, all T for a name missing from
    a dict). The
    memory panel also draws the predicted size of one score matrix. Returns the figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    fig = axes[0].figure
    names = list(dict.fromkeys(r["name"] for r in rows))
    markers = "osD^v<>"
    def memory_start(name):
        if memory_fit_from is not None:
            return memory_fit_from
        return fit_from.get(name, 0) if isinstance(fit_from, dict) else fit_from
    for i, name in enumerate(names):
        mine = [r for r in rows if r["name"] == name]
        T = np.array([r["T"] for r in mine])
        marker = markers[i % len(markers)]
        med = np.array([r["seconds"] for r in mine])
        label = name
        start = fit_from.get(name, math.inf) if isinstance(fit_from, dict) else fit_from
        fit = [(r["T"], s) for r in mine if r["T"] >= start for s in r.get("samples", [r["seconds"]])]
        if len({t for t, _ in fit}) >= 2 and len(fit) >= 3:
            f = fit_loglog(*zip(*fit, strict=True))
            label += f"  (slope {f.slope:.2f} [{f.low:.2f}, {f.high:.2f}])"
        if "seconds_q1" in mine[0]:
            err = [med - [r["seconds_q1"] for r in mine], [r["seconds_q3"] for r in mine] - med]
            axes[0].errorbar(T, med, yerr=err, marker=marker, capsize=2, label=label)
        else:
            axes[0].plot(T, med, marker=marker, label=label)
        if mine[0]["peak_bytes"] is not None:
            y = np.array([r["peak_bytes"] for r in mine], dtype=float)
            label = name
            ok = (T >= memory_start(name)) & (y > 0)
            if ok.sum() >= 3:
                f = fit_loglog(T[ok], y[ok])
                label += f"  (slope {f.slope:.2f} [{f.low:.2f}, {f.high:.2f}])"
            axes[1].plot(T, np.where(y > 0, y, np.nan), marker=marker, label=label)
    scores = sorted({(r["T"], r["score_bytes"]) for r in rows})
    axes[1].plot([t for t, _ in scores], [b for _, b in scores], "k--",
                 label="predicted: one B x H x T x T float32 score matrix")
    axes[0].set(xlabel="sequence length T", ylabel="seconds per call (median, IQR)", title="time")
    axes[1].set(xlabel="sequence length T", ylabel="peak bytes allocated", title="memory")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # label the powers of ten only
    where = "the lengths printed" if isinstance(fit_from, dict) else f"T >= {fit_from}"
    for ax, title in ((axes[0], f"slopes fitted on {where}; 95% interval"),
                      (axes[1], "slopes fitted on " + (where if memory_fit_from is None
                                                         else f"T >= {memory_fit_from}")
                       + "; 95% interval")):
        ax.legend(fontsize=7, title=title, title_fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig
