"""Scaled dot-product attention in numpy and in torch, with masks (lectures 03-04).

    scores = q @ k^T * scale          (..., T, S)   scale defaults to 1/sqrt(D)
    probs  = softmax(scores, axis=-1)  (..., T, S)   each query's weights over the keys
    out    = probs @ v                 (..., T, Dv)

Shapes: q (..., T, D), k (..., S, D), v (..., S, Dv). The leading dimensions (batch,
heads) broadcast against each other. Vaswani et al., "Attention Is All You Need"
(2017), section 3.2.1.

Masks follow ``torch.nn.functional.scaled_dot_product_attention``:

- a **boolean** mask broadcastable to (..., T, S): ``True`` = this query may attend to
  this key, ``False`` = masked out;
- a **float** mask broadcastable to (..., T, S) is *added* to the scores (use ``-inf``
  to mask, or a finite bias such as ALiBi).

Fully masked query rows. A query whose every key is masked (a padded query position,
or a causal mask with more queries than keys) has no distribution to take. Here its
probabilities are all 0 and its output is the zero vector. The alternatives are
worse: the textbook softmax gives NaN (0/0), which spreads into every later layer and
into the gradients of the whole batch; a uniform distribution would silently attend to
keys that were meant to be hidden. Zeros are also what PyTorch's own SDPA returned
for a boolean mask on the backends the course checked (its CPU math and CPU flash
backends in PyTorch 2.13, :func:`fully_masked_rows_by_backend`; the CUDA backends are
checked by the tests marked ``gpu``). Only ``False`` or ``-inf`` entries count as masked:
a finite additive mask such as ``-1e9`` is just a large bias, and what it does to a
row that is ``-1e9`` everywhere depends on the precision. Softmax ignores a constant
added to a whole row, so in exact arithmetic that row attends as if it had no mask. In
float64 (spacing 1.2e-7 near 1e9) it nearly does: each score is rounded by at most
6e-8. In float32 the spacing near 1e9 is 64, so ``score - 1e9`` rounds to ``-1e9`` for
every score within 32 of 0: the row becomes uniform over its keys, attending neither
as unmasked nor as masked (both tested). A float16 mask cannot hold -1e9 at all: it
is stored as ``-inf``, which masks the row.

Mask shapes. "Broadcastable to the scores" means that broadcasting the mask against
the scores (..., T, S) gives the scores' shape: a mask may repeat along a dimension of
size 1 but never add a batch or head dimension that q, k and v do not have (a (3, T, S)
mask for a q of batch 1 is refused, as PyTorch's SDPA refuses it).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from attn_course.softmax import softmax
from attn_course.validation import broadcast_shape, require_array, require_positive, shape_of

__all__ = [
    "causal_mask",
    "fully_masked_rows_by_backend",
    "key_padding_mask",
    "scaled_dot_product_attention",
    "sdpa_numpy",
    "sdpa_torch",
]


def causal_mask(T: int, S: int | None = None, offset: int = 0) -> np.ndarray:
    """Boolean (T, S) mask, True where key j may be seen by query i: ``j <= i + offset``.

    With ``offset=0`` (the default) the mask is aligned at the top left, as in
    ``torch.tril(torch.ones(T, S))`` and SDPA's ``is_causal``. When the T queries are
    the *last* T positions of a sequence of S keys (decoding with a KV cache), pass
    ``offset=S - T`` so that the last query sees every key.
    """
    for name, val in (("T", T), ("S", S if S is not None else T)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
            raise ValueError(f"{name} must be a positive integer, got {val!r}")
    S = T if S is None else S
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)):
        raise TypeError(f"offset must be an integer, got {offset!r}")
    i = np.arange(T)[:, None]
    j = np.arange(S)[None, :]
    return j <= i + offset


def key_padding_mask(lengths, S: int) -> np.ndarray:
    """Boolean (B, S) mask, True at **padding** positions (index >= length).

    This is the convention of ``torch.nn.MultiheadAttention(key_padding_mask=...)``:
    the name says what True marks. To use it as an attention mask (True = attend),
    invert it and add a query axis: ``~pad[:, None, :]`` has shape (B, 1, S) and
    broadcasts against scores of shape (B, T, S); use ``~pad[:, None, None, :]`` for
    scores of shape (B, H, T, S).
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(
            f"lengths must be a 1-D sequence of integers (one per batch element), "
            f"got shape {lengths.shape} and dtype {lengths.dtype}"
        )
    if isinstance(S, bool) or not isinstance(S, (int, np.integer)) or S < 1:
        raise ValueError(f"S must be a positive integer, got {S!r}")
    if np.any(lengths < 0) or np.any(lengths > S):
        raise ValueError(f"lengths must lie in [0, S={S}], got {lengths.tolist()}")
    return np.arange(S)[None, :] >= lengths[:, None]


def _check_qkv(q, k, v, mask, scale):
    """Validate arguments; return (T, S, D, scale)."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        require_array(name, x, min_ndim=2)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must have the same last dimension D (queries and keys are compared "
            f"by a dot product), got q.shape={shape_of(q)} and k.shape={shape_of(k)}"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"k and v must have the same length S (one value per key), got "
            f"k.shape={shape_of(k)} and v.shape={shape_of(v)}"
        )
    T, S, D = q.shape[-2], k.shape[-2], q.shape[-1]
    lead = broadcast_shape("k", k.shape[:-2], q.shape[:-2], "the leading dimensions of q")
    broadcast_shape("v", v.shape[:-2], lead, "the leading dimensions of q and k")
    if mask is not None:
        if not isinstance(mask, (np.ndarray, torch.Tensor)):
            raise TypeError(
                f"mask must be a numpy array or torch tensor (boolean or float), "
                f"got {type(mask).__name__}"
            )
        is_bool = mask.dtype in (np.bool_, torch.bool)
        if not is_bool and not (
            mask.is_floating_point() if isinstance(mask, torch.Tensor)
            else np.issubdtype(mask.dtype, np.floating)
        ):
            raise TypeError(
                f"mask must be boolean (True = attend) or floating (added to the scores), "
                f"got dtype {mask.dtype}"
            )
        scores_shape = (*lead, T, S)
        broadcast_shape("mask", mask.shape, scores_shape, "the scores' shape (..., T, S) =")
        if mask.ndim > len(scores_shape):
            raise ValueError(
                f"mask of shape {shape_of(mask)} has more dimensions than the scores "
                f"(..., T, S) = {scores_shape}"
            )
        if np.broadcast_shapes(shape_of(mask), scores_shape) != scores_shape:
            raise ValueError(
                f"mask of shape {shape_of(mask)} would enlarge the scores of shape "
                f"(..., T, S) = {scores_shape} to "
                f"{np.broadcast_shapes(shape_of(mask), scores_shape)}: each of its "
                f"dimensions must be 1 or equal to the scores' (as in PyTorch's SDPA)"
            )
    scale = 1.0 / math.sqrt(D) if scale is None else require_positive("scale", scale)
    return T, S, D, scale


def sdpa_numpy(q, k, v, mask=None, scale=None, causal: bool = False, return_probs: bool = False):
    """Scaled dot-product attention on numpy arrays.

    q: (..., T, D), k: (..., S, D), v: (..., S, Dv); mask: bool or float, broadcastable
    to the scores (..., T, S) without enlarging them; scale: default 1/sqrt(D);
    causal: also apply ``causal_mask(T, S)``.
    Returns out (..., T, Dv), and probs (..., T, S) when ``return_probs``.
    float16 inputs are computed in float32 and the results cast back.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name} must be a numpy array for sdpa_numpy, got {type(x).__name__}")
    T, S, _, scale = _check_qkv(q, k, v, mask, scale)
    out_dtype = np.result_type(q, k, v)
    compute = np.float32 if out_dtype == np.float16 else out_dtype
    q, k, v = q.astype(compute), k.astype(compute), v.astype(compute)
    scores = (q @ np.swapaxes(k, -1, -2)) * scale  # (..., T, S)
    if causal:
        scores = np.where(causal_mask(T, S), scores, -np.inf)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype == np.bool_:
            scores = np.where(mask, scores, -np.inf)
        else:
            scores = scores + mask.astype(compute)
    probs = softmax(scores, axis=-1)  # (..., T, S); fully masked rows are all zero
    out = (probs @ v).astype(out_dtype)  # (..., T, Dv)
    return (out, probs.astype(out_dtype)) if return_probs else out


def masked_softmax_torch(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis that maps an all ``-inf`` row to zeros (not NaN).

    Differentiable; the gradient of a fully masked row is zero.
    """
    m = scores.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()
    e = torch.exp(scores - m)
    s = e.sum(dim=-1, keepdim=True)
    return e / torch.where(s > 0, s, torch.ones_like(s))


def sdpa_torch(q, k, v, mask=None, scale=None, causal: bool = False, return_probs: bool = False,
               scores_hook=None, probs_hook=None):
    """Scaled dot-product attention on torch tensors, differentiable.

    Same arguments and shapes as :func:`sdpa_numpy` (a numpy mask is accepted too).
    float16 and bfloat16 inputs are computed in float32 and the results cast back,
    which is at least as accurate as PyTorch's own math backend.
    scores_hook, probs_hook: optional callables applied to the masked scores and to the
    probabilities (..., T, S) before they are used; they return the tensor to use
    (the hook points of :mod:`attn_course.interp.hooks`).
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor for sdpa_torch, got {type(x).__name__}")
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask)
    T, S, _, scale = _check_qkv(q, k, v, mask, scale)
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(
            f"q, k and v must share one dtype, got q.dtype={q.dtype}, k.dtype={k.dtype}, "
            f"v.dtype={v.dtype}"
        )
    out_dtype = q.dtype
    compute = torch.float32 if out_dtype in (torch.float16, torch.bfloat16) else out_dtype
    q, k, v = q.to(compute), k.to(compute), v.to(compute)
    scores = (q @ k.transpose(-1, -2)) * scale  # (..., T, S)
    neg_inf = torch.tensor(float("-inf"), dtype=compute, device=q.device)
    if causal:
        keep = torch.ones(T, S, dtype=torch.bool, device=q.device).tril()
        scores = torch.where(keep, scores, neg_inf)
    if mask is not None:
        mask = mask.to(q.device)
        if mask.dtype == torch.bool:
            scores = torch.where(mask, scores, neg_inf)
        else:
            scores = scores + mask.to(compute)
    if scores_hook is not None:
        scores = scores_hook(scores)
    probs = masked_softmax_torch(scores)  # (..., T, S)
    if probs_hook is not None:
        probs = probs_hook(probs)
    out = (probs @ v).to(out_dtype)  # (..., T, Dv)
    return (out, probs.to(out_dtype)) if return_probs else out


def fully_masked_rows_by_backend(device="cpu", dtype=torch.float32) -> dict[str, str]:
    """What each backend of PyTorch's SDPA returns for a query whose keys are all masked.

    Runs ``torch.nn.functional.scaled_dot_product_attention`` restricted to each
    ``SDPBackend`` in turn, on q (1, 2, 4, 8) and k = v (1, 2, 6, 8) of ``dtype`` on
    ``device`` with a boolean causal mask whose query row 2 is entirely False. Returns
    {backend name: result}, the result one of ``"zero output"`` (the convention of this
    module), ``"NaN output"``, ``"other output"`` (finite, not zero), or
    ``"does not run here (...)"`` (no kernel for this device, dtype and mask).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 4, 8, generator=g).to(device=device, dtype=dtype)  # (B, H, T, D)
    k = torch.randn(1, 2, 6, 8, generator=g).to(device=device, dtype=dtype)  # (B, H, S, D)
    keep = torch.ones(4, 6, dtype=torch.bool, device=device).tril()  # (T, S)
    keep[2] = False  # query 2 may attend to nothing
    results = {}
    for name, backend in SDPBackend.__members__.items():
        if name == "ERROR":
            continue
        try:
            with sdpa_kernel([backend]), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # each refusing kernel warns why; not needed here
                out = torch.nn.functional.scaled_dot_product_attention(q, k, k, attn_mask=keep)
        except RuntimeError:
            results[name] = "does not run here (no kernel for this device, dtype and mask)"
            continue
        row = out[..., 2, :].float()
        if torch.isnan(row).any():
            results[name] = "NaN output"
        elif (row == 0).all() and torch.isfinite(out).all():
            results[name] = "zero output"
        else:
            results[name] = "other output"
    return results


def scaled_dot_product_attention(q, k, v, mask=None, scale=None, causal=False, return_probs=False):
    """Dispatch to :func:`sdpa_torch` for tensors and :func:`sdpa_numpy` for arrays."""
    impl = sdpa_torch if isinstance(q, torch.Tensor) else sdpa_numpy
    return impl(q, k, v, mask=mask, scale=scale, causal=causal, return_probs=return_probs)
