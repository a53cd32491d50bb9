"""Softmax, temperature and log-sum-exp, computed stably (lecture 02).

softmax(x)_i = exp(x_i / tau) / sum_j exp(x_j / tau).

The naive formula overflows: ``exp(1000.0)`` is ``inf`` in float64 (and ``exp(89.)``
already in float32), and ``inf / inf`` is NaN. Because softmax is unchanged when the
same constant is subtracted from every logit, we subtract the row maximum first: the
largest exponent is then ``exp(0) = 1`` and nothing overflows. The same shift makes
log-sum-exp stable: ``lse(x) = m + log(sum_j exp(x_j - m))`` with ``m = max_j x_j``.

Rows that are entirely ``-inf`` (every position masked out) have no distribution;
here they give all-zero probabilities and ``lse = -inf``, the convention of
``attn_course.attention`` (see its docstring for why).
"""

from __future__ import annotations

import numpy as np

from attn_course.validation import require_array, require_positive


def _check(x, axis: int) -> np.ndarray:
    require_array("x", x, min_ndim=1)
    x = np.asarray(x)
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis must be in [-{x.ndim}, {x.ndim}) for x.shape={x.shape}, got {axis}")
    return x


def naive_softmax(x, axis: int = -1) -> np.ndarray:
    """The textbook formula exp(x) / sum(exp(x)), kept to show how it overflows."""
    x = _check(x, axis)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(x)
        return e / e.sum(axis=axis, keepdims=True)


def softmax(x, axis: int = -1, temperature: float = 1.0) -> np.ndarray:
    """Numerically stable softmax of ``x / temperature`` along ``axis``.

    x: any shape with a floating dtype. temperature: > 0; small values sharpen the
    distribution towards argmax, large values flatten it towards uniform.
    Rows of all ``-inf`` give all zeros.
    """
    x = _check(x, axis)
    t = require_positive("temperature", temperature)
    m = np.max(x, axis=axis, keepdims=True)  # the max of x / t too, since t > 0
    m = np.where(np.isfinite(m), m, 0.0)  # an all -inf row: keep exp(-inf) = 0, no NaN
    # x - m <= 0, so (x - m) / t can only overflow towards -inf (e.g. -1e308 - 1e308),
    # where exp gives the right 0: not worth a warning.
    with np.errstate(over="ignore"):
        z = (x - m) / t
    e = np.exp(z)
    s = e.sum(axis=axis, keepdims=True)
    return np.divide(e, s, out=np.zeros_like(e), where=s > 0)


def logsumexp(x, axis: int = -1, keepdims: bool = False) -> np.ndarray:
    """log(sum(exp(x))) along ``axis`` without overflow; ``-inf`` for an all ``-inf`` row."""
    x = _check(x, axis)
    m = np.max(x, axis=axis, keepdims=True)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore", over="ignore"):  # x - m overflows only to -inf: exp 0
        out = m_safe + np.log(np.sum(np.exp(x - m_safe), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def entropy(p, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats of distributions ``p`` along ``axis`` (0 log 0 = 0).

    Ranges from 0 (one-hot) to log(n) (uniform over n entries).
    """
    p = _check(p, axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(axis=axis)
