"""Grouped-query and multi-query attention: fewer key/value heads than query heads (lecture 07).

Multi-head attention (:mod:`attn_course.multihead`) gives each of the H query heads its
own key and value head. Grouped-query attention (GQA; Ainslie et al., "GQA: Training
Generalized Multi-Query Transformer Models from Multi-Head Checkpoints", 2023) keeps
H query heads but only H_kv key/value heads, H_kv dividing H: the H / H_kv query heads
of one group share one key head and one value head. Query head h reads key/value head
``h // (H / H_kv)`` (the order of ``torch.repeat_interleave``, of Llama's ``repeat_kv``
and of PyTorch's ``scaled_dot_product_attention(..., enable_gqa=True)``).
Multi-query attention (MQA; Shazeer, "Fast Transformer Decoding: One Write-Head is All
You Need", 2019) is the case H_kv = 1; H_kv = H is ordinary multi-head attention.

    q = x W_q  -> (B, H, T, D)        k = x W_k, v = x W_v -> (B, H_kv, S, D)
    q viewed as (B, H_kv, G, T, D) with G = H / H_kv; each group attends to its k, v

The saving is in what a decoder must keep between steps: the KV cache holds H_kv heads
instead of H, ``2 * L * B * H_kv * S * D`` numbers (:func:`attn_course.kv_cache.kv_cache_bytes`),
and each decoding step reads H / H_kv times fewer bytes of it. The arithmetic of the
attention itself is unchanged: every query head still scores every key.

Caveat: models are trained with GQA from the start (Llama 2 70B, Llama 3, Mistral) or
"uptrained" from a multi-head checkpoint by mean-pooling its key and value heads (the
GQA paper); this module does neither, it computes the attention.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from attn_course.attention import sdpa_torch
from attn_course.multihead import merge_heads, split_heads

__all__ = ["GroupedQueryAttention", "grouped_query_attention", "repeat_kv"]


def _require_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, H_kv, S, D) -> (B, H_kv * groups, S, D): each key/value head repeated ``groups`` times.

    Head h of the result is head ``h // groups`` of ``x`` (``repeat_interleave`` order).
    This materialises the copies; :func:`grouped_query_attention` does not need them.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(
            f"x must be a tensor of shape (B, H_kv, S, D), got "
            f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
        )
    groups = _require_int("groups", groups)
    B, H_kv, S, D = x.shape
    return x[:, :, None].expand(B, H_kv, groups, S, D).reshape(B, H_kv * groups, S, D)


def grouped_query_attention(q, k, v, mask=None, causal: bool = False, return_probs: bool = False):
    """Attention of H query heads over H_kv shared key/value heads, without copying k and v.

    q: (B, H, T, D); k: (B, H_kv, S, D); v: (B, H_kv, S, Dv) with H_kv dividing H.
    mask: bool (True = attend) or float, broadcastable to (B, H, T, S) without
    enlarging it. Returns out (B, H, T, Dv), and probs (B, H, T, S) when ``return_probs``.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(
                f"{name} must be a tensor of shape (B, heads, length, dim), got "
                f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
            )
    B, H, T, D = q.shape
    H_kv = k.shape[1]
    if v.shape[1] != H_kv or H % H_kv:
        raise ValueError(
            f"k and v must have the same number of heads H_kv, and H_kv must divide the "
            f"H = {H} query heads; got q.shape={tuple(q.shape)}, k.shape={tuple(k.shape)}, "
            f"v.shape={tuple(v.shape)}"
        )
    G = H // H_kv
    S = k.shape[2]
    q5 = q.view(B, H_kv, G, T, D)  # (B, H_kv, G, T, D): the G query heads of each group
    k5, v5 = k[:, :, None], v[:, :, None]  # (B, H_kv, 1, S, D): broadcast over the group
    if mask is not None:
        if isinstance(mask, torch.Tensor):
            try:
                full = torch.broadcast_shapes(tuple(mask.shape), (B, H, T, S))
            except RuntimeError:
                full = None
            if mask.ndim > 4 or full != (B, H, T, S):
                raise ValueError(
                    f"mask of shape {tuple(mask.shape)} must broadcast to the scores' shape "
                    f"(B, H, T, S) = {(B, H, T, S)} without enlarging it"
                )
            mask = mask.expand(B, H, T, S).reshape(B, H_kv, G, T, S)  # (B, H_kv, G, T, S)
    out, probs = sdpa_torch(q5, k5, v5, mask=mask, causal=causal, return_probs=True)
    out = out.reshape(B, H, T, v.shape[-1])  # (B, H_kv, G, T, Dv) -> (B, H, T, Dv)
    return (out, probs.reshape(B, H, T, S)) if return_probs else out


class GroupedQueryAttention(nn.Module):
    """Self- or cross-attention with ``num_heads`` query heads and ``num_kv_heads`` key/value heads.

    Args:
        embed_dim: E, the model width; num_heads: H, dividing E (head dim D = E / H);
        num_kv_heads: H_kv, dividing H (1: multi-query; H: multi-head); bias: as in
        :class:`~attn_course.multihead.MultiHeadAttention`.

    The projections: ``q_proj`` (E -> H D), ``k_proj`` and ``v_proj`` (E -> H_kv D),
    ``out_proj`` (H D -> E). ``forward(query, key=None, value=None, attn_mask=None,
    causal=False, need_weights=False)``: key defaults to query and value to key; attn_mask
    broadcastable to (B, H, T, S). Returns ``(out, probs)``: out (B, T, E), probs
    (B, H, T, S) when ``need_weights`` else None.
    """

    def __init__(self, embed_dim: int, num_heads: int, num_kv_heads: int, bias: bool = True):
        super().__init__()
        embed_dim = _require_int("embed_dim", embed_dim)
        num_heads = _require_int("num_heads", num_heads)
        num_kv_heads = _require_int("num_kv_heads", num_kv_heads)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        if num_heads % num_kv_heads:
            raise ValueError(
                f"num_kv_heads={num_kv_heads} must divide num_heads={num_heads} "
                f"(each key/value head serves num_heads // num_kv_heads query heads)"
            )
        self.embed_dim, self.num_heads, self.num_kv_heads = embed_dim, num_heads, num_kv_heads
        self.head_dim = embed_dim // num_heads
        kv_width = num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(embed_dim, kv_width, bias=bias)
        self.v_proj = nn.Linear(embed_dim, kv_width, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        for lin in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_uniform_(lin.weight, gain=1 / math.sqrt(2))

    def forward(self, query, key=None, value=None, attn_mask=None, causal: bool = False,
                need_weights: bool = False):
        key = query if key is None else key
        value = key if value is None else value
        for name, x in (("query", query), ("key", key), ("value", value)):
            if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[-1] != self.embed_dim:
                raise ValueError(
                    f"{name} must be a tensor of shape (B, length, {self.embed_dim}), got "
                    f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
                )
        q = split_heads(self.q_proj(query), self.num_heads)  # (B, H, T, D)
        k = split_heads(self.k_proj(key), self.num_kv_heads)  # (B, H_kv, S, D)
        v = split_heads(self.v_proj(value), self.num_kv_heads)  # (B, H_kv, S, D)
        z, probs = grouped_query_attention(q, k, v, mask=attn_mask, causal=causal,
                                           return_probs=True)  # (B, H, T, D), (B, H, T, S)
        out = self.out_proj(merge_heads(z))  # (B, T, E)
        return out, (probs if need_weights else None)
