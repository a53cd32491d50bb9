"""One model skeleton for every mixer: embeddings, pre-norm blocks, logits (lecture 13).

    x = tok_emb(idx)                         (B, T) -> (B, T, E)
    for each layer:
        x = x + mixer(short(LayerNorm(x)))   the mixer is the only part that changes
        x = x + MLP(LayerNorm(x))            lecture 07's MLP, hidden width 2E
    logits = head(LayerNorm(x))              (B, T, V)

With ``mixer="attention"`` this is lecture 07's :class:`~attn_course.transformer.TinyLM`
block for block (RoPE, pre-norm, GELU MLP); only the mixer differs between the models
the study compares, so a difference in recall is the mixer's. ``short`` is a causal
depthwise convolution of kernel 4 (:class:`~attn_course.recall.mixers.ShortConv`), the
same in every model: it lets each token see the few before it (see ``mixers.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from attn_course.recall.mixers import MIXERS, ShortConv, _int, make_mixer, state_size
from attn_course.transformer import MLP

__all__ = ["MixerBlock", "RecallLM"]


class MixerBlock(nn.Module):
    """Pre-norm block ``x + mixer(short(ln1(x)))``, then ``x + mlp(ln2(x))``: (B, T, E) -> (B, T, E)."""

    def __init__(self, mixer: str, width: int, mlp_ratio: int = 2, conv_size: int = 4, **options):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.short = ShortConv(width, conv_size)
        self.mixer = make_mixer(mixer, width, **options)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = MLP(width, _int("mlp_ratio", mlp_ratio) * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.short(self.ln1(x)))  # (B, T, E)
        return x + self.mlp(self.ln2(x))  # (B, T, E)


class RecallLM(nn.Module):
    """A small language model whose sequence mixer is a parameter.

    Args:
        mixer: a key of :data:`~attn_course.recall.mixers.MIXERS`. vocab_size: V.
        width: E. num_layers: blocks. mlp_ratio: the MLP's hidden width is
        ``mlp_ratio * E``. conv_size: the short convolution's kernel. options: passed to
        the mixer (num_heads, window, state_size).

    Forward: idx (B, T) token ids -> logits (B, T, V).
    """

    def __init__(self, mixer: str, vocab_size: int, width: int = 32, num_layers: int = 2,
                 mlp_ratio: int = 2, conv_size: int = 4, **options):
        super().__init__()
        if mixer not in MIXERS:
            raise ValueError(f"mixer must be one of {sorted(MIXERS)}, got {mixer!r}")
        self.config = dict(mixer=mixer, vocab_size=vocab_size, width=width,
                           num_layers=num_layers, mlp_ratio=mlp_ratio, conv_size=conv_size, **options)
        self.vocab_size = _int("vocab_size", vocab_size)
        self.tok_emb = nn.Embedding(self.vocab_size, _int("width", width))
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        self.blocks = nn.ModuleList(MixerBlock(mixer, width, mlp_ratio, conv_size, **options)
                                    for _ in range(_int("num_layers", num_layers)))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, self.vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if not isinstance(idx, torch.Tensor) or idx.ndim != 2 or idx.dtype not in (torch.int64, torch.int32):
            got = (f"shape {tuple(idx.shape)} and dtype {idx.dtype}" if isinstance(idx, torch.Tensor)
                   else type(idx).__name__)
            raise ValueError(f"idx must be an integer tensor of token ids of shape (B, T), got {got}")
        x = self.tok_emb(idx)  # (B, T, E)
        for block in self.blocks:
            x = block(x)  # (B, T, E)
        return self.head(self.ln_f(x))  # (B, T, V)

    def state_size(self, seq_len: int) -> int:
        """Numbers carried between tokens by all layers together: each mixer's state
        (``mixers.state_size``) plus the short convolution's last k - 1 inputs."""
        return sum(state_size(b.mixer, seq_len) + (b.short.kernel_size - 1) * b.short.conv.in_channels
                   for b in self.blocks)
