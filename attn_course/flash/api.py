"""One entry point for exact attention on torch tensors: ``attention(q, k, v, impl=...)``.

- ``"triton"``: the course's FlashAttention-2 kernel (``attn_course.flash.triton.kernel``),
  compiled on a CUDA GPU, or run by Triton's CPU interpreter where there is none (slow:
  small sizes only).
- ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention``, which picks its own
  backend (FlashAttention, cuDNN, memory-efficient or math).
- ``"reference"``: ``attn_course.attention.sdpa_torch``, the course's readable version that
  materialises the T x S matrix (low-precision inputs are computed in float32).
- ``"auto"``: ``"triton"`` for CUDA tensors when Triton is installed, else ``"sdpa"``.

All four compute the same function with the same conventions (scale 1/sqrt(D) by
default; causal = top-left aligned, key j visible to query i iff j <= i), accept the
same shapes (q (..., T, D), k (..., S, D), v (..., S, Dv), leading dimensions that
broadcast), return the log-sum-exp on request (``return_lse=True``) and are
differentiable. Importing this module does not import Triton: the kernel module is
loaded on first use, because it decides at import time whether to run compiled or
interpreted.
"""

from __future__ import annotations

import importlib.util
import math

import torch
import torch.nn.functional as F

from attn_course.attention import sdpa_torch

__all__ = ["IMPLS", "attention", "resolve_impl", "triton_available"]

IMPLS = ("auto", "triton", "sdpa", "reference")


def triton_available() -> bool:
    """Whether the ``triton`` package is installed (``pip install 'attn-course[gpu]'``)."""
    return importlib.util.find_spec("triton") is not None


def resolve_impl(impl: str, q: torch.Tensor) -> str:
    """The implementation ``attention`` will run for ``impl`` and the query tensor ``q``."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl != "auto":
        return impl
    return "triton" if q.is_cuda and triton_available() else "sdpa"


def _check_shapes(q, k, v):
    """The contract every implementation shares; returns the broadcast leading dims.

    q (..., T, D), k (..., S, D), v (..., S, Dv) torch tensors, leading dimensions that
    broadcast, T, S, D, Dv >= 1.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
        if x.ndim < 2 or 0 in x.shape[-2:]:
            raise ValueError(f"{name} must have shape (..., length, head dim) with both "
                             f"at least 1, got {tuple(x.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share the head dim D, got q {tuple(q.shape)} and "
                         f"k {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must share the length S (one value per key), got k "
                         f"{tuple(k.shape)} and v {tuple(v.shape)}")
    try:
        return torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(f"the leading dimensions of q, k and v must broadcast, got q "
                         f"{tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)}"
                         ) from None


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _logsumexp_rows(q, k, causal: bool, scale: float, block: int = 256) -> torch.Tensor:
    """lse (..., T) of the scaled (causal-masked) scores, ``block`` query rows at a time.

    A second pass over K, as the backward of any fused kernel needs; only a
    (block, S) slab of scores exists at once. float32 at least (float64 stays float64).
    """
    compute = _lse_dtype(q.dtype)
    q, k = q.to(compute), k.to(compute)
    T, S = q.shape[-2], k.shape[-2]
    parts = []
    for i0 in range(0, T, block):
        i1 = min(i0 + block, T)
        s = (q[..., i0:i1, :] @ k.transpose(-1, -2)) * scale  # (..., rows, S)
        if causal:
            keep = torch.arange(S, device=q.device) <= torch.arange(i0, i1, device=q.device)[:, None]
            s = s.masked_fill(~keep, float("-inf"))  # (rows, S) key j visible iff j <= i
        parts.append(torch.logsumexp(s, dim=-1))  # (..., rows)
    return torch.cat(parts, dim=-1)  # (..., T)


def attention(q, k, v, causal: bool = False, scale: float | None = None,
              impl: str = "auto", *, return_lse: bool = False):
    """Exact scaled dot-product attention of torch tensors.

    q: (..., T, D), k: (..., S, D), v: (..., S, Dv) whose leading dimensions broadcast
    (for example (B, H, T, D)); every implementation accepts exactly these shapes, Dv
    different from D included. causal: top-left aligned causal mask; scale: default
    1/sqrt(D); impl: one of :data:`IMPLS`. Returns out (..., T, Dv); with
    ``return_lse=True`` returns ``(out, lse)``, lse (..., T) the log-sum-exp of each row of
    scaled scores, in float32 (float64 for float64 inputs) and not differentiable.

    The Triton kernel returns its own lse; for ``"sdpa"`` (which does not expose it) and
    ``"reference"`` it is computed from the scores, a block of query rows at a time.
    Limits of one implementation stay its own: the Triton kernel needs float16, bfloat16
    or float32 and head dims up to 128.
    """
    lead = _check_shapes(q, k, v)
    which = resolve_impl(impl, q)
    q, k, v = (x.expand(*lead, *x.shape[-2:]) for x in (q, k, v))  # (..., length, dim)
    causal = bool(causal)
    if which == "triton":
        if not triton_available():
            raise RuntimeError("impl='triton' needs the triton package: "
                               "pip install 'attn-course[gpu]'")
        from attn_course.flash.triton.kernel import flash_attention

        return flash_attention(q, k, v, causal=causal, scale=scale, return_lse=return_lse)
    if which == "sdpa":
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    else:
        out = sdpa_torch(q, k, v, causal=causal, scale=scale)
    if not return_lse:
        return out
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    with torch.no_grad():
        return out, _logsumexp_rows(q.detach(), k.detach(), causal, scale)
