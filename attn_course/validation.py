"""Argument validation shared by the course's modules.

Every check raises with a message that names the argument, says what was received
(shape, dtype or value) and what was expected, so that a learner can fix the call
without reading the library's source.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch


def shape_of(x) -> tuple[int, ...]:
    return tuple(x.shape)


def is_floating(x) -> bool:
    if isinstance(x, torch.Tensor):
        return x.is_floating_point()
    return np.issubdtype(np.asarray(x).dtype, np.floating)


def require_array(name: str, x, *, min_ndim: int = 1, floating: bool = True) -> None:
    """Check that ``x`` is a numpy array or torch tensor of rank >= ``min_ndim``.

    Raises ``TypeError`` for a non-array or a non-floating dtype and ``ValueError``
    for a rank that is too small.
    """
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise TypeError(
            f"{name} must be a numpy array or torch tensor, got {type(x).__name__}"
        )
    if floating and not is_floating(x):
        raise TypeError(
            f"{name} must have a floating-point dtype (float16, bfloat16, float32 or "
            f"float64), got dtype {x.dtype}; convert it first, e.g. {name}.astype(float) "
            f"or {name}.float()"
        )
    if x.ndim < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimensions, got shape {shape_of(x)}"
        )


def require_positive(name: str, value) -> float:
    """Check that ``value`` is a finite real number > 0 and return it as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def broadcast_shape(name: str, shape, target, what: str) -> tuple[int, ...]:
    """Return ``np.broadcast_shapes(shape, target)`` or raise naming ``name``."""
    try:
        return np.broadcast_shapes(tuple(shape), tuple(target))
    except ValueError:
        raise ValueError(
            f"{name} of shape {tuple(shape)} does not broadcast to {what} "
            f"{tuple(target)}"
        ) from None
