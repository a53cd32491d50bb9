"""Efficient attention against exact attention: time, peak memory, crossovers and errors.

For sequence lengths T (= S), float32, q, k, v of shape (B, H, T, D) = (1, 4, T, 64),
non-causal, measures each method of :mod:`attn_course.efficient.compare`:

- ``sdpa``: PyTorch's ``scaled_dot_product_attention`` (a fused kernel that does not
  store the T x T scores; the baseline for time);
- ``softmax``: the course's ``sdpa_torch``, which does store them (the baseline for
  memory: full attention as written in lecture 03);
- ``sliding_window`` (w = 128), ``linear`` (elu + 1), ``linformer`` (P = 128) and
  ``performer`` (R = 128 orthogonal random features).

Time is the median of ``--repeat`` runs, with the fastest and slowest (drawn as a bar
around each point); memory is the
allocator's peak during the call (:func:`attn_course.cost.peak_bytes_torch` on the CPU,
``torch.cuda.max_memory_allocated`` on a GPU). From the measurements, the crossover
length beyond which each method is faster (and smaller) than the baselines is
interpolated (:func:`attn_course.efficient.compare.crossover`).

Errors (device independent, float64 reference): Performer's relative error against
exact attention as the number of features R grows, on random q, k (small norms) and
on the queries and keys of the course's trained model (lecture 07); and every method's
error on the trained model's q, k, v.

Writes to ``benchmarks/results/``: ``alternatives_<device>.csv`` (one row per method
and T, the machine in every row), ``alternatives_crossovers_<device>.csv``,
``alternatives_<device>.png``, ``alternatives_errors.csv`` and ``alternatives_errors.png``.
Run from the repository root::

    python benchmarks/alternatives.py --threads 1       # about a minute on a CPU
    python benchmarks/alternatives.py --device cuda     # where a GPU is present
    python benchmarks/alternatives.py --lengths 256 512 --no-errors   # a quick look
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from attn_course.cost import cpu_name  # noqa: E402
from attn_course.efficient.compare import (  # noqa: E402
    approximation_errors,
    attention_method,
    crossover,
    measure_methods,
    relative_error,
    tiny_lm_qkv,
)

RESULTS = Path(__file__).with_name("results")
SETTINGS = {  # name -> options of attention_method
    "sdpa": {},
    "softmax": {},
    "sliding_window": {"window": 128},
    "linear": {},
    "linformer": {"proj_len": 128},
    "performer": {"num_features": 128},
}
LABELS = {
    "sdpa": "torch SDPA (fused, exact)",
    "softmax": "course sdpa_torch (exact, stores T x T)",
    "sliding_window": "sliding window, w = 128",
    "linear": "linear attention (elu + 1)",
    "linformer": "Linformer, P = 128",
    "performer": "Performer, R = 128",
}


def machine(device: str) -> dict:
    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        name = cpu_name()
    return {"device_name": name, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": sys.version.split()[0],
            "date": datetime.date.today().isoformat()}


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")


def crossovers(rows: list[dict]) -> list[dict]:
    out = []
    for name in SETTINGS:
        for baseline, key in (("sdpa", "seconds"), ("softmax", "seconds"), ("softmax", "peak_bytes"),
                              ("sdpa", "peak_bytes")):
            if name == baseline:
                continue
            T, how = crossover(rows, name, baseline, key=key)
            out.append(dict(method=name, baseline=baseline, quantity=key,
                            crossover_T=None if T is None else round(T), how=how))
    return out


def plot_cost(rows, cross, device, info, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in SETTINGS:
        mine = [r for r in rows if r["name"] == name]
        T = [r["T"] for r in mine]
        label = LABELS[name]
        c = next((c for c in cross if (c["method"], c["baseline"], c["quantity"])
                  == (name, "sdpa", "seconds")), None)
        if c is not None:
            label += {"measured": f"; faster than SDPA from T ~ {c['crossover_T']}",
                      "below": "; faster than SDPA at every T",
                      "above": "; slower than SDPA at every T"}.get(c["how"], "")
        med = [r["seconds"] for r in mine]
        spread = [[m - r["seconds_min"] for m, r in zip(med, mine, strict=True)],
                  [r["seconds_max"] - m for m, r in zip(med, mine, strict=True)]]
        axes[0].errorbar(T, med, yerr=spread, marker="o", capsize=2, label=label)
        axes[0].set(xscale="log", yscale="log")
        axes[1].loglog(T, [r["peak_bytes"] / 2**20 for r in mine], marker="o", label=LABELS[name])
    axes[0].set(xlabel="sequence length T", ylabel="seconds per call (median; bars: min to max)",
                title=f"time ({device})")
    axes[1].set(xlabel="sequence length T", ylabel="peak MiB allocated", title=f"peak memory ({device})")
    lengths = sorted({r["T"] for r in rows})
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_xticks(lengths, [str(T) for T in lengths])
        ax.minorticks_off()
    fig.suptitle(f"B=1, H=4, D=64, float32, non-causal; {info['device_name']}, "
                 f"{info['torch_threads']} threads, torch {info['torch']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def errors(features=(16, 32, 64, 128, 256, 512, 1024), seeds=range(5)) -> list[dict]:
    """Performer's error against R, and every method's error, float32 vs a float64 reference."""
    g = torch.Generator().manual_seed(0)
    random_qkv = (0.5 * torch.randn(4, 4, 256, 64, generator=g),  # scores q . k / 8: std 0.25
                  0.5 * torch.randn(4, 4, 256, 64, generator=g),
                  torch.randn(4, 4, 256, 64, generator=g))
    trained_qkv = tiny_lm_qkv(layer=0, n=256)  # (256, H, 16, D)
    rows = []
    for inputs, qkv in (("random", random_qkv), ("trained model, layer 0", trained_qkv)):
        for R in features:
            errs = [approximation_errors(*qkv, {"p": attention_method("performer", num_features=R,
                                                                      seed=s)})["p"] for s in seeds]
            rows.append(dict(inputs=inputs, method="performer", setting=f"R={R}", R=R,
                             relative_error=sum(errs) / len(errs)))
    for layer in (0, 1):
        q, k, v = tiny_lm_qkv(layer=layer, n=256)
        methods = {("sliding_window", f"w={w}"): attention_method("sliding_window", window=w)
                   for w in (4, 8)}
        methods[("linear", "elu+1")] = attention_method("linear")
        methods.update({("linformer", f"P={p}"): attention_method("linformer", proj_len=p) for p in (4, 8)})
        methods.update({("performer", f"R={m}"): attention_method("performer", num_features=m)
                        for m in (64, 1024)})
        exact = attention_method("softmax")(q.double(), k.double(), v.double())
        for (name, setting), f in methods.items():
            rows.append(dict(inputs=f"trained model, layer {layer}", method=name, setting=setting,
                             R=None, relative_error=relative_error(f(q, k, v), exact)))
    return rows


def plot_errors(rows, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for inputs in ("random", "trained model, layer 0"):
        mine = [r for r in rows if r["inputs"] == inputs and r["R"] is not None]
        axes[0].loglog([r["R"] for r in mine], [r["relative_error"] for r in mine], marker="o",
                       label=f"Performer on {inputs} q, k")
    Ms = [r["R"] for r in rows if r["R"] is not None and r["inputs"] == "random"]
    first = next(r["relative_error"] for r in rows if r["inputs"] == "random")
    axes[0].loglog(Ms, [first * (Ms[0] / m) ** 0.5 for m in Ms], "k--", label="1 / sqrt(R)")
    axes[0].set(xlabel="random features R", ylabel="relative error vs exact",
                title="Performer: error against the number of features")
    axes[0].set_xticks(Ms, [str(m) for m in Ms])
    axes[0].minorticks_off()
    table = [r for r in rows if r["R"] is None]
    labels = sorted({(r["method"], r["setting"]) for r in table}, key=lambda x: (x[0], x[1]))
    for j, layer in enumerate((0, 1)):
        vals = [next(r["relative_error"] for r in table if r["inputs"] == f"trained model, layer {layer}"
                     and (r["method"], r["setting"]) == lab) for lab in labels]
        axes[1].barh([i + 0.4 * j for i in range(len(labels))], vals, height=0.4, label=f"layer {layer}")
    axes[1].set_yticks([i + 0.2 for i in range(len(labels))], [f"{m} {s}" for m, s in labels], fontsize=8)
    axes[1].set(xlabel="relative error vs exact attention (0 = exact)",
                title="every method on the trained model's q, k, v (T = 16)")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--lengths", type=int, nargs="+")
    parser.add_argument("--max-quadratic", type=int, default=None,
                        help="longest T for the course's sdpa_torch (stores T x T)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default); on a machine shared with "
                             "other work, 1 gives steadier timings")
    parser.add_argument("--no-errors", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    lengths = args.lengths or ([64, 128, 256, 512, 1024, 2048, 4096, 8192] if device == "cpu"
                               else [1024, 2048, 4096, 8192, 16384, 32768])
    max_quadratic = args.max_quadratic or (4096 if device == "cpu" else 16384)
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine(device)
    start = time.perf_counter()
    methods = {name: attention_method(name, **opts) for name, opts in SETTINGS.items()}
    rows = []
    for T in lengths:  # one length at a time, so that progress shows
        rows += measure_methods(methods, [T], device=device, repeat=args.repeat,
                                max_length={"softmax": max_quadratic})
        print(f"T={T}: " + ", ".join(f"{r['name']} {r['seconds'] * 1e3:.2f} ms (median) "
                                     f"{r['peak_bytes'] / 2**20:.1f} MiB" for r in rows if r["T"] == T),
              flush=True)
    rows = [{**r, **info} for r in rows]
    write_csv(args.out / f"alternatives_{device}.csv", rows)
    cross = crossovers(rows)
    write_csv(args.out / f"alternatives_crossovers_{device}.csv", cross)
    for c in cross:
        print(f"  {c['method']:>14} vs {c['baseline']:<7} {c['quantity']:<10}: {c['how']:>8} "
              f"{'' if c['crossover_T'] is None else c['crossover_T']}")
    plot_cost(rows, cross, device, info, args.out / f"alternatives_{device}.png")
    if not args.no_errors:
        err_rows = errors()
        write_csv(args.out / "alternatives_errors.csv", err_rows)
        plot_errors(err_rows, args.out / "alternatives_errors.png")
    print(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
