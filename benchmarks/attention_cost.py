"""Time and peak memory of attention against sequence length, on this machine's CPU.

Measures the course's ``sdpa_numpy`` and ``sdpa_torch`` and PyTorch's
``scaled_dot_product_attention`` with each CPU backend (math, and the fused flash
kernel), float32, shapes (B, H, T, D), T = S. Writes to ``benchmarks/results/``:

- ``attention_cost.csv``: one row per (implementation, T), with the machine described
  in every row (CPU model, cores, torch threads, versions);
- ``attention_cost.png``: log-log time and memory with fitted slopes;
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
    fit_loglog_slope,
    measure,
    peak_bytes_torch,
    plot_cost,
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+",
                        default=[64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 8192])
    parser.add_argument("--B", type=int, default=1)
    parser.add_argument("--H", type=int, default=4)
    parser.add_argument("--D", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.02,
                        help="each timed run lasts at least this many seconds")
    parser.add_argument("--max-score-mib", type=float, default=256.0,
                        help="skip materialising implementations above this score-matrix size")
    parser.add_argument("--fit-from", type=int, default=512, help="fit slopes on T >= this")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--check-rss", type=int, metavar="T", nargs="?", const=4096, default=None,
                        help="also compare the profiler's peak with the peak RSS (Linux) at this T")
    parser.add_argument("--rss-child", type=int, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        rss_child(*args.rss_child)
        return

    backends = cpu_sdpa_backends()
    names = [n for n in IMPLEMENTATIONS if n != FUSED or "FLASH_ATTENTION" in backends]
    info = machine()
    print(f"CPU SDPA backends: {backends}; machine: {info}")
    rows = []
    for T in args.lengths:
        big = score_matrix_bytes(T, T, args.B, args.H) > args.max_score_mib * 2**20
        for name in names:
            if big and name != FUSED:
                continue
            (row,) = measure([name], [T], B=args.B, H=args.H, D=args.D, repeat=args.repeat,
                             min_time=args.min_time)
            row["peak_over_scores"] = round(row["peak_bytes"] / row["score_bytes"], 4)
            rows.append({**row, **info})
            print(f"{name:26s} T={T:5d}  {row['seconds'] * 1e3:10.2f} ms  "
                  f"peak {row['peak_bytes'] / 2**20:9.2f} MiB  ({row['peak_over_scores']:.2f} x scores)",
                  flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "attention_cost.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for name in names:
        mine = [r for r in rows if r["name"] == name and r["T"] >= args.fit_from]
        if len(mine) >= 2:
            T = [r["T"] for r in mine]
            kt = fit_loglog_slope(T, [r["seconds"] for r in mine])[0]
            km = fit_loglog_slope(T, [r["peak_bytes"] for r in mine])[0]
            print(f"slopes for T >= {args.fit_from}: {name:26s} time {kt:.2f}, memory {km:.2f}")
    fig = plot_cost(rows, fit_from=args.fit_from)
    fig.suptitle(f"{info['cpu']}, torch threads: {info['torch_threads']}, torch {info['torch']} "
                 f"(B={args.B}, H={args.H}, D={args.D}, float32)", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out / "attention_cost.png", dpi=90)
    print(f"wrote {args.out / 'attention_cost.csv'} and {args.out / 'attention_cost.png'}")
    if args.check_rss:
        check_rss(args.check_rss, args.H, args.D, args.out / "attention_cost_rss_check.csv")


if __name__ == "__main__":
    main()
