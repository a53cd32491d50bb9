"""Which mixers can recall? MQAR accuracy against model width, trained on a CPU (lecture 13).

After Arora et al., "Zoology: Measuring and Improving Recall in Efficient Language
Models" (2023), figure 2, at laptop scale. For every mixer of
:mod:`attn_course.recall.mixers` (attention, sliding window, linear attention, gated
S4D convolution, Mamba-style selective SSM), every model width E, every task (sequence
length T, number of key-value pairs P) and every seed: a fresh two-layer
:class:`~attn_course.recall.model.RecallLM` is trained with the same budget (steps,
batch size, learning rate; :mod:`attn_course.recall.train`) and scored on 500 held-out
sequences (accuracy over all asked keys).

Writes to ``benchmarks/results/``: ``recall_study.csv``, one row per run with the
machine (platform, CPU, torch version, threads, date) in every row, appended as each
run ends (an interrupted sweep keeps its finished runs, and ``--resume`` skips them);
``recall_study.png``, accuracy against width per task (mean over seeds, each seed a
dot), stamped with the machine. Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/recall_study.py --jobs 2   # the committed sweep
    python benchmarks/recall_study.py --plot-only                  # redraw from the CSV
    python benchmarks/recall_study.py --widths 32 --tasks 32:4 --seeds 0 --steps 100  # a look

Runs are ordered seed first, so a sweep cut short still covers every setting once.

Cost. The committed sweep (60 runs: 5 mixers x 3 widths x 2 tasks x 2 seeds) took 8427 s
of training summed over the runs, about 75 minutes of wall time with ``--jobs 2`` on a
2-core machine that was busy with other work at the same time (load average around 10);
its first 5 runs come from a start that was interrupted and resumed with ``--resume``.
On a quieter machine it is much faster: the five runs at E = 32, T = 64 took 126 s in
all there (``python -m attn_course.data.recall_models --check``), which puts the whole
sweep at roughly 12 minutes with 2 jobs (an estimate from those runs, not a measurement). The selective SSM's runs
(a sequential scan) are the slowest, about twice attention's at the same width.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from attn_course.cost import cpu_name  # noqa: E402
from attn_course.recall.train import TRAIN, run  # noqa: E402

RESULTS = Path(__file__).with_name("results")
MIXERS = ("attention", "sliding_window", "linear", "conv", "mamba")
LABELS = {
    "attention": "attention (softmax, RoPE)",
    "sliding_window": "sliding window, w = 16",
    "linear": "linear attention (elu + 1)",
    "conv": "gated convolution (S4D kernel, N = 16)",
    "mamba": "Mamba-style selective SSM (N = 16)",
}
COLORS = {"attention": "C0", "sliding_window": "C1", "linear": "C2", "conv": "C3", "mamba": "C4"}
VOCAB = 64
WIDTHS = (16, 32, 64)
TASKS = ((32, 4), (64, 8))  # (T, P)
SEEDS = (0, 1)


def machine() -> dict:
    return {"platform": platform.platform(terse=True), "cpu": cpu_name(),
            "cpu_count": os.cpu_count(), "torch_threads": 1, "torch": torch.__version__,
            "python": sys.version.split()[0], "date": datetime.date.today().isoformat()}


def _one(job: dict) -> dict:
    torch.set_num_threads(1)
    return run(**job)


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for key in ("width", "seq_len", "n_pairs", "vocab_size", "seed", "steps", "batch_size",
                    "state_size", "params"):
            r[key] = int(r[key])
        for key in ("lr", "final_loss", "accuracy", "train_seconds"):
            r[key] = float(r[key])
    return rows


def _key(r: dict) -> tuple:
    return (r["mixer"], int(r["width"]), int(r["seq_len"]), int(r["n_pairs"]), int(r["seed"]))


def sweep(jobs: list[dict], path: Path, workers: int) -> None:
    info = machine()
    new_file = not path.exists()
    with path.open("a", newline="") as f:
        writer = None
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_one, job): job for job in jobs}
            for done, fut in enumerate(as_completed(futures), 1):
                row = {**fut.result(), **info}
                if writer is None:
                    writer = csv.DictWriter(f, fieldnames=list(row))
                    if new_file:
                        writer.writeheader()
                writer.writerow(row)
                f.flush()
                print(f"[{done}/{len(jobs)}] {row['mixer']:>14} E={row['width']:<3} "
                      f"T={row['seq_len']:<3} P={row['n_pairs']:<2} seed {row['seed']}: "
                      f"accuracy {row['accuracy']:.3f} ({row['train_seconds']:.0f} s)", flush=True)


def plot(rows: list[dict], path: Path) -> None:
    tasks = sorted({(r["seq_len"], r["n_pairs"]) for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 4.6), sharey=True, squeeze=False)
    for ax, (T, P) in zip(axes[0], tasks, strict=True):
        for mixer in MIXERS:
            mine = [r for r in rows if (r["mixer"], r["seq_len"], r["n_pairs"]) == (mixer, T, P)]
            if not mine:
                continue
            widths = sorted({r["width"] for r in mine})
            means = [sum(r["accuracy"] for r in mine if r["width"] == w)
                     / sum(1 for r in mine if r["width"] == w) for w in widths]
            ax.plot(widths, means, marker="o", color=COLORS[mixer], label=LABELS[mixer])
            ax.scatter([r["width"] for r in mine], [r["accuracy"] for r in mine], s=10,
                       color=COLORS[mixer], alpha=0.5)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["width"] for r in rows}), [str(w) for w in sorted({r["width"] for r in rows})])
        ax.set(title=f"T = {T}, P = {P} pairs", xlabel="model width E", ylim=(-0.02, 1.02))
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("MQAR accuracy (held-out)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    r0 = rows[0]
    fig.suptitle(f"MQAR, V = {r0['vocab_size']}, 2 layers, {r0['steps']} steps x batch {r0['batch_size']}, "
                 f"lr {r0['lr']:g}, seeds {sorted({r['seed'] for r in rows})} (line: mean, dots: seeds)\n"
                 f"{r0['cpu']}, {r0['platform']}, torch {r0['torch']}, {r0['date']}", fontsize=8)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mixers", nargs="+", default=list(MIXERS), choices=MIXERS)
    parser.add_argument("--widths", nargs="+", type=int, default=list(WIDTHS))
    parser.add_argument("--tasks", nargs="+", default=[f"{T}:{P}" for T, P in TASKS],
                        help="tasks as T:P (sequence length : pairs)")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--vocab", type=int, default=VOCAB)
    parser.add_argument("--steps", type=int, default=TRAIN["steps"])
    parser.add_argument("--batch-size", type=int, default=TRAIN["batch_size"])
    parser.add_argument("--lr", type=float, default=TRAIN["lr"])
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel, one thread each")
    parser.add_argument("--out", type=Path, default=RESULTS / "recall_study.csv")
    parser.add_argument("--resume", action="store_true", help="append to --out, skipping finished runs")
    parser.add_argument("--plot-only", action="store_true", help="redraw the PNG from --out")
    args = parser.parse_args(argv)
    png = args.out.with_suffix(".png")
    if not args.plot_only:
        tasks = []
        for spec in args.tasks:
            try:
                T, P = (int(x) for x in spec.split(":"))
            except ValueError:
                parser.error(f"--tasks takes T:P pairs such as 64:8, got {spec!r}")
            tasks.append((T, P))
        if args.out.exists() and not args.resume:
            args.out.unlink()
        done = {_key(r) for r in read_rows(args.out)}
        jobs = [dict(mixer=m, width=w, n_pairs=P, seq_len=T, vocab_size=args.vocab, seed=s,
                     steps=args.steps, batch_size=args.batch_size, lr=args.lr)
                for s in args.seeds for T, P in tasks for w in args.widths for m in args.mixers]
        jobs = [j for j in jobs if (j["mixer"], j["width"], j["seq_len"], j["n_pairs"], j["seed"]) not in done]
        start = time.perf_counter()
        sweep(jobs, args.out, args.jobs)
        print(f"{len(jobs)} runs in {time.perf_counter() - start:.0f} s with {args.jobs} jobs")
    plot(read_rows(args.out), png)


if __name__ == "__main__":
    main()
