"""Sequence mixers for the recall study, built from the course's modules (lecture 13).

A mixer maps x (B, T, E) to (B, T, E), and position t may only read positions <= t.
Five kinds, in the spirit of the architectures compared by Arora et al., "Zoology"
(2023):

=====================  =======================================================  =====================
name                   what mixes the sequence                                  state kept per layer
=====================  =======================================================  =====================
``attention``          softmax attention, the course's ``MultiHeadAttention``   every key and value:
                       with RoPE (:func:`~attn_course.transformer.              2 T E numbers, grows
                       causal_self_attention`)                                  with T
``sliding_window``     the same projections, each query sees the last w         2 w E
                       positions (:func:`~attn_course.efficient.
                       sliding_window_attention`)
``linear``             the same projections, softmax replaced by the elu + 1    H (D^2 + D) = E D + E
                       kernel (:func:`~attn_course.efficient.linear_attention`)
``conv``               a gated long convolution whose kernel is an S4D SSM      E N (complex)
                       (:class:`~attn_course.ssm.S4D`), H3/Hyena-style:
                       ``out(S4D(a) * g)``
``mamba``              Mamba's selective SSM (:class:`~attn_course.ssm.         E N
                       SelectiveSSM`) with its gate, ``out(SSM(a) * silu(g))``
=====================  =======================================================  =====================

Every block of the model (:mod:`attn_course.recall.model`) passes the mixer's input
through a short causal depthwise convolution first (:class:`ShortConv`, kernel 4), the
same for every mixer: H3's shift SSM, Mamba's conv1d and Based's short convolution all
give a token a view of its few predecessors, which the key-value binding of recall needs
(a value must be stored together with the key just before it). With it, every model
learns the binding equally fast, and what differs is only how far back each mixer can
look up a key. The attention mixers also get positions from RoPE.

:func:`state_size` counts the numbers a mixer must carry from one token to the next
when generating (its recurrent state, or the KV cache of the attention mixers): the
quantity Zoology's argument is about.

Caveats. Small reference implementations, written for clarity: the selective scan runs
as the course's sequential loop by default (at these sizes, on a CPU, its chunked form
is slower), with no fused kernel, and the Mamba mixer does not expand the width (Mamba's
expansion factor is 2); linear attention uses the simple elu + 1 feature map, not Based's
Taylor map, so its recall per state size is lower than Based's. Linear attention runs in
its quadratic form, the same numbers as the cumulative-sum form and faster at T <= 64.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn

from attn_course.efficient.linear import linear_attention
from attn_course.efficient.sliding_window import sliding_window_attention
from attn_course.multihead import MultiHeadAttention, merge_heads, split_heads
from attn_course.positional import apply_rope
from attn_course.ssm.s4d import S4D
from attn_course.ssm.selective_scan import SelectiveSSM
from attn_course.transformer import causal_self_attention

__all__ = [
    "MIXERS",
    "AttentionMixer",
    "GatedConvMixer",
    "LinearAttentionMixer",
    "MambaMixer",
    "ShortConv",
    "SlidingWindowMixer",
    "make_mixer",
    "state_size",
]

ROPE_BASE = 10000.0


def _int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_x(x, width: int) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[-1] != width:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor of shape (B, T, {width}), got {got}")


class ShortConv(nn.Module):
    """Causal depthwise convolution over time: y_t = sum_{i<k} w_i * x_{t-i}, per channel.

    x (B, T, E) -> (B, T, E); ``kernel_size`` k (4 as in Mamba).
    """

    def __init__(self, width: int, kernel_size: int = 4):
        super().__init__()
        self.kernel_size = _int("kernel_size", kernel_size)
        self.conv = nn.Conv1d(width, width, self.kernel_size, groups=width,
                              padding=self.kernel_size - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        y = self.conv(x.transpose(1, 2))  # (B, E, T + k - 1): padded on both sides
        return y[..., :T].transpose(1, 2)  # (B, T, E): the first T outputs are the causal ones


class AttentionMixer(nn.Module):
    """Causal softmax self-attention with RoPE: lecture 07's attention, unchanged."""

    def __init__(self, width: int, num_heads: int = 2):
        super().__init__()
        self.attn = MultiHeadAttention(width, num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_x(x, self.attn.embed_dim)
        out, _ = causal_self_attention(self.attn, x, rope_base=ROPE_BASE)  # (B, T, E)
        return out


class SlidingWindowMixer(nn.Module):
    """Causal sliding-window attention with RoPE: query t sees keys t - w < s <= t."""

    def __init__(self, width: int, num_heads: int = 2, window: int = 16):
        super().__init__()
        self.attn = MultiHeadAttention(width, num_heads)
        self.window = _int("window", window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attn
        _check_x(x, a.embed_dim)
        positions = range(x.shape[1])
        q = apply_rope(split_heads(a.q_proj(x), a.num_heads), positions, ROPE_BASE)  # (B, H, T, D)
        k = apply_rope(split_heads(a.k_proj(x), a.num_heads), positions, ROPE_BASE)  # (B, H, T, D)
        v = split_heads(a.v_proj(x), a.num_heads)  # (B, H, T, D)
        z = sliding_window_attention(q, k, v, self.window, causal=True)  # (B, H, T, D)
        return a.out_proj(merge_heads(z))  # (B, T, E)


class LinearAttentionMixer(nn.Module):
    """Causal linear attention with the elu + 1 feature map."""

    def __init__(self, width: int, num_heads: int = 2):
        super().__init__()
        self.attn = MultiHeadAttention(width, num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attn
        _check_x(x, a.embed_dim)
        q = split_heads(a.q_proj(x), a.num_heads)  # (B, H, T, D)
        k = split_heads(a.k_proj(x), a.num_heads)  # (B, H, T, D)
        v = split_heads(a.v_proj(x), a.num_heads)  # (B, H, T, D)
        # the quadratic form gives the same numbers and is the faster one at these small T
        z = linear_attention(q, k, v, causal=True, form="quadratic")  # (B, H, T, D)
        return a.out_proj(merge_heads(z))  # (B, T, E)


class GatedConvMixer(nn.Module):
    """A gated long convolution (H3 / Hyena style) with an S4D kernel of N states.

    ``out(S4D(a) * g)`` with a, g = in_proj(x): the long convolution carries
    information along the sequence, the elementwise gate multiplies it with the current
    token (the product is what lets a convolution model bind a key to a value).
    """

    def __init__(self, width: int, state_size: int = 16):
        super().__init__()
        self.width = width
        self.in_proj = nn.Linear(width, 2 * width)
        self.ssm = S4D(width, _int("state_size", state_size))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_x(x, self.width)
        a, g = self.in_proj(x).chunk(2, dim=-1)  # (B, T, E) each
        y = self.ssm(a)  # (B, T, E): FFT convolution with the S4D kernel
        return self.out_proj(y * g)  # (B, T, E)


class MambaMixer(nn.Module):
    """Mamba's mixer: ``out(SSM(silu(a)) * silu(g))`` with a, g = in_proj(x).

    The selective SSM has N states per channel; ``chunk`` is the chunk size of the
    course's chunked scan (None: the sequential loop).
    """

    def __init__(self, width: int, state_size: int = 16, chunk: int | None = None):
        super().__init__()
        self.width = width
        self.in_proj = nn.Linear(width, 2 * width)
        self.ssm = SelectiveSSM(width, _int("state_size", state_size))
        self.out_proj = nn.Linear(width, width)
        self.chunk = chunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_x(x, self.width)
        a, g = self.in_proj(x).chunk(2, dim=-1)  # (B, T, E) each
        y = self.ssm(F.silu(a), chunk=self.chunk)  # (B, T, E)
        return self.out_proj(y * F.silu(g))  # (B, T, E)


MIXERS = {
    "attention": AttentionMixer,
    "sliding_window": SlidingWindowMixer,
    "linear": LinearAttentionMixer,
    "conv": GatedConvMixer,
    "mamba": MambaMixer,
}


def make_mixer(name: str, width: int, **options) -> nn.Module:
    """A new mixer of kind ``name`` (a key of :data:`MIXERS`) for width E."""
    if name not in MIXERS:
        raise ValueError(f"mixer must be one of {sorted(MIXERS)}, got {name!r}")
    return MIXERS[name](_int("width", width), **options)


def state_size(mixer: nn.Module, seq_len: int) -> int:
    """Numbers one layer of ``mixer`` carries between tokens after ``seq_len`` tokens.

    attention: the KV cache, 2 T E; sliding window: 2 min(w, T) E; linear attention:
    H (D^2 + D) (the KV matrix and the normaliser, D = E / H); conv: E N complex
    numbers, counted as 2 E N reals; mamba: E N. (The block's short convolution adds
    (k - 1) E to every kind alike; see ``RecallLM.state_size``.)
    """
    T = _int("seq_len", seq_len)
    if isinstance(mixer, AttentionMixer):
        return 2 * T * mixer.attn.embed_dim
    if isinstance(mixer, SlidingWindowMixer):
        return 2 * min(mixer.window, T) * mixer.attn.embed_dim
    if isinstance(mixer, LinearAttentionMixer):
        H, D = mixer.attn.num_heads, mixer.attn.head_dim
        return H * (D * D + D)
    if isinstance(mixer, GatedConvMixer):
        return 2 * mixer.width * mixer.ssm.log_A_real.shape[1]
    if isinstance(mixer, MambaMixer):
        return mixer.width * mixer.ssm.d_state
    raise TypeError(f"mixer must be one of the recall mixers {sorted(MIXERS)}, got {type(mixer).__name__}")
