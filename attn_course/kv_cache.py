"""The key-value cache: what a decoder remembers between generation steps (lecture 07).

A causal decoder generates one token at a time. Without a cache, step t runs the model
on all t tokens again, although the keys and values of the first t - 1 tokens are
exactly those of the previous step: a token's key and value depend only on the tokens
up to it (causality), and nothing before it has changed. The cache keeps them:

    step t:  q, k, v = projections of the ONE new token           (B, H, 1, D)
             K = [K_cache; k],  V = [V_cache; v]                   (B, H, t, D)
             out = softmax(q K^T / sqrt(D)) V                      (B, H, 1, D)

so a step costs O(t) instead of recomputing O(t^2) attention scores, and the whole
generation of T tokens O(T^2) instead of O(T^3). The price is memory: for every layer,
keys and values of every position, ``2 * L * B * H_kv * S * D`` numbers (L layers,
H_kv key/value heads: H_kv = H for multi-head attention, fewer with grouped-query or
multi-query attention, :mod:`attn_course.grouped_query`), which is what limits the
context length and batch size of served models (Pope et al., "Efficiently Scaling
Transformer Inference", 2022).

When the new rows are T > 1 tokens at once (feeding a prompt in chunks), they are the
*last* T of S positions: the causal mask is aligned at the bottom right,
``attn_course.attention.causal_mask(T, S, offset=S - T)``.

Caveats: this cache grows by concatenation, which copies the whole cache at every step
(O(S) extra work, harmless at these sizes). Production servers preallocate a buffer of
the maximum length, or split it into pages (Kwon et al., "PagedAttention", 2023).
"""

from __future__ import annotations

import numbers

import torch

__all__ = ["KVCache", "LayerKV", "kv_cache_bytes"]


class LayerKV:
    """The cached keys and values of one attention layer, each (B, H_kv, S, D)."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """S, the number of cached positions (0 when empty)."""
        return 0 if self.k is None else self.k.shape[-2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the keys and values of T new positions, (B, H, T, D) each; return all (B, H, S, D)."""
        for name, x in (("k", k), ("v", v)):
            if not isinstance(x, torch.Tensor) or x.ndim != 4:
                raise ValueError(
                    f"{name} must be a tensor of shape (B, H, T, D), got "
                    f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
                )
        if k.shape[:3] != v.shape[:3]:
            raise ValueError(
                f"k and v must agree on (B, H, T), got k.shape={tuple(k.shape)} and "
                f"v.shape={tuple(v.shape)}"
            )
        if self.k is None:
            self.k, self.v = k, v
        else:
            for name, new, old in (("k", k, self.k), ("v", v, self.v)):
                if new.shape[:2] != old.shape[:2] or new.shape[-1] != old.shape[-1]:
                    raise ValueError(
                        f"new {name} of shape {tuple(new.shape)} does not continue the cached "
                        f"{name} of shape {tuple(old.shape)} (B, H and D must match)"
                    )
            self.k = torch.cat([self.k, k], dim=-2)  # (B, H, S + T, D)
            self.v = torch.cat([self.v, v], dim=-2)  # (B, H, S + T, D)
        return self.k, self.v

    def nbytes(self) -> int:
        return 0 if self.k is None else self.k.nbytes + self.v.nbytes


class KVCache:
    """One :class:`LayerKV` per layer; ``length`` is the number of positions cached."""

    def __init__(self, num_layers: int) -> None:
        if isinstance(num_layers, bool) or not isinstance(num_layers, numbers.Integral) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
        self.layers = [LayerKV() for _ in range(num_layers)]

    @property
    def length(self) -> int:
        return self.layers[0].length

    def nbytes(self) -> int:
        """Bytes held by every cached key and value."""
        return sum(layer.nbytes() for layer in self.layers)

    def __repr__(self) -> str:
        return f"KVCache(num_layers={len(self.layers)}, length={self.length})"


def kv_cache_bytes(num_layers: int, B: int, H: int, S: int, D: int, bytes_per_number: int = 4,
                   num_kv_heads: int | None = None) -> int:
    """Predicted cache size in bytes: keys and values, ``2 * num_layers * B * H_kv * S * D`` numbers.

    H: the query heads; num_kv_heads: H_kv, the key/value heads actually cached (default
    H, multi-head attention; 1 for multi-query attention; a divisor of H for grouped-query
    attention, :mod:`attn_course.grouped_query`). The cache scales with H_kv, not H.
    """
    for name, val in (("num_layers", num_layers), ("B", B), ("H", H), ("S", S), ("D", D),
                      ("bytes_per_number", bytes_per_number)):
        if isinstance(val, bool) or not isinstance(val, numbers.Integral) or val < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {val!r}")
    H_kv = H if num_kv_heads is None else num_kv_heads
    if (isinstance(H_kv, bool) or not isinstance(H_kv, numbers.Integral) or H_kv < 1
            or (H and H % H_kv)):
        raise ValueError(
            f"num_kv_heads must be a positive integer dividing H={H}, got {num_kv_heads!r}"
        )
    return 2 * num_layers * B * H_kv * S * D * bytes_per_number
