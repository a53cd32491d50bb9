"""FlashAttention on a GPU: the course's Triton kernel against PyTorch's SDPA backends.

For sequence lengths T = S (default 1k to 16k), head dims 64 and 128, float16 and bfloat16,
causal and not, forward and forward+backward, measures:

- ``course triton``: ``attn_course.flash.triton.kernel.flash_attention`` (autotuned);
- ``sdpa <backend>``: ``torch.nn.functional.scaled_dot_product_attention`` pinned to one
  backend with ``torch.nn.attention.sdpa_kernel`` (FLASH_ATTENTION, CUDNN_ATTENTION,
  EFFICIENT_ATTENTION, MATH); a backend that raises is recorded as an error and skipped
  for the rest of that configuration;
- ``naive torch``: softmax(Q K^T * scale) V with the scores materialised.

MATH and naive store the T x T scores, so they run only up to ``--max-naive-n``. Every
configuration uses about ``--tokens`` query positions in total (batch * heads * T), so
each T does similar work per element and memory use stays modest. Timing: a fixed
number of warm-up calls (the first also autotunes and compiles), then ``--iters`` calls
between two CUDA events. TFLOP/s counts the matrix products only: forward
4 * B * H * T^2 * D (halved when causal), backward 2.5 times the forward. Peak memory is
``torch.cuda.max_memory_allocated`` during one call minus what was allocated before it.

Writes to ``--out`` (default ``benchmarks/results``), rows flushed as they come:

- ``flash_gpu.csv``: one row per measurement, stamped with the GPU and the versions; for
  the course kernel, ``tiles`` records the configuration autotuning chose per kernel;
- ``flash_gpu_summary.csv``: at T >= 4096, the course kernel's TFLOP/s divided by the
  best SDPA backend's, for the forward and for the backward alone
  (time(fwd+bwd) - time(fwd));
- ``flash_gpu_<dtype>.png``: TFLOP/s against T, one panel per (mode, D, causal).

``--dry-run`` runs one tiny configuration on the CPU (the Triton interpreter, T = 64)
to check that the script and its CSV work without a GPU. Run from the repository root::

    PYTHONPATH=. python benchmarks/flash_gpu.py --out /tmp/flash        # a few minutes
    PYTHONPATH=. python benchmarks/flash_gpu.py --dry-run --out /tmp/flash_dry
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import math
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).with_name("results")
SDPA_BACKENDS = ["FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "MATH"]
FIELDS = ["impl", "dtype", "D", "causal", "mode", "T", "B", "H", "ms", "tflops", "peak_mib",
          "status", "tiles", "device", "torch", "triton", "cuda", "date"]


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def sdpa_pinned(backend: str):
    """SDPA restricted to one backend (the course's helper from lecture 08)."""
    from attn_course.cost import torch_sdpa_with

    return torch_sdpa_with(backend)


def naive(q, k, v, causal: bool):
    """Standard attention as one would first write it: the (T, T) scores in memory."""
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, H, T, T)
    if causal:
        T = q.shape[-2]
        keep = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v  # (B, H, T, D)


def implementations(max_naive_n: int):
    """name -> (fn(q, k, v, causal), largest T it runs at)."""
    from attn_course.flash.triton.kernel import flash_attention

    impls = {"course triton": (lambda q, k, v, causal: flash_attention(q, k, v, causal=causal),
                               math.inf)}
    for backend in SDPA_BACKENDS:
        impls[f"sdpa {backend.lower().replace('_attention', '')}"] = (
            sdpa_pinned(backend), max_naive_n if backend == "MATH" else math.inf)
    impls["naive torch"] = (naive, max_naive_n)
    return impls


def chosen_tiles(mode: str) -> str:
    """The course kernel's autotuned tiles at its last call ("" under the interpreter)."""
    from attn_course.flash.triton.kernel import tiles_used

    used = tiles_used()
    names = ("fwd",) if mode == "fwd" else ("fwd", "dkdv", "dq")
    return "; ".join(f"{n}: {used[n]}" for n in names if used[n])


def flops(B: int, H: int, T: int, D: int, causal: bool, mode: str) -> float:
    fwd = 4.0 * B * H * T * T * D * (0.5 if causal else 1.0)
    return fwd * (3.5 if mode == "fwd+bwd" else 1.0)


def timed_ms(fn, warmup: int, iters: int, cuda: bool) -> float:
    """Milliseconds per call: ``warmup`` untimed calls, then ``iters`` timed ones."""
    for _ in range(warmup):
        fn()
    if not cuda:
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - t0) * 1e3 / iters
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def peak_mib(fn, cuda: bool) -> float:
    if not cuda:
        return float("nan")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    result = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del result
    return peak / 2**20


def measure(fn, q, k, v, causal, mode, args, cuda):
    """(ms, peak MiB) of one implementation in one mode."""
    if mode == "fwd":
        def call():
            with torch.no_grad():
                return fn(q, k, v, causal)
    else:
        qg, kg, vg = (x.detach().requires_grad_() for x in (q, k, v))
        dout = torch.randn_like(q)

        def call():
            out = fn(qg, kg, vg, causal)
            return torch.autograd.grad(out, (qg, kg, vg), dout)
    ms = timed_ms(call, args.warmup, args.iters, cuda)
    return ms, peak_mib(call, cuda)


def summarise(rows: list[dict], min_n: int = 4096) -> list[dict]:
    """Course kernel / best SDPA backend, forward and backward alone, at T >= min_n."""
    ok = [r for r in rows if r["status"] == "ok"]
    index = {(r["impl"], r["dtype"], r["D"], r["causal"], r["mode"], r["T"]): r for r in ok}
    sdpa = sorted({r["impl"] for r in ok if r["impl"].startswith("sdpa")})

    def fwd_tflops(impl, cfg):
        r = index.get((impl, *cfg[:3], "fwd", cfg[3]))
        return None if r is None else r["tflops"]

    def bwd_tflops(impl, cfg):
        dtype, D, causal, T = cfg
        f = index.get((impl, dtype, D, causal, "fwd", T))
        fb = index.get((impl, dtype, D, causal, "fwd+bwd", T))
        if f is None or fb is None or fb["ms"] <= f["ms"]:
            return None
        bwd_flops = 2.5 * flops(fb["B"], fb["H"], T, D, causal, "fwd")
        return bwd_flops / ((fb["ms"] - f["ms"]) * 1e-3) / 1e12

    out = []
    for cfg in sorted({(r["dtype"], r["D"], r["causal"], r["T"]) for r in ok if r["T"] >= min_n}):
        row = dict(zip(("dtype", "D", "causal", "T"), cfg, strict=True))
        for mode, get in (("fwd", fwd_tflops), ("bwd", bwd_tflops)):
            ours = get("course triton", cfg)
            best = max(((get(i, cfg), i) for i in sdpa if get(i, cfg) is not None),
                       default=(None, ""))
            row[f"{mode}_course_tflops"] = None if ours is None else float(f"{ours:.4g}")
            row[f"{mode}_best_sdpa"] = best[1]
            row[f"{mode}_best_sdpa_tflops"] = None if best[0] is None else float(f"{best[0]:.4g}")
            row[f"{mode}_ratio"] = (None if ours is None or not best[0]
                                    else float(f"{ours / best[0]:.3g}"))
        out.append(row)
    return out


def plot(rows: list[dict], out: Path, device: str) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG written")
        return []
    paths = []
    ok = [r for r in rows if r["status"] == "ok"]
    for dtype in sorted({r["dtype"] for r in ok}):
        panels = sorted({(r["D"], r["causal"]) for r in ok if r["dtype"] == dtype})
        fig, axes = plt.subplots(2, len(panels), figsize=(3.2 * len(panels), 5.6),
                                 squeeze=False, sharex=True)
        for row, mode in enumerate(("fwd", "fwd+bwd")):
            for col, (D, causal) in enumerate(panels):
                ax = axes[row][col]
                for impl in sorted({r["impl"] for r in ok}):
                    pts = sorted((r["T"], r["tflops"]) for r in ok if r["impl"] == impl
                                 and r["dtype"] == dtype and r["D"] == D
                                 and r["causal"] == causal and r["mode"] == mode)
                    if pts:
                        ax.plot(*zip(*pts, strict=True), "o-", ms=3, label=impl,
                                lw=2.5 if impl == "course triton" else 1.2)
                ax.set_xscale("log", base=2)
                ax.set_title(f"{mode}, D={D}, {'causal' if causal else 'full'}", fontsize=9)
                if col == 0:
                    ax.set_ylabel("TFLOP/s")
                if row == 1:
                    ax.set_xlabel("T")
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"{device}, {dtype}: torch {version('torch')}, triton {version('triton')}",
                     fontsize=10)
        fig.tight_layout()
        path = out / f"flash_gpu_{dtype}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for CSV and PNG files")
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    p.add_argument("--dtypes", nargs="+", default=["float16", "bfloat16"],
                   choices=["float16", "bfloat16", "float32"])
    p.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    p.add_argument("--tokens", type=int, default=2**17, help="batch * heads * T per config")
    p.add_argument("--heads", type=int, default=16, help="heads per batch element (at most)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--max-naive-n", type=int, default=4096,
                   help="largest T for the MATH backend and naive torch")
    p.add_argument("--budget-s", type=float, default=330.0,
                   help="stop measuring after this many seconds (remaining rows: skipped)")
    p.add_argument("--impls", nargs="+", default=None, help="only these implementations")
    p.add_argument("--dry-run", action="store_true",
                   help="tiny CPU run (Triton interpreter): T=64, D=16, float16, 1 iteration")
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.dry_run
    if args.dry_run:
        args.lengths, args.head_dims, args.dtypes = [64], [16], ["float16"]
        args.tokens, args.heads, args.warmup, args.iters = 128, 2, 1, 1
    elif not cuda:
        p.error("no CUDA GPU here: use --dry-run to check the script on the CPU")
    dev = "cuda" if cuda else "cpu"
    device = torch.cuda.get_device_name() if cuda else "CPU (Triton interpreter)"
    stamp = {"device": device, "torch": torch.__version__, "triton": version("triton"),
             "cuda": torch.version.cuda or "", "date": datetime.date.today().isoformat()}
    impls = implementations(args.max_naive_n)
    if args.impls:
        impls = {k: v for k, v in impls.items() if k in args.impls}
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = args.out / "flash_gpu.csv"
    rows: list[dict] = []
    failed: set = set()
    t_start = time.perf_counter()
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            for D in args.head_dims:
                for causal in (False, True):
                    for T in args.lengths:
                        BH = max(1, args.tokens // T)
                        H = min(args.heads, BH)
                        B = max(1, BH // H)
                        g = torch.Generator(device=dev).manual_seed(T + D)
                        q, k, v = (torch.randn(B, H, T, D, device=dev, dtype=dtype, generator=g)
                                   for _ in range(3))  # (B, H, T, D) each
                        for mode in args.modes:
                            for name, (fn, max_n) in impls.items():
                                cfg = (name, dtype_name, D, causal, mode)
                                row = {"impl": name, "dtype": dtype_name, "D": D,
                                       "causal": causal, "mode": mode, "T": T, "B": B, "H": H,
                                       "ms": "", "tflops": "", "peak_mib": "", "tiles": "",
                                       **stamp}
                                if T > max_n:
                                    row["status"] = f"skipped: T > {max_n} (stores T x T)"
                                elif cfg in failed:
                                    row["status"] = "skipped: failed at a smaller T"
                                elif time.perf_counter() - t_start > args.budget_s:
                                    row["status"] = "skipped: time budget"
                                else:
                                    try:
                                        ms, peak = measure(fn, q, k, v, causal, mode, args, cuda)
                                        tf = flops(B, H, T, D, causal, mode) / (ms * 1e-3) / 1e12
                                        row.update(ms=float(f"{ms:.5g}"), tflops=float(f"{tf:.4g}"),
                                                   peak_mib=round(peak, 1), status="ok")
                                        if name == "course triton":
                                            row["tiles"] = chosen_tiles(mode)
                                    except Exception as e:  # noqa: BLE001 - recorded, not hidden
                                        msg = str(e).strip().splitlines()
                                        row["status"] = (f"error: {type(e).__name__}: "
                                                         f"{msg[0][:150] if msg else ''}")
                                        failed.add(cfg)
                                        if cuda:
                                            torch.cuda.empty_cache()
                                rows.append(row)
                                writer.writerow(row)
                                f.flush()
                                print(f"{name:<16} {dtype_name:<8} D={D:<3} "
                                      f"{'causal' if causal else 'full  '} {mode:<7} T={T:<6} "
                                      + (f"{row['ms']:9.3f} ms {row['tflops']:7.1f} TFLOP/s "
                                         f"{row['peak_mib']:8.1f} MiB"
                                         if row["status"] == "ok" else row["status"]),
                                      flush=True)
                        del q, k, v
    summary = summarise(rows, min_n=0 if args.dry_run else 4096)
    if summary:
        with (args.out / "flash_gpu_summary.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(summary[0]))
            writer.writeheader()
            writer.writerows(summary)
        print("\ncourse kernel / best SDPA backend (TFLOP/s ratio):")
        for r in summary:
            print(f"  {r['dtype']:<8} D={r['D']:<3} {'causal' if r['causal'] else 'full  '} "
                  f"T={r['T']:<6} fwd {r['fwd_ratio']} (vs {r['fwd_best_sdpa']})  "
                  f"bwd {r['bwd_ratio']} (vs {r['bwd_best_sdpa']})")
    for path in plot(rows, args.out, device):
        print(f"wrote {path}")
    print(f"wrote {csv_path} ({len(rows)} rows, {time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
