"""Summaries and plots of what ring attention costs: bytes sent, time, memory (lecture 14).

:func:`~attn_course.distributed.workers.ring_benchmark_worker` measures, on every process
of a ring, the whole ring (transfers overlapped with computation), the computation alone
and the transfers alone (``overlap=False``), each as median, minimum and maximum over
repeats, the bytes of every tensor sent and the peak bytes of tensors allocated.
:func:`summarise` folds the processes together (the slowest process sets the time of a
ring); :func:`single_process` measures plain attention on the whole sequence in this
process for comparison; :func:`plot_ring` draws the three panels used by the lecture
and ``benchmarks/ring_attention.py``.

Caveat: on a machine with fewer cores than processes the processes share cores, so the
computation of G processes does not run G times faster; what the comparison of
communication and computation *per step* says does not depend on that.
"""

from __future__ import annotations

import math
import statistics
import time

import torch

from attn_course.distributed.ring import attention_with_lse

__all__ = ["crossover", "plot_ring", "predicted_bytes_per_step", "read_results", "single_process",
           "summarise"]


def predicted_bytes_per_step(B: int, H: int, T: int, D: int, world_size: int, itemsize: int = 4) -> int:
    """One key block and one value block of T/G tokens: ``2 * B * H * (T/G) * D * itemsize``."""
    return 2 * B * H * (T // world_size) * D * itemsize


def summarise(per_rank) -> list[dict]:
    """One row per config from the rows of every process (``launch``'s result).

    Times are those of the slowest process (its median, minimum and maximum); the
    computation is also given for the least busy process (``compute_least_s``), which
    shows the load balance; bytes and peak memory are per process (their maximum).
    """
    rows = []
    for cfg_rows in zip(*per_rank, strict=True):
        first = cfg_rows[0]
        slowest = max(cfg_rows, key=lambda r: r["total_s"][0])
        busiest = max(cfg_rows, key=lambda r: r["compute_s"][0])
        row = {k: first[k] for k in ("world_size", "B", "H", "T", "D", "causal", "layout", "repeats")}
        for key, src in (("total", slowest), ("compute", busiest), ("comm", slowest)):
            med, lo, hi = src[f"{key}_s"]
            row.update({f"{key}_median_s": med, f"{key}_min_s": lo, f"{key}_max_s": hi})
        row["compute_least_s"] = min(r["compute_s"][0] for r in cfg_rows)
        row["bytes_per_step"] = max(max(r["bytes_per_step"]) for r in cfg_rows)
        row["bytes_per_process"] = max(sum(r["bytes_per_step"]) for r in cfg_rows)
        peaks = [r["peak_bytes"] for r in cfg_rows if r["peak_bytes"] is not None]
        row["peak_bytes_per_process"] = max(peaks) if peaks else None
        rows.append(row)
    return rows


@torch.no_grad()
def single_process(B: int, H: int, T: int, D: int, causal: bool = False, repeats: int = 5,
                   memory: bool = True, seed: int = 0) -> dict:
    """Attention over the whole sequence in this process: median/min/max seconds, peak bytes."""
    from attn_course.cost import peak_bytes_torch

    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, D, generator=gen) for _ in range(3))
    mask = torch.ones(T, T, dtype=torch.bool).tril() if causal else None

    def run():
        return attention_with_lse(q, k, v, 1 / math.sqrt(D), mask)

    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return dict(world_size=1, B=B, H=H, T=T, D=D, causal=causal, repeats=repeats,
                total_median_s=statistics.median(times), total_min_s=min(times),
                total_max_s=max(times),
                peak_bytes_per_process=peak_bytes_torch(run) if memory else None)


def read_results(path) -> list[dict]:
    """The rows of a ``ring_*.csv`` written by ``benchmarks/ring_attention.py``, with numbers
    and booleans parsed back (empty cells become None)."""
    import csv

    def parse(value: str):
        if value in ("True", "False"):
            return value == "True"
        if value == "":
            return None
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
        return value

    with open(path, newline="") as f:
        return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def crossover(rows, world_size: int):
    """The shortest T (non-causal, contiguous) at which the transfers of a ring take less time
    than its computation, and the ratio comm/compute at every T, for one ``world_size``."""
    mine = sorted((r for r in rows if r["world_size"] == world_size and not r["causal"]
                   and r["layout"] == "contiguous"), key=lambda r: r["T"])
    ratios = [(r["T"], r["comm_median_s"] / r["compute_median_s"]) for r in mine]
    first = next((T for T, ratio in ratios if ratio < 1), None)
    return first, ratios


def plot_ring(rows, single=(), title: str = "", axes=None):
    """Three panels against T (non-causal, contiguous rows): bytes sent per process (with the
    prediction), computation and communication per ring (medians, bars from min to max),
    and peak memory per process (with single-process attention)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    worlds = sorted({r["world_size"] for r in rows})
    for G, color in zip(worlds, ("C0", "C1", "C2", "C3"), strict=False):
        rs = sorted((r for r in rows if r["world_size"] == G and not r["causal"]
                     and r["layout"] == "contiguous"), key=lambda r: r["T"])
        Ts = [r["T"] for r in rs]
        axes[0].plot(Ts, [r["bytes_per_process"] for r in rs], "o", color=color,
                     label=f"G={G}, measured")
        axes[0].plot(Ts, [(G - 1) * predicted_bytes_per_step(r["B"], r["H"], r["T"], r["D"], G)
                          for r in rs], "-", color=color, alpha=0.5, label=f"G={G}: 2(G-1)BH(T/G)D x 4 B")
        for key, style in (("compute", "-o"), ("comm", "--s")):
            med = [r[f"{key}_median_s"] for r in rs]
            err = [[m - r[f"{key}_min_s"] for m, r in zip(med, rs, strict=True)],
                   [r[f"{key}_max_s"] - m for m, r in zip(med, rs, strict=True)]]
            axes[1].errorbar(Ts, med, yerr=err, fmt=style, color=color, capsize=3,
                             label=f"G={G} {'computation' if key == 'compute' else 'transfers alone'}")
        axes[2].plot(Ts, [r["peak_bytes_per_process"] / 2**20 for r in rs], "-o", color=color,
                     label=f"G={G}, per process")
    if single:
        single = sorted(single, key=lambda r: r["T"])
        axes[2].plot([r["T"] for r in single], [r["peak_bytes_per_process"] / 2**20 for r in single],
                     "-^", color="k", label="one process, whole sequence")
    axes[0].set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="bytes sent per process",
                title="communication per process (one forward)")
    axes[1].set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="seconds per ring",
                title="computation vs transfers, summed over steps")
    axes[2].set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="peak MiB per process",
                title="memory per process")
    Ts = sorted({r["T"] for r in rows})
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(Ts, [str(T) for T in Ts])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    if title:
        axes[0].figure.suptitle(title, fontsize=9)
    axes[0].figure.tight_layout()
    return axes
