"""Time and peak memory of attention against sequence length, on this machine's CPU.

Measures the course's ``sdpa_numpy`` and ``sdpa_torch`` and PyTorch's
``scaled_dot_product_attention`` with each CPU backend (math, and the fused flash
kernel), float32, shapes (B, H, T, D), T = S. Writes to ``benchmarks/results/``:

- ``attention_cost.csv``: one row per (implementation, T): the median time of
  ``--repeat`` runs with its interquartile range and every run's time, the peak memory,
  and the machine described in every row (CPU model, cores, torch threads, versions);
- ``attention_cost_slopes.csv``: per implementation, the log-log slope of time and of
  memory with its 95% interval, fitted where the fixed cost of a call (its median time at
  T = 16) is at most 10% of the time, so that the T^2 term dominates
  (:func:`attn_course.cost.quadratic_regime`);
- ``attention_cost.png``: log-log time (median and IQR) and memory with those slopes;
- with ``--check-rss``, ``attention_cost_rss_check.csv``: the profiler's peak compared
  with the growth of the peak resident set size (Linux VmHWM, reset just before) of a
  fresh process doing the same call: an independent check of the memory measurement at
  one large size, where page granularity and the allocator's caching are negligible.

Run from the repository root::

    python benchmarks/attention_cost.py                 # a few minutes on 2 cores
    python benchmarks/attention_cost.py --lengths 64 128 256 --check-rss

Threads: torch and numpy (OpenBLAS) read ``OMP_NUM_THREADS`` and ``OPENBLAS_NUM_THREADS``
at start-up; on a machine shared with other work, ``OMP_NUM_THREADS=1
OPENBLAS_NUM_THREADS=1`` gives far steadier numbers. The values in force are recorded.

The implementations that store the T x T scores are skipped once one score matrix
would exceed ``--max-score-mib`` (their peak is several times that).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from attn_course.cost import (
    IMPLEMENTATIONS,
    cpu_name,
    cpu_sdpa_backends,
    fit_loglog,
    measure,
    peak_bytes_torch,
    plot_cost,
    quadratic_regime,
    score_matrix_bytes,
    torch_sdpa_with,
)

RESULTS = Path(__file__).with_name("results")
FUSED = "torch SDPA, flash (CPU)"


def machine() -> dict:
    return {
        "cpu": cpu_name(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", ""),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", ""),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_child(T: int, H: int, D: int) -> None:
    """In a fresh process: growth of the peak resident set (bytes) during one math-SDPA call.

    Linux only. Writing "5" to /proc/self/clear_refs resets the peak (VmHWM) to the
    current RSS, so the peak afterwards belongs to this call alone. (``ru_maxrss`` cannot
    be used: it keeps the high-water mark of the parent process across fork and exec.)
    """
    q, k, v = torch.randn(3, 1, H, T, D).unbind(0)
    sdpa = torch_sdpa_with("MATH")
    sdpa(q[..., :64, :], k[..., :64, :], v[..., :64, :])  # load kernels, warm the allocator
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    with torch.inference_mode():
        sdpa(q, k, v)
    print((_status_kib("VmHWM") - before) * 1024)


def check_rss(T: int, H: int, D: int, out: Path) -> None:
    q, k, v = torch.randn(3, 1, H, T, D).unbind(0)
    with torch.inference_mode():
        profiled = peak_bytes_torch(lambda: torch_sdpa_with("MATH")(q, k, v))
    cmd = [sys.executable, __file__, "--rss-child", str(T), str(H), str(D)]
    rss = int(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()[-1])
    row = {"implementation": "torch SDPA, math", "T": T, "H": H, "D": D,
           "score_bytes": score_matrix_bytes(T, T, 1, H),
           "profiler_peak_bytes": profiled, "peak_rss_growth_bytes": rss,
           "ratio_rss_to_profiler": round(rss / profiled, 3), **machine()}
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    print(f"memory check at T={T}: profiler peak {profiled / 2**20:.1f} MiB, "
          f"peak RSS growth {rss / 2**20:.1f} MiB (ratio {rss / profiled:.3f}); wrote {out}")


def plot(rows, starts, info, B, H, D, repeat, out: Path) -> None:
    fig = plot_cost(rows, fit_from=starts)
    fig.suptitle(f"{info['cpu']} ({info['logical_cores']} logical cores), torch threads: "
                 f"{info['torch_threads']}, torch {info['torch']}, {info['date']} "
                 f"(B={B}, H={H}, D={D}, float32; median and IQR of {repeat} runs)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "attention_cost.png", dpi=90)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+",
                        default=[64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 8192])
    parser.add_argument("--B", type=int, default=1)
    parser.add_argument("--H", type=int, default=4)
    parser.add_argument("--D", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.02,
                        help="each timed run lasts at least this many seconds")
    parser.add_argument("--max-score-mib", type=float, default=256.0,
                        help="skip materialising implementations above this score-matrix size")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--check-rss", type=int, metavar="T", nargs="?", const=4096, default=None,
                        help="also compare the profiler's peak with the peak RSS (Linux) at this T")
    parser.add_argument("--plot-only", action="store_true",
                        help="redraw attention_cost.png from the CSV files in --out, measuring nothing")
    parser.add_argument("--rss-child", type=int, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        rss_child(*args.rss_child)
        return
    if args.plot_only:
        with open(args.out / "attention_cost.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        with open(args.out / "attention_cost_slopes.csv", newline="") as f:
            starts = {r["name"]: int(r["fit_from_T"]) for r in csv.DictReader(f)}
        for r in rows:
            for key in ("T", "B", "H", "D", "peak_bytes", "score_bytes", "logical_cores", "torch_threads"):
                r[key] = int(r[key])
            for key in ("seconds", "seconds_q1", "seconds_q3"):
                r[key] = float(r[key])
            r["samples"] = [float(x) for x in r["samples"].split(";")]
        plot(rows, starts, rows[0], rows[0]["B"], rows[0]["H"], rows[0]["D"],
             len(rows[0]["samples"]), args.out)
        return

    backends = cpu_sdpa_backends()
    names = [n for n in IMPLEMENTATIONS if n != FUSED or "FLASH_ATTENTION" in backends]
    info = machine()
    print(f"CPU SDPA backends: {backends}; machine: {info}")
    fixed = {r["name"]: r["seconds"] for r in measure(names, [16], B=args.B, H=args.H, D=args.D,
                                                      repeat=args.repeat, memory=False)}
    rows = []
    for T in args.lengths:
        big = score_matrix_bytes(T, T, args.B, args.H) > args.max_score_mib * 2**20
        for name in names:
            if big and name != FUSED:
                continue
            (row,) = measure([name], [T], B=args.B, H=args.H, D=args.D, repeat=args.repeat,
                             min_time=args.min_time)
            row["peak_over_scores"] = round(row["peak_bytes"] / row["score_bytes"], 4)
            row["samples"] = ";".join(f"{x:.6g}" for x in row["samples"])
            row["fixed_seconds_T16"] = fixed[name]
            rows.append({**row, **info})
            print(f"{name:26s} T={T:5d}  median {row['seconds'] * 1e3:10.2f} ms "
                  f"(IQR {row['seconds_q1'] * 1e3:.2f}-{row['seconds_q3'] * 1e3:.2f})  "
                  f"peak {row['peak_bytes'] / 2**20:9.2f} MiB  ({row['peak_over_scores']:.2f} x scores)",
                  flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "attention_cost.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    slopes, starts = [], {}
    for name in names:
        mine = [r for r in rows if r["name"] == name]
        start = quadratic_regime([r["T"] for r in mine], [r["seconds"] for r in mine], fixed[name])
        used = [r for r in mine if start is not None and r["T"] >= start]
        if len(used) < 3:
            print(f"{name:26s} fewer than 3 lengths where the fixed cost is <= 10%: no slope")
            continue
        starts[name] = start
        runs = [(r["T"], float(x)) for r in used for x in r["samples"].split(";")]
        for quantity, fit in (("time", fit_loglog(*zip(*runs, strict=True))),
                              ("memory", fit_loglog([r["T"] for r in used], [r["peak_bytes"] for r in used]))):
            slopes.append({"name": name, "quantity": quantity, "fit_from_T": start, "slope": round(fit.slope, 4),
                           "low_95": round(fit.low, 4), "high_95": round(fit.high, 4), "points": fit.n,
                           "versus_2": fit.compare(2), **info})
            print(f"{name:26s} {quantity:6s} slope for T >= {start}: {fit}, {fit.compare(2)}")
    if slopes:
        with open(args.out / "attention_cost_slopes.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(slopes[0]))
            writer.writeheader()
            writer.writerows(slopes)
    for r in rows:
        r["samples"] = [float(x) for x in r["samples"].split(";")]
    plot(rows, starts, info, args.B, args.H, args.D, args.repeat, args.out)
    print(f"wrote {args.out / 'attention_cost.csv'}, attention_cost_slopes.csv and attention_cost.png")
    if args.check_rss:
        check_rss(args.check_rss, args.H, args.D, args.out / "attention_cost_rss_check.csv")


if __name__ == "__main__":
    main()
