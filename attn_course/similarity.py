"""Dot-product and cosine similarity: the measure attention is built on (lecture 01).

The dot product ``a . b = |a| |b| cos(theta)`` mixes two things: how aligned the
vectors are (the cosine) and how long they are. Attention scores are raw dot products,
so a key with a large norm can win without being the best-aligned one; cosine
similarity divides the lengths out.
"""

from __future__ import annotations

import numpy as np

from attn_course.validation import require_array, require_positive


def _pair(a, b, name_a: str, name_b: str) -> tuple[np.ndarray, np.ndarray]:
    require_array(name_a, a)
    require_array(name_b, b)
    a, b = np.asarray(a), np.asarray(b)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same last dimension (the vector size), "
            f"got {name_a}.shape={a.shape} and {name_b}.shape={b.shape}"
        )
    return a, b


def dot(a, b) -> np.ndarray:
    """Dot product over the last axis. a: (..., D), b: (..., D) -> (...)."""
    a, b = _pair(a, b, "a", "b")
    return np.sum(a * b, axis=-1)


def cosine(a, b, eps: float = 1e-12) -> np.ndarray:
    """Cosine similarity over the last axis. a: (..., D), b: (..., D) -> (...).

    A zero vector has no direction; its cosine with anything is 0 (the norm is
    clamped to ``eps`` before dividing).
    """
    a, b = _pair(a, b, "a", "b")
    eps = require_positive("eps", eps)
    na = np.maximum(np.linalg.norm(a, axis=-1), eps)
    nb = np.maximum(np.linalg.norm(b, axis=-1), eps)
    return dot(a, b) / (na * nb)


def similarity_matrix(x, y=None, metric: str = "dot", eps: float = 1e-12) -> np.ndarray:
    """All-pairs similarity. x: (T, D), y: (S, D) (default: x) -> (T, S).

    ``metric`` is ``"dot"`` or ``"cosine"``. Entry (i, j) compares row i of x with
    row j of y: with ``metric="dot"`` this is ``x @ y.T``, the matrix of attention
    scores before scaling.
    """
    y = x if y is None else y
    x, y = _pair(x, y, "x", "y")
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(
            f"x and y must be 2-D (T, D) and (S, D), got x.shape={x.shape}, y.shape={y.shape}"
        )
    if metric == "dot":
        return x @ y.T
    if metric == "cosine":
        eps = require_positive("eps", eps)
        xn = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)
        yn = y / np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), eps)
        return xn @ yn.T
    raise ValueError(f"metric must be 'dot' or 'cosine', got {metric!r}")


def nearest(query, table, k: int = 5, metric: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the ``k`` rows of ``table`` most similar to ``query``.

    query: (D,), table: (S, D) -> (indices (k,), scores (k,)), best first.
    """
    require_array("query", query)
    if np.ndim(query) != 1:
        raise ValueError(f"query must be a single vector (D,), got shape {np.shape(query)}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    scores = similarity_matrix(np.asarray(query)[None, :], table, metric=metric)[0]
    k = min(k, scores.shape[0])
    order = np.argsort(-scores, kind="stable")[:k]
    return order, scores[order]
