"""Flash-Decoding: one query against a long KV cache, split across key blocks (lecture 09).

Dao, Haziza, Massa and Sizov, "Flash-Decoding for long-context inference" (2023, the
PyTorch and Stanford CRFM blogs; in FlashAttention >= 2.2 as ``flash_attn_with_kvcache``
with ``num_splits``). During generation each step has T = 1 query per (batch, head) and
S keys in the cache. FlashAttention-2 gives every (batch, head, block of queries) one
program, so a step launches only B * H programs, each streaming all S keys: on a GPU
with more streaming multiprocessors than B * H most of them wait. Flash-Decoding splits
the S keys into ``num_splits`` chunks, computes each chunk's partial output and
log-sum-exp independently (B * H * num_splits programs), and merges them:

    lse = log sum_s exp(lse_s),    out = sum_s exp(lse_s - lse) * out_s.

The merge is exact: out_s is the softmax-weighted average over chunk s, and
exp(lse_s - lse) is the share of the total softmax mass that chunk s holds (the same
rescaling as the online softmax, done once at the end instead of per tile).

Caveats: numpy, one process; the splits run one after another here, so this shows that
the result is exact and counts the parallelism (:func:`decoding_parallelism`), it does
not measure a speed-up. No causal mask (a decoding query sees the whole cache).
"""

from __future__ import annotations

import math

import numpy as np

from attn_course.flash.tiled import flash_forward
from attn_course.validation import require_array

__all__ = ["decoding_parallelism", "flash_decode", "merge_partials", "split_partials"]


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def split_partials(q, k, v, num_splits: int, scale=None, block_k: int = 64):
    """Partial attention of q over each of ``num_splits`` contiguous chunks of the keys.

    q: (..., T, D), k: (..., S, D), v: (..., S, Dv) numpy arrays; the S keys are cut into
    num_splits chunks whose lengths differ by at most one (1 <= num_splits <= S).
    Returns out_parts (num_splits, ..., T, Dv), each chunk's normalised output, and
    lse_parts (num_splits, ..., T), each chunk's log-sum-exp of scaled scores.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        require_array(name, x, min_ndim=2)
    S = k.shape[-2]
    num_splits = _positive_int("num_splits", num_splits)
    if num_splits > S:
        raise ValueError(f"num_splits must be at most S = {S} (one key per chunk at least), "
                         f"got {num_splits}")
    bounds = np.linspace(0, S, num_splits + 1).round().astype(int)  # chunk edges
    outs, lses = [], []
    for s0, s1 in zip(bounds[:-1], bounds[1:], strict=True):
        out, lse = flash_forward(q, k[..., s0:s1, :], v[..., s0:s1, :], scale=scale,
                                 block_q=max(1, q.shape[-2]), block_k=block_k)
        outs.append(out)  # (..., T, Dv)
        lses.append(lse)  # (..., T)
    return np.stack(outs), np.stack(lses)  # (G, ..., T, Dv), (G, ..., T)


def merge_partials(out_parts, lse_parts):
    """Merge per-chunk results into attention over all keys; returns ``(out, lse)``.

    out_parts: (num_splits, ..., T, Dv); lse_parts: (num_splits, ..., T), a chunk with no
    visible key given lse = -inf (it gets weight 0). Returns out (..., T, Dv) and lse
    (..., T): lse = log sum_s exp(lse_s), out = sum_s exp(lse_s - lse) out_s.
    """
    out_parts, lse_parts = np.asarray(out_parts), np.asarray(lse_parts)
    if out_parts.ndim < 3 or lse_parts.shape != out_parts.shape[:-1]:
        raise ValueError(f"out_parts must be (num_splits, ..., T, Dv) and lse_parts "
                         f"(num_splits, ..., T) = out_parts.shape[:-1], got "
                         f"{out_parts.shape} and {lse_parts.shape}")
    m = lse_parts.max(axis=0)  # (..., T) the largest chunk lse, for stability
    shift = np.where(np.isfinite(m), m, 0.0)  # (..., T) an all -inf row: weights 0
    w = np.exp(lse_parts - shift)  # (G, ..., T) each chunk's softmax mass / exp(shift)
    total = w.sum(axis=0)  # (..., T)
    with np.errstate(divide="ignore"):
        lse = np.where(total > 0, shift + np.log(np.where(total > 0, total, 1)), -np.inf)
    weights = np.divide(w, total, out=np.zeros_like(w), where=total > 0)  # (G, ..., T)
    out = np.sum(weights[..., None] * out_parts, axis=0)  # (..., T, Dv)
    return out, lse


def flash_decode(q, k, v, num_splits: int, scale=None, block_k: int = 64):
    """Attention of q over all S keys by Flash-Decoding; returns ``(out, lse)``.

    q: (..., T, D) (T = 1 when decoding), k: (..., S, D), v: (..., S, Dv). Equal to
    standard attention (no mask) up to rounding, for any 1 <= num_splits <= S.
    """
    return merge_partials(*split_partials(q, k, v, num_splits, scale=scale, block_k=block_k))


def decoding_parallelism(B: int, H: int, S: int, num_splits: int, processors: int,
                         block_k: int = 64, T: int = 1, block_q: int = 64) -> dict:
    """Programs, and tile steps on the critical path, of one decoding step (a count).

    FlashAttention-2 launches B * H * ceil(T / block_q) programs, each streaming its S
    keys in tiles of ``block_k``; Flash-Decoding multiplies the programs by num_splits
    and divides each one's keys by it, then merges. With ``processors`` streaming
    multiprocessors running one program each at a time, the step takes
    ceil(programs / processors) waves of ceil(S / num_splits / block_k) tile steps.
    Returns {"programs", "busy_fraction" (of the processors in the first wave),
    "tile_steps" (critical path), "merge_reads" (elements of out and lse read by the
    merge, per unit of Dv + 1)}. A model: it ignores launch costs and memory bandwidth.
    """
    B, H, S, T = (_positive_int(n, x) for n, x in (("B", B), ("H", H), ("S", S), ("T", T)))
    num_splits = _positive_int("num_splits", num_splits)
    processors = _positive_int("processors", processors)
    block_k, block_q = _positive_int("block_k", block_k), _positive_int("block_q", block_q)
    if num_splits > S:
        raise ValueError(f"num_splits must be at most S = {S}, got {num_splits}")
    programs = B * H * math.ceil(T / block_q) * num_splits
    waves = math.ceil(programs / processors)
    steps = waves * math.ceil(math.ceil(S / num_splits) / block_k)
    return {"programs": programs, "busy_fraction": min(1.0, programs / processors),
            "tile_steps": steps, "merge_reads": B * H * T * num_splits if num_splits > 1 else 0}
