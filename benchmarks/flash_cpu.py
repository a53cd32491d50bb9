"""Tiled numpy FlashAttention forward vs PyTorch's SDPA on the CPU: time and extra memory.

The lecture-09 algorithm (``attn_course.flash.tiled.flash_forward``) at one large size,
by default T = S = 4096 queries and keys, D = 64, 8 heads, float32, against
``torch.nn.functional.scaled_dot_product_attention`` with ``--threads`` torch threads,
both as dispatched by default and pinned to its fused, blocked CPU kernel. Standard attention would hold
8 x 4096 x 4096 float32 scores: 512 MiB.

Measured, for each variant (``--repeat`` timed calls after one warm-up call; the
variants take turns, one call each per round, so a slow phase of a shared machine
touches all of them alike):

- seconds per call: the median over the repeats, with the smallest and largest and the
  interquartile range (25th to 75th percentile);
- extra peak memory: the high-water mark of the bytes allocated during the call
  (numpy: tracemalloc; torch: the profiler's allocator events), output included
  (the output alone is N x d x heads x 4 bytes = 16 MiB by default);
- the largest absolute difference from SDPA's output;
- the median time relative to the fastest SDPA variant's median (the default
  dispatch, and the fused FLASH_ATTENTION CPU kernel pinned with ``sdpa_kernel``).

A speed-up from 1 to 2 threads above 2x is not parallelism: it means the machine was
busier during one variant's calls than during the other's (other processes share the
cores). The spread columns show how far to trust each median.

Threads. numpy parallelises nothing but BLAS, and OpenBLAS's own threads make the
many small products of the tiled loop slower, not faster, on a shared machine. This
script therefore pins OpenBLAS to one thread (``OPENBLAS_NUM_THREADS=1``, set before
numpy is imported unless already set) and runs the tiled pass either in one thread or
with ``--threads`` Python threads taking one head each (numpy releases the GIL in its
kernels), the way FlashAttention spreads (batch, head) pairs over the GPU's cores.

Writes ``benchmarks/results/flash_cpu.csv`` (one row per variant, the machine in every
row). Run from the repository root, ideally on an otherwise idle machine::

    PYTHONPATH=. python benchmarks/flash_cpu.py                  # about two minutes
    PYTHONPATH=. python benchmarks/flash_cpu.py --T 1024 --repeat 3 --out /tmp/x
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads OpenBLAS

import argparse  # noqa: E402
import csv  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from attn_course.cost import (  # noqa: E402
    cpu_name,
    peak_bytes_numpy,
    peak_bytes_torch,
    torch_sdpa_with,
)
from attn_course.flash.tiled import flash_forward  # noqa: E402

RESULTS = Path(__file__).with_name("results")
MIB = 2**20


def tiled_by_heads(q, k, v, block_q: int, block_k: int, threads: int):
    """flash_forward on each head, ``threads`` heads at a time; q, k, v: (H, T, D)."""
    out = np.empty(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype)  # (H, T, Dv)
    lse = np.empty(q.shape[:-1], dtype=q.dtype)  # (H, T)

    def one_head(h):
        out[h], lse[h] = flash_forward(q[h], k[h], v[h], block_q=block_q, block_k=block_k)

    if threads == 1:
        for h in range(q.shape[0]):
            one_head(h)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one_head, range(q.shape[0])))
    return out, lse


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--T", type=int, default=4096, help="sequence length (queries = keys)")
    p.add_argument("--D", type=int, default=64, help="head dim")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--threads", type=int, default=2,
                   help="threads for torch and for the tiled pass (each is also run with 1)")
    p.add_argument("--blocks", type=int, nargs="+", default=[128, 256, 512],
                   help="square tile sizes Br = Bc to try")
    p.add_argument("--repeat", type=int, default=9)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((args.heads, args.T, args.D), dtype=np.float32)
               for _ in range(3))  # (H, T, D) each
    # (B=1, H, T, D): SDPA's fused CPU kernel takes only 4-D inputs (3-D ones fall back
    # to the math backend, which stores the T x S scores)
    tq, tk, tv = (torch.from_numpy(x)[None] for x in (q, k, v))
    expected = F.scaled_dot_product_attention(tq, tk, tv)[0].numpy()  # (H, T, D)

    flash_cpu = torch_sdpa_with("FLASH_ATTENTION")
    variants = []
    for threads in sorted({1, args.threads}):
        variants += [(f"torch SDPA, default dispatch, {threads} thread(s)", "torch", None, threads,
                      lambda: F.scaled_dot_product_attention(tq, tk, tv)),
                     (f"torch SDPA, FLASH_ATTENTION (CPU), {threads} thread(s)", "torch", None,
                      threads, lambda: flash_cpu(tq, tk, tv))]
    for b in args.blocks:
        for threads in sorted({1, args.threads}):
            variants.append((f"tiled numpy, {threads} thread(s) over heads", "numpy", b, threads,
                             lambda b=b, t=threads: tiled_by_heads(q, k, v, b, b, t)[0]))
    rows = []
    machine = {"cpu": cpu_name(), "logical_cores": os.cpu_count(),
               "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", ""),
               "torch": torch.__version__, "numpy": np.__version__,
               "python": platform.python_version(), "date": datetime.date.today().isoformat()}
    times = [[] for _ in variants]  # one list per variant (names repeat across blocks)
    for _name, _, _, threads, fn in variants:  # warm-up: first-call allocations
        torch.set_num_threads(threads)
        fn()
    for _ in range(args.repeat):  # rounds: every variant once per round
        for n, (_name, _, _, threads, fn) in enumerate(variants):
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            fn()
            times[n].append(time.perf_counter() - t0)
    for n, (name, kind, block, threads, fn) in enumerate(variants):
        torch.set_num_threads(threads)
        t = np.asarray(times[n])
        q25, median, q75 = np.percentile(t, [25, 50, 75])
        peak = (peak_bytes_numpy if kind == "numpy" else peak_bytes_torch)(fn)
        result = np.asarray(fn()).reshape(expected.shape)  # (H, T, D)
        err = float(np.max(np.abs(result - expected)))
        rows.append({"impl": name, "T": args.T, "D": args.D, "heads": args.heads,
                     "dtype": "float32", "block": block or "", "threads": threads,
                     "repeats": args.repeat, "median_s": round(median, 4),
                     "q25_s": round(q25, 4), "q75_s": round(q75, 4),
                     "min_s": round(t.min(), 4), "max_s": round(t.max(), 4),
                     "extra_peak_mib": round(peak / MIB, 2),
                     "max_abs_diff_vs_sdpa": f"{err:.2e}", **machine})
        print(f"{name:<48} block {block or '-':>4}  median {median:7.3f} s "
              f"[{t.min():.3f}, {t.max():.3f}]  peak {peak / MIB:8.2f} MiB  max|diff| {err:.1e}",
              flush=True)
    sdpa_s = min(r["median_s"] for r in rows if r["impl"].startswith("torch"))
    for row in rows:
        row["time_vs_fastest_sdpa"] = round(row["median_s"] / sdpa_s, 3)
    best = min((r for r in rows if r["impl"].startswith("tiled")), key=lambda r: r["median_s"])
    print(f"best tiled: {best['impl']}, block {best['block']}: "
          f"{best['time_vs_fastest_sdpa']:.2f}x the fastest SDPA's median time, "
          f"{best['extra_peak_mib']:.1f} MiB extra peak (targets: <= 1.5x, <= 32 MiB)")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "flash_cpu.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
