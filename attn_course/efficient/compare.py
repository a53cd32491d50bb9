"""The efficient attentions side by side: one callable per method, and its error (lecture 10).

``attention_method(name, ...)`` returns a function ``f(q, k, v) -> out`` with the
method's settings (window, number of features, projected length, random seed) fixed,
so that the recall experiment, the approximation-error measurement, the notebook and
``benchmarks/alternatives.py`` all run exactly the same configurations:

    "softmax"         exact attention (:func:`~attn_course.attention.sdpa_torch`)
    "sdpa"            exact attention by PyTorch's fused kernel (for timings)
    "sliding_window"  :func:`~attn_course.efficient.sliding_window.sliding_window_attention`
    "linear"          :func:`~attn_course.efficient.linear.linear_attention` (elu + 1,
                      or the identity map without the normaliser: an outer-product memory)
    "linformer"       :func:`~attn_course.efficient.linformer.linformer_attention`, random
                      N(0, 1/P) projections (untrained, as at initialisation)
    "performer"       :func:`~attn_course.efficient.performer.performer_attention`

:func:`approximation_errors` measures each method against exact softmax attention on
given q, k, v; :func:`tiny_lm_qkv` takes those from the course's trained model (lecture
07), so that the comparison is made on attention patterns a model actually learned, not
only on random vectors, whose attention is nearly uniform and easy to approximate.

:func:`measure_methods` times each method and measures its peak memory at several
sequence lengths (with :mod:`attn_course.cost`'s tools on the CPU, CUDA's allocator
statistics on a GPU), and :func:`crossover` finds, from those measurements, the length
beyond which a method is cheaper than a baseline.

Caveat. Linformer cannot be causal: ``attention_method("linformer", causal=True)``
is refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from attn_course.attention import sdpa_torch
from attn_course.efficient.linear import elu_feature_map, linear_attention
from attn_course.efficient.linformer import linformer_attention
from attn_course.efficient.performer import orthogonal_random_features, performer_attention
from attn_course.efficient.sliding_window import sliding_window_attention
from attn_course.multihead import split_heads

__all__ = [
    "METHODS",
    "approximation_errors",
    "attention_method",
    "crossover",
    "measure_methods",
    "relative_error",
    "tiny_lm_qkv",
]

METHODS = ("softmax", "sdpa", "sliding_window", "linear", "linformer", "performer")

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def attention_method(name: str, causal: bool = False, scale: float | None = None,
                     window: int = 64, num_features: int = 64, proj_len: int = 64,
                     feature_map: str = "elu", normalize: bool = True, seed: int = 0) -> Attention:
    """A function ``f(q, k, v)`` computing method ``name`` with these settings.

    q: (..., T, D), k: (..., S, D), v: (..., S, Dv) -> (..., T, Dv). scale: the softmax
    scale (1/sqrt(D) by default; linear attention has none). window: w for
    "sliding_window". num_features: R for "performer". proj_len: P for "linformer".
    feature_map ("elu": elu + 1, or "identity") and normalize: for "linear" (see
    :func:`~attn_course.efficient.linear.kernel_attention`).
    seed: for the random features and projections, drawn once per (shape, dtype,
    device) and reused, so repeated calls compute the same function.
    """
    if name not in METHODS:
        raise ValueError(f"name must be one of {METHODS}, got {name!r}")
    if name == "linformer" and causal:
        raise ValueError("linformer cannot be causal: its projections mix all key positions")
    cache: dict = {}

    def drawn(key, make):
        if key not in cache:
            cache[key] = make(torch.Generator(device="cpu").manual_seed(seed))
        return cache[key]

    if name == "softmax":
        return lambda q, k, v: sdpa_torch(q, k, v, causal=causal, scale=scale)
    if name == "sdpa":
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    if name == "sliding_window":
        return lambda q, k, v: sliding_window_attention(q, k, v, window, causal=causal, scale=scale)
    if name == "linear":
        if feature_map not in ("elu", "identity"):
            raise ValueError(f"feature_map must be 'elu' or 'identity', got {feature_map!r}")
        phi = elu_feature_map if feature_map == "elu" else (lambda x: x)
        return lambda q, k, v: linear_attention(q, k, v, causal=causal, feature_map=phi,
                                                normalize=normalize)
    if name == "linformer":
        def linformer(q, k, v):
            S = k.shape[-2]
            E, F_ = drawn(("EF", S, k.dtype, k.device), lambda g: tuple(
                (torch.randn(proj_len, S, generator=g, dtype=torch.float64) / math.sqrt(proj_len))
                .to(k.dtype).to(k.device) for _ in range(2)))
            return linformer_attention(q, k, v, E, F_, scale=scale)
        return linformer

    def performer(q, k, v):
        D = q.shape[-1]
        W = drawn(("W", D, q.dtype, q.device), lambda g: orthogonal_random_features(
            num_features, D, generator=g, dtype=torch.float64).to(q.dtype).to(q.device))
        return performer_attention(q, k, v, W=W, causal=causal, scale=scale)
    return performer


def relative_error(out: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean over the leading dimensions of ||out - exact|| / ||exact|| (norms over (T, Dv))."""
    if out.shape != exact.shape:
        raise ValueError(f"out has shape {tuple(out.shape)}, exact has {tuple(exact.shape)}")
    diff = torch.linalg.matrix_norm((out - exact).double())  # (...,)
    return (diff / torch.linalg.matrix_norm(exact.double())).mean().item()


def approximation_errors(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         methods: dict[str, Attention], causal: bool = False,
                         scale: float | None = None) -> dict[str, float]:
    """{name: relative error of methods[name](q, k, v) against exact softmax attention}.

    q, k, v: (..., T, D), (..., S, D), (..., S, Dv); the exact result is computed in
    float64 with the same ``causal`` and ``scale``.
    """
    exact = sdpa_torch(q.double(), k.double(), v.double(), causal=causal, scale=scale)
    return {name: relative_error(f(q, k, v), exact) for name, f in methods.items()}


@torch.no_grad()
def tiny_lm_qkv(layer: int = 0, n: int = 64, seed: int = 0):
    """Queries, keys and values of the trained reversal model (lecture 07) on its task.

    Runs ``n`` fresh sequences (seeded) through :func:`attn_course.data.tiny_lm.load_tiny_lm`
    and returns q, k, v of block ``layer``, each (n, H, T, D), exactly as that block's
    attention sees them (after RoPE when the model uses it).
    """
    from attn_course.data.tiny_lm import load_tiny_lm, make_batch
    from attn_course.positional import apply_rope

    model = load_tiny_lm()
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(model.blocks):
        raise ValueError(f"layer must be an integer in [0, {len(model.blocks)}), got {layer!r}")
    block = model.blocks[layer]
    mha = block.attn
    captured = {}
    hooks = [getattr(mha, f"{name}_proj").register_forward_hook(
        lambda _m, _inp, out, name=name: captured.__setitem__(name, out)) for name in "qkv"]
    try:
        inputs, _, _ = make_batch(n, torch.Generator().manual_seed(seed))  # (n, T)
        model(inputs)
    finally:
        for h in hooks:
            h.remove()
    q, k, v = (split_heads(captured[name], mha.num_heads) for name in "qkv")  # (n, H, T, D)
    if block.rope_base is not None:
        q, k = apply_rope(q, base=block.rope_base), apply_rope(k, base=block.rope_base)
    return q, k, v


def measure_methods(methods: dict[str, Attention], lengths, B: int = 1, H: int = 4, D: int = 64,
                    device: str = "cpu", repeat: int = 3, memory: bool = True, seed: int = 0,
                    max_length: dict[str, int] | None = None) -> list[dict]:
    """Seconds per call and peak bytes of each method at each length T = S (float32).

    q, k, v: (B, H, T, D). Time is the median of ``repeat`` timed runs (after a warm-up;
    on CUDA each call ends with a synchronisation), with the fastest and slowest run;
    memory on the CPU is :func:`attn_course.cost.peak_bytes_torch` (the allocator's
    high-water mark during the call, above its inputs), on CUDA ``max_memory_allocated``
    above the inputs. max_length: {name: longest T to run it at} (skips, e.g., the quadratic
    methods at lengths whose score matrix would not fit). Returns one dict per
    (method, T): name, T, B, H, D, device, seconds (the median), seconds_min,
    seconds_max, peak_bytes.
    """
    max_length = max_length or {}
    rows = []
    for T in lengths:
        g = torch.Generator().manual_seed(seed)
        q, k, v = torch.randn(3, B, H, T, D, generator=g).to(device).unbind(0)  # (B, H, T, D)
        for name, f in methods.items():
            if T > max_length.get(name, T):
                continue
            with torch.inference_mode():
                (seconds, fastest, slowest), peak = _cost(f, (q, k, v), device, repeat, memory)
            rows.append(dict(name=name, T=T, B=B, H=H, D=D, device=device, seconds=seconds,
                             seconds_min=fastest, seconds_max=slowest, peak_bytes=peak))
    return rows


def _times(call, repeat: int) -> list[float]:
    """Seconds of ``repeat`` timed calls, after one warm-up call; each timed run repeats
    the call until it lasts about 2 ms (as ``timeit`` does) and records the mean."""
    import time

    t0 = time.perf_counter()
    call()  # warm-up: first-call allocations, lazy initialisation
    number = max(1, math.ceil(2e-3 / max(time.perf_counter() - t0, 1e-9)))
    times = []
    for _ in range(max(1, int(repeat))):
        t0 = time.perf_counter()
        for _ in range(number):
            call()
        times.append((time.perf_counter() - t0) / number)
    return times


def _cost(f: Attention, qkv, device: str, repeat: int, memory: bool):
    """(seconds per call: (median, min, max) over ``repeat`` runs, peak bytes or None)."""
    from attn_course.cost import peak_bytes_torch

    def call():
        out = f(*qkv)
        if device != "cpu":
            torch.cuda.synchronize()
        return out

    times = _times(call, repeat)
    seconds = (float(np.median(times)), min(times), max(times))
    if not memory:
        return seconds, None
    if device == "cpu":
        return seconds, peak_bytes_torch(lambda: f(*qkv))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    call()
    return seconds, torch.cuda.max_memory_allocated() - base


def crossover(rows: list[dict], name: str, baseline: str, key: str = "seconds"):
    """The length T beyond which ``name`` costs less ``key`` than ``baseline``.

    Uses the measurements in ``rows`` (from :func:`measure_methods`) at the lengths
    both were run at; between the two lengths where the ratio name / baseline crosses 1
    (for the last time) T is interpolated on a log-log scale. Returns
    ``(T, how)``: how is "measured" (T interpolated), "below" (``name`` is already
    cheaper at the shortest common length, returned as T), "above" (never cheaper
    within the lengths measured; T is None) or "none" (no common lengths; T is None).
    """
    def table(n):
        return {r["T"]: r[key] for r in rows if r["name"] == n and r[key] is not None}

    a, b = table(name), table(baseline)
    Ts = sorted(set(a) & set(b))
    if not Ts:
        return None, "none"
    ratio = np.log([a[T] / b[T] for T in Ts])  # > 0: name costs more
    if ratio[-1] >= 0:
        return None, "above"
    # the last length at which name still cost at least as much as the baseline
    worse = [i for i in range(len(Ts)) if ratio[i] >= 0]
    if not worse:
        return Ts[0], "below"
    i = worse[-1]
    x0, x1 = math.log(Ts[i]), math.log(Ts[i + 1])
    x = x0 + (x1 - x0) * ratio[i] / (ratio[i] - ratio[i + 1])  # where the ratio is 1
    return float(math.exp(x)), "measured"
