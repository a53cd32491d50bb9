"""Linformer: keys and values projected along the sequence to a fixed length (lecture 10).

Wang, Li, Khabsa, Fang and Ma, "Linformer: Self-Attention with Linear Complexity"
(2020), section 4. Two learned (P, S) matrices E and F mix the S key and value
positions down to P << S "summary" positions before ordinary attention:

    k' = E k    (..., P, D)        v' = F v    (..., P, Dv)
    out = softmax(q k'^T / sqrt(D)) v'          scores (..., T, P): O(T P), not O(T S)

The paper's argument is that the attention matrix is approximately low rank, so a
random (Johnson-Lindenstrauss) projection of rank P loses little; training then
adapts E and F. With P = S and E = F = identity, Linformer is exact attention (tested).

Caveats. E and F are tied to the sequence length S they were built for: shorter inputs
use their first columns, longer ones are refused. A causal mask cannot be applied:
every projected key mixes all positions, including future ones, so Linformer suits
encoders, not autoregressive decoders. Padding masks have no meaning after the mix
either (padded positions must be zero in k and v instead).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from attn_course.attention import sdpa_torch
from attn_course.multihead import MultiHeadAttention, merge_heads, split_heads

__all__ = ["LinformerSelfAttention", "linformer_attention"]


def linformer_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, E: torch.Tensor,
                        F: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Attention over projected keys and values.

    q: (..., T, D), k: (..., S, D), v: (..., S, Dv), E and F: (P, S) (or broadcastable
    (..., P, S)). scale: defaults to 1/sqrt(D). Returns (..., T, Dv).
    """
    for name, x in (("q", q), ("k", k), ("v", v), ("E", E), ("F", F)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
    S = k.shape[-2]
    for name, m in (("E", E), ("F", F)):
        if m.ndim < 2 or m.shape[-1] != S:
            raise ValueError(
                f"{name} must have shape (P, S) with S = {S} key positions, got "
                f"{name}.shape={tuple(m.shape)} for k.shape={tuple(k.shape)}"
            )
    if v.shape[-2] != S:
        raise ValueError(
            f"k and v must have the same length S, got k.shape={tuple(k.shape)} and "
            f"v.shape={tuple(v.shape)}"
        )
    if E.shape[-2] != F.shape[-2]:
        raise ValueError(
            f"E and F must project to the same length P, got E.shape={tuple(E.shape)} and "
            f"F.shape={tuple(F.shape)}"
        )
    k_proj = E.to(k.dtype) @ k  # (..., P, D)
    v_proj = F.to(v.dtype) @ v  # (..., P, Dv)
    return sdpa_torch(q, k_proj, v_proj, scale=scale)  # (..., T, Dv)


class LinformerSelfAttention(MultiHeadAttention):
    """Multi-head self-attention with Linformer's sequence projections.

    Args:
        embed_dim, num_heads, bias: as :class:`~attn_course.multihead.MultiHeadAttention`
            (the q/k/v/out projections are the same, so its weights load the same way).
        seq_len: S, the longest sequence the module accepts.
        proj_len: P, the projected length (the paper's k).
        share_kv: use one projection for keys and values (E = F).

    E and F are shared by all heads (the paper's "headwise sharing"), initialised with
    entries N(0, 1/P) as a random projection. Forward: ``query`` (B, T, E) with
    T <= seq_len; returns ``(out, probs)`` with out (B, T, E) and probs (B, H, T, P)
    when ``need_weights``.
    """

    def __init__(self, embed_dim: int, num_heads: int, seq_len: int, proj_len: int,
                 share_kv: bool = False, bias: bool = True):
        super().__init__(embed_dim, num_heads, bias=bias)
        for name, val in (("seq_len", seq_len), ("proj_len", proj_len)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive integer, got {val!r}")
        self.seq_len, self.proj_len = seq_len, proj_len
        self.E = nn.Parameter(torch.randn(proj_len, seq_len) / math.sqrt(proj_len))
        self.F = self.E if share_kv else nn.Parameter(
            torch.randn(proj_len, seq_len) / math.sqrt(proj_len))

    def forward(self, query, key=None, value=None, key_padding_mask=None, attn_mask=None,
                causal: bool = False, need_weights: bool = False):
        """Self-attention of ``query`` (B, T, E); see the class docstring."""
        if key is not None or value is not None:
            raise ValueError("LinformerSelfAttention is self-attention: pass query only")
        if causal or attn_mask is not None or key_padding_mask is not None:
            raise ValueError(
                "LinformerSelfAttention takes no causal, attn_mask or key_padding_mask: the "
                "projections mix all key positions, so no mask survives them"
            )
        self._check_input("query", query, self.embed_dim, None)
        T = query.shape[1]
        if T > self.seq_len:
            raise ValueError(
                f"query has length T={T} but this module was built for seq_len={self.seq_len}"
            )
        q = split_heads(self.q_proj(query), self.num_heads)  # (B, H, T, D)
        k = split_heads(self.k_proj(query), self.num_heads)  # (B, H, T, D)
        v = split_heads(self.v_proj(query), self.num_heads)  # (B, H, T, D)
        k = self.E[:, :T].to(k.dtype) @ k  # (P, T) @ (B, H, T, D) -> (B, H, P, D)
        v = self.F[:, :T].to(v.dtype) @ v  # (B, H, P, D)
        out, probs = sdpa_torch(q, k, v, return_probs=True)  # (B, H, T, D), (B, H, T, P)
        out = self.out_proj(merge_heads(out))  # (B, T, E)
        return out, (probs if need_weights else None)
