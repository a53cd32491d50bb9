"""Telling attention where each token is: sinusoidal encodings and rotary embeddings (lecture 06).

Attention on its own has no idea of order. Permute the T input vectors and the T outputs
are permuted the same way (it is *permutation-equivariant*), because every score
q_i . k_j depends only on the two vectors, never on the positions i or j. Two ways to put
positions in:

**Sinusoidal encodings** (Vaswani et al., "Attention Is All You Need", 2017, section 3.5)
are *added* to the token embeddings before the first layer. For position p and
embedding width E (even), with frequencies w_f = base^(-2f / E), f = 0 .. E/2 - 1:

    PE[p, 2f]     = sin(p * w_f)
    PE[p, 2f + 1] = cos(p * w_f)          base = 10000 in the paper

**Rotary position embeddings, RoPE** (Su et al., "RoFormer: Enhanced Transformer with
Rotary Position Embedding", 2021, section 3.4) *rotate* every query and key instead.
Each pair of features (x_{2f}, x_{2f+1}) of a head of width D (even) is rotated by the
angle p * theta_f, with theta_f = base^(-2f / D):

    [x'_{2f}    ]   [cos(p theta_f)  -sin(p theta_f)] [x_{2f}    ]
    [x'_{2f + 1}] = [sin(p theta_f)   cos(p theta_f)] [x_{2f + 1}]

A rotation R_p is orthogonal and R_i^T R_j = R_{j - i}, so the score between a query at
position i and a key at position j, (R_i q) . (R_j k) = q . R_{j - i} k, depends on the
two positions only through their offset j - i (the RoFormer paper writes m and n for
i and j). Values are not rotated.

"Long-term decay" (RoFormer, section 3.4.3) holds for the part of q aligned with k, not
for every pair: for q = k the score sum_f |(k_{2f}, k_{2f+1})|^2 cos((j - i) theta_f)
shrinks, with wiggles, as the offset grows, but for independent zero-mean q and k the
expected score is 0 at every offset (lecture 06 computes both).

Caveats:

- This module pairs *adjacent* features (2f, 2f + 1) as in the RoFormer paper. GPT-NeoX and
  Hugging Face's ``rotate_half`` (also in its Llama port) pair feature f with f + D/2
  instead. The two are the same up to a fixed permutation of the features, so neither is
  more correct, but weights trained with one convention do not load into the other
  unchanged.
- The Transformer paper's formula interleaves sin and cos as above; tensor2tensor and
  many later codebases concatenate all sines and then all cosines (again a permutation).
- Angles are computed in float64 and cast to the input's dtype; for float16/bfloat16 the
  rotation then loses precision at large positions, as in every implementation.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from attn_course.validation import require_array, require_positive, shape_of

__all__ = [
    "apply_rope",
    "rope_angles",
    "rope_frequencies",
    "rope_rotation_matrix",
    "sinusoidal_encoding",
]


def _require_even(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 2 or value % 2:
        raise ValueError(
            f"{name} must be a positive even integer (features come in (sin, cos) or "
            f"rotation pairs), got {value!r}"
        )
    return int(value)


def _frequencies(width: int, base: float) -> np.ndarray:
    """w_f = base^(-2f / width), f = 0 .. width/2 - 1, float64 (width/2,)."""
    return base ** (-np.arange(0, width, 2, dtype=np.float64) / width)


def sinusoidal_encoding(T: int, E: int, base: float = 10000.0, offset: int = 0) -> np.ndarray:
    """The Transformer's fixed position encodings, float64 of shape (T, E).

    Row p holds the encoding of position ``offset + p``: ``sin(p w_f)`` in column 2f and
    ``cos(p w_f)`` in column 2f + 1, with ``w_f = base^(-2f / E)``. Add it to the token
    embeddings, e.g. ``x + torch.from_numpy(sinusoidal_encoding(T, E)).float()``.
    """
    if isinstance(T, bool) or not isinstance(T, numbers.Integral) or T < 1:
        raise ValueError(f"T must be a positive integer (the number of positions), got {T!r}")
    E = _require_even("E", E)
    base = require_positive("base", base)
    if isinstance(offset, bool) or not isinstance(offset, numbers.Integral) or offset < 0:
        raise ValueError(f"offset must be a non-negative integer, got {offset!r}")
    p = np.arange(offset, offset + T, dtype=np.float64)[:, None]  # (T, 1)
    angles = p * _frequencies(E, base)[None, :]  # (T, E/2)
    pe = np.empty((T, E))
    pe[:, 0::2] = np.sin(angles)
    pe[:, 1::2] = np.cos(angles)
    return pe


def rope_frequencies(D: int, base: float = 10000.0) -> np.ndarray:
    """theta_f = base^(-2f / D) for f = 0 .. D/2 - 1: float64 (D/2,), from 1 down to ~1/base."""
    return _frequencies(_require_even("D", D), require_positive("base", base))


def _positions(positions, T: int | None) -> np.ndarray:
    """positions as float64 (T,); None means 0 .. T-1; T=None accepts any length."""
    if positions is None:
        if T is None:
            raise ValueError("positions must be given (a 1-D sequence of numbers), got None")
        return np.arange(T, dtype=np.float64)
    if isinstance(positions, range):
        positions = np.arange(positions.start, positions.stop, positions.step)
    if isinstance(positions, torch.Tensor):
        positions = positions.detach().cpu().numpy()
    p = np.asarray(positions)
    numeric = np.issubdtype(p.dtype, np.integer) or np.issubdtype(p.dtype, np.floating)
    if p.ndim != 1 or not numeric or (T is not None and p.shape[0] != T):
        expected = "numbers" if T is None else f"T={T} numbers (one per row of x)"
        raise ValueError(
            f"positions must be a 1-D sequence of {expected}, got shape {p.shape} and "
            f"dtype {p.dtype}"
        )
    return p.astype(np.float64)


def rope_angles(positions, D: int, base: float = 10000.0) -> np.ndarray:
    """Rotation angles p * theta_f, float64 (T, D/2), for the given (T,) positions."""
    return _positions(positions, None)[:, None] * rope_frequencies(D, base)[None, :]  # (T, D/2)


def apply_rope(x, positions=None, base: float = 10000.0):
    """Rotate each feature pair (2f, 2f + 1) of ``x`` by the angle ``positions * theta_f``.

    x: numpy array or torch tensor (..., T, D) with D even: queries or keys, one head
    each (e.g. (B, H, T, D)). positions: (T,) integers or floats, the position of each
    row; default ``0 .. T-1``. With a KV cache the new rows sit after the cached ones:
    pass ``positions=range(past, past + T)``. Returns the same type, shape and dtype;
    differentiable for tensors. Norms are preserved (a rotation).
    """
    require_array("x", x, min_ndim=2)
    T, D = x.shape[-2], x.shape[-1]
    if D % 2:
        raise ValueError(
            f"x must have an even last dimension D (features are rotated in pairs), got "
            f"shape {shape_of(x)}"
        )
    angles = rope_angles(_positions(positions, T), D, base)  # (T, D/2)
    if isinstance(x, torch.Tensor):
        cos = torch.from_numpy(np.cos(angles)).to(device=x.device, dtype=x.dtype)  # (T, D/2)
        sin = torch.from_numpy(np.sin(angles)).to(device=x.device, dtype=x.dtype)
        x1, x2 = x[..., 0::2], x[..., 1::2]  # (..., T, D/2) each
        out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (..., T, D/2, 2)
        return out.flatten(-2)  # (..., T, D): pairs interleaved again
    cos, sin = np.cos(angles).astype(x.dtype), np.sin(angles).astype(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]  # (..., T, D/2) each
    out = np.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), axis=-1)  # (..., T, D/2, 2)
    return out.reshape(x.shape)  # (..., T, D)


def rope_rotation_matrix(position: float, D: int, base: float = 10000.0) -> np.ndarray:
    """The (D, D) block-diagonal rotation R_p that ``apply_rope`` applies at one position.

    ``apply_rope(x, [p])[0] == rope_rotation_matrix(p, D) @ x[0]`` for x of shape (1, D).
    Meant for looking at, not for computing: it is mostly zeros.
    """
    if isinstance(position, bool) or not isinstance(position, numbers.Real):
        raise TypeError(f"position must be a number, got {position!r}")
    angles = float(position) * rope_frequencies(D, base)  # (D/2,)
    R = np.zeros((D, D))
    c, s = np.cos(angles), np.sin(angles)
    i = np.arange(0, D, 2)
    R[i, i], R[i, i + 1] = c, -s
    R[i + 1, i], R[i + 1, i + 1] = s, c
    return R
