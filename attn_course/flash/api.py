"""One entry point for exact attention on torch tensors: ``attention(q, k, v, impl=...)``.

- ``"triton"``: the course's FlashAttention-2 kernel (``attn_course.flash.triton_kernel``),
  compiled on a CUDA GPU, or run by Triton's CPU interpreter where there is none (slow:
  small sizes only).
- ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention``, which picks its own
  backend (FlashAttention, cuDNN, memory-efficient or math).
- ``"reference"``: ``attn_course.attention.sdpa_torch``, the course's readable version that
  materialises the T x S matrix (low-precision inputs are computed in float32).
- ``"auto"``: ``"triton"`` for CUDA tensors when Triton is installed, else ``"sdpa"``.

All four compute the same function with the same conventions (scale 1/sqrt(D) by
default; causal = top-left aligned, key j visible to query i iff j <= i) and are
differentiable. Importing this module does not import Triton: the kernel module is
loaded on first use, because it decides at import time whether to run compiled or
interpreted.
"""

from __future__ import annotations

import importlib.util

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


def attention(q, k, v, causal: bool = False, scale: float | None = None,
              impl: str = "auto") -> torch.Tensor:
    """Exact scaled dot-product attention of torch tensors.

    q: (..., T, D), k: (..., S, D), v: (..., S, D) with equal leading dimensions (for
    example (B, H, T, D)); causal: top-left aligned causal mask; scale: default
    1/sqrt(D); impl: one of :data:`IMPLS`. Returns out (..., T, D).
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
    which = resolve_impl(impl, q)
    if which == "triton":
        if not triton_available():
            raise RuntimeError("impl='triton' needs the triton package: "
                               "pip install 'attn-course[gpu]'")
        from attn_course.flash.triton_kernel import flash_attention

        return flash_attention(q, k, v, causal=causal, scale=scale)
    if which == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal), scale=scale)
    return sdpa_torch(q, k, v, causal=bool(causal), scale=scale)
