"""An attention-only transformer: the smallest model in which induction heads form (lecture 12).

Elhage et al., "A Mathematical Framework for Transformer Circuits" (Anthropic, 2021) and
Olsson et al., "In-context Learning and Induction Heads" (2022): with two layers of
attention and no MLPs, a model trained on text with repeats learns a *previous-token
head* in layer 0 (each position copies in "the token before me was A") and an
*induction head* in layer 1 (at a later A, attend to the position whose previous token
was A, and copy its token B): ``... A B ... A -> B``.

Each block is pre-norm, ``x = x + Attention(LayerNorm(x))``, with the course's
:class:`~attn_course.multihead.MultiHeadAttention` (causal). Positions are rotary
(RoPE, lecture 06): queries and keys see only *relative* offsets. With a learned
absolute table instead, a model trained on the repeat task can solve it another way
(layer 0 finds the earlier copy of the current token and moves its *position*, layer 1
attends to that position plus one), and the textbook previous-token / induction pair does
not form; with relative positions the position cannot be moved, so it does. Hook points (see :mod:`attn_course.interp.hooks`):
``hook_embed`` (B, T, E) and each block's ``hook_resid_pre`` (B, T, E), plus every
attention layer's own.

Caveat: no MLPs, so anything the model does is done by attention heads (that is the
point); no dropout and no weight tying.
"""

from __future__ import annotations

import torch
from torch import nn

from attn_course.multihead import HookPoint, MultiHeadAttention
from attn_course.transformer import causal_self_attention

__all__ = ["AttnOnlyBlock", "AttnOnlyLM"]


class AttnOnlyBlock(nn.Module):
    """``x + attn(ln(x))`` with causal multi-head self-attention; x (B, T, E)."""

    def __init__(self, embed_dim: int, num_heads: int, rope_base: float = 10000.0):
        super().__init__()
        self.rope_base = rope_base
        self.hook_resid_pre = HookPoint()
        self.ln = nn.LayerNorm(embed_dim)
        self.attn = MultiHeadAttention(embed_dim, num_heads)

    def forward(self, x: torch.Tensor, need_weights: bool = False):
        x = self.hook_resid_pre(x)
        a, probs = causal_self_attention(self.attn, self.ln(x), rope_base=self.rope_base,
                                         need_weights=need_weights)
        return x + a, probs  # (B, T, E), (B, H, T, T) or None


class AttnOnlyLM(nn.Module):
    """Token embeddings, ``num_layers`` attention-only blocks with RoPE, logits.

    Forward: ``idx`` (B, T) token ids. Returns logits (B, T, V), or ``(logits, maps)``
    with one (B, H, T, T) probability tensor per layer when ``need_weights``.
    """

    def __init__(self, vocab_size: int, max_len: int, embed_dim: int = 64, num_heads: int = 4,
                 num_layers: int = 2):
        super().__init__()
        for name, val in (("vocab_size", vocab_size), ("max_len", max_len),
                          ("embed_dim", embed_dim), ("num_heads", num_heads),
                          ("num_layers", num_layers)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive integer, got {val!r}")
        self.config = dict(vocab_size=vocab_size, max_len=max_len, embed_dim=embed_dim,
                           num_heads=num_heads, num_layers=num_layers)
        self.vocab_size, self.max_len = vocab_size, max_len
        self.tok_emb = nn.Embedding(vocab_size, embed_dim)
        self.hook_embed = HookPoint()
        self.blocks = nn.ModuleList(AttnOnlyBlock(embed_dim, num_heads) for _ in range(num_layers))
        self.ln_f = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, vocab_size, bias=False)
        nn.init.normal_(self.tok_emb.weight, std=0.02)

    def forward(self, idx: torch.Tensor, need_weights: bool = False):
        if not isinstance(idx, torch.Tensor) or idx.ndim != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                "idx must be an integer tensor of token ids with shape (B, T), got "
                f"{tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__}"
            )
        T = idx.shape[1]
        if T > self.max_len:
            raise ValueError(f"idx has T={T} positions but max_len={self.max_len}")
        x = self.tok_emb(idx)  # (B, T, E); positions enter through RoPE in every layer
        x = self.hook_embed(x)
        maps = []
        for block in self.blocks:
            x, probs = block(x, need_weights=need_weights)  # (B, T, E)
            maps.append(probs)
        logits = self.head(self.ln_f(x))  # (B, T, V)
        return (logits, maps) if need_weights else logits
