"""Ring attention on this machine: bytes sent, computation against communication, memory.

Starts G local processes (gloo over 127.0.0.1; NCCL where there is one GPU per process)
for each G of ``--worlds``, and in each measures ring attention's forward pass (float32,
B=1, H=4, D=64) at every T of ``--lengths`` (non-causal, contiguous), and, at ``--causal-T``,
causal attention with the contiguous and the zigzag layout (the load balance). Also
measures attention over the whole sequence in one process. Writes to
``benchmarks/results/``:

- ``ring_cpu.csv`` (``ring_gpu.csv`` under NCCL): one row per (G, T, causal, layout):
  medians, minima and maxima over ``--repeats`` of the whole ring, of its computation
  and of its transfers alone; bytes sent per step and per process; peak bytes per
  process; the machine in every row, with the 1-minute load average before and after
  (other programs on the same cores slow every measurement down);
- ``ring_cpu.png``: bytes, times and memory against T;
- it prints, per G, the shortest T at which the transfers take less time than the
  computation (where the ring starts to pay, on this machine).

Run from the repository root (about two minutes on 2 cores)::

    OMP_NUM_THREADS=1 python benchmarks/ring_attention.py
    OMP_NUM_THREADS=1 python benchmarks/ring_attention.py --worlds 2 --lengths 256 512 --repeats 3
    python benchmarks/ring_attention.py --plot-only       # redraw the PNG from the CSV
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import sys
from pathlib import Path

import torch

from attn_course.cost import cpu_name
from attn_course.distributed import launch
from attn_course.distributed.launcher import pick_backend
from attn_course.distributed.measure import (
    crossover,
    plot_ring,
    read_results,
    single_process,
    summarise,
)
from attn_course.distributed.workers import ring_benchmark_worker

RESULTS = Path(__file__).with_name("results")


def machine(backend: str) -> dict:
    return {"machine": torch.cuda.get_device_name(0) if backend == "nccl" else cpu_name(),
            "logical_cores": os.cpu_count(), "backend": backend,
            "threads_per_process": 1, "torch": torch.__version__,
            "python": platform.python_version(), "date": datetime.date.today().isoformat(),
            "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}


def draw(rows, single, stamp, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    axes = plot_ring(rows, single, title=f"ring attention, {stamp['backend']}, {stamp['machine']} "
                     f"({stamp['logical_cores']} logical cores, 1 thread per process, load "
                     f"{stamp['load_avg_1min_before']}-{stamp['load_avg_1min']}), {stamp['date']}")
    axes[0].figure.savefig(path, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worlds", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--causal-T", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backend", choices=["gloo", "nccl"], default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--plot-only", action="store_true",
                        help="redraw the PNG from the CSV already in --out, measure nothing")
    args = parser.parse_args(argv)
    if args.plot_only:
        kind = "gpu" if args.backend == "nccl" else "cpu"
        rows = read_results(args.out / f"ring_{kind}.csv")
        draw([r for r in rows if r["world_size"] > 1], [r for r in rows if r["world_size"] == 1],
             rows[0], args.out / f"ring_{kind}.png")
        return 0
    B, H, D = 1, 4, 64
    rows = []
    backend = args.backend or pick_backend(max(args.worlds))
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    for G in args.worlds:
        configs = [dict(B=B, H=H, T=T, D=D, causal=False, layout="contiguous") for T in args.lengths]
        configs += [dict(B=B, H=H, T=args.causal_T, D=D, causal=True, layout=lay)
                    for lay in ("contiguous", "zigzag")]
        print(f"G={G}: {len(configs)} configs ...", file=sys.stderr, flush=True)
        rows += summarise(launch(ring_benchmark_worker, G, (configs, args.repeats), backend=backend,
                                 timeout=1200))
    torch.set_num_threads(1)
    single = [single_process(B, H, T, D, repeats=args.repeats) for T in args.lengths]
    stamp = machine(backend)
    stamp["load_avg_1min_before"] = None if load_before is None else round(load_before, 2)
    kind = "gpu" if backend == "nccl" else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"ring_{kind}.csv"
    fields = list(rows[0]) + [k for k in single[0] if k not in rows[0]] + list(stamp)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows + single:
            writer.writerow({**r, **stamp})
    draw(rows, single, stamp, args.out / f"ring_{kind}.png")
    print(f"wrote {path} and {path.with_suffix('.png')}")
    for G in args.worlds:
        first, ratios = crossover(rows, G)
        text = ", ".join(f"T={T}: {ratio:.2f}" for T, ratio in ratios)
        print(f"G={G}: transfers / computation per ring: {text}; transfers < computation from "
              f"T={first}" if first else f"G={G}: transfers exceed computation at every T ({text})")
    for r in rows:
        if r["causal"]:
            print(f"G={r['world_size']} causal T={r['T']} {r['layout']}: ring {r['total_median_s']:.4f} s, "
                  f"computation of the busiest process {r['compute_median_s']:.4f} s, "
                  f"of the least busy {r['compute_least_s']:.4f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
