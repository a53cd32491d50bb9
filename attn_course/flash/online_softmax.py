"""Online softmax: the normaliser of a softmax in one pass over the data (lecture 09).

The stable softmax of lecture 02 reads a row three times: once for its maximum m,
once for the sum l = sum_j exp(x_j - m), and once more to write exp(x_j - m) / l.
The online normaliser (Milakov & Gimelshein, "Online normalizer calculation for
softmax", 2018) fuses the first two passes. It keeps a running maximum ``m`` and a
running sum ``l`` *relative to that maximum*; when a new block of values raises the
maximum from m to m', the sum so far is rescaled by exp(m - m'):

    m' = max(m, max_j x_j)
    l' = l * exp(m - m') + sum_j exp(x_j - m')

After the last block, ``l`` equals the two-pass sum exactly (in exact arithmetic) and
``log l + m`` is the log-sum-exp. FlashAttention (Dao et al., 2022) applies the same
rescaling to the partial output ``acc = sum_j exp(s_j - m) v_j``, which is why it
never needs the whole row of scores at once (see ``attn_course.flash.tiled``).

Caveats: rows that are entirely ``-inf`` keep ``m = -inf`` and ``l = 0``; their
softmax is all zeros and their log-sum-exp is ``-inf``, the convention of
``attn_course.softmax``. A block in which a row is all ``-inf`` leaves that row's state
unchanged.
"""

from __future__ import annotations

import numpy as np

from attn_course.validation import require_array

__all__ = ["online_logsumexp", "online_normalizer", "online_softmax", "online_update"]


def online_update(m, l, x_block):
    """One step of the online normaliser: fold the block ``x_block`` into (m, l).

    m, l: (...,) running maximum and running sum of exp(x - m) so far (start with
    ``-inf`` and ``0``); x_block: (..., n) the next n values of each row.
    Returns ``(m_new, l_new, alpha, p)``: the new state, ``alpha = exp(m_old - m_new)``
    (..., ) the factor by which everything accumulated relative to the old maximum must
    be rescaled, and ``p = exp(x_block - m_new)`` (..., n), the block's unnormalised
    probabilities (FlashAttention multiplies them by the block of values).
    """
    m_new = np.maximum(m, np.max(x_block, axis=-1))  # (...,)
    # A row with no finite value yet keeps m = -inf; shift it by 0 so exp gives 0, not NaN.
    shift = np.where(np.isfinite(m_new), m_new, 0).astype(m_new.dtype)  # (...,)
    alpha = np.exp(m - shift)  # (...,)  exp(-inf) = 0 on the first block
    p = np.subtract(x_block, shift[..., None])  # (..., n) a fresh array, exponentiated in place
    np.exp(p, out=p)
    l_new = l * alpha + np.sum(p, axis=-1)  # (...,)
    return m_new, l_new, alpha, p


def online_normalizer(x, block: int = 1, axis: int = -1):
    """Running maximum and sum of a softmax in one pass, ``block`` values at a time.

    x: any shape; the softmax is over ``axis``. Returns (m, l), each of x's shape with
    ``axis`` removed, such that softmax(x) = exp(x - m) / l.
    """
    require_array("x", x, min_ndim=1)
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"block must be a positive integer, got {block!r}")
    x = np.moveaxis(np.asarray(x), axis, -1)  # (..., n) softmax axis last
    m = np.full(x.shape[:-1], -np.inf, dtype=x.dtype)  # (...,)
    l = np.zeros(x.shape[:-1], dtype=x.dtype)  # (...,)
    for start in range(0, x.shape[-1], block):
        m, l, _, _ = online_update(m, l, x[..., start:start + block])
    return m, l


def online_softmax(x, block: int = 1, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis`` from the one-pass normaliser; all ``-inf`` rows give zeros."""
    m, l = online_normalizer(x, block=block, axis=axis)
    xs = np.moveaxis(np.asarray(x), axis, -1)  # (..., n)
    shift = np.where(np.isfinite(m), m, 0.0)[..., None]  # (..., 1)
    e = np.exp(xs - shift)  # (..., n)
    denom = l[..., None]  # (..., 1)
    p = np.divide(e, denom, out=np.zeros_like(e), where=denom > 0)  # (..., n)
    return np.moveaxis(p, -1, axis)


def online_logsumexp(x, block: int = 1, axis: int = -1) -> np.ndarray:
    """log(sum(exp(x))) along ``axis`` in one pass; ``-inf`` for an all ``-inf`` row."""
    m, l = online_normalizer(x, block=block, axis=axis)
    with np.errstate(divide="ignore"):
        return np.where(l > 0, m + np.log(np.where(l > 0, l, 1.0)), -np.inf)
