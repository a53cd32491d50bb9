"""Multi-head attention as an ``nn.Module`` (lecture 05).

Each head attends in its own subspace of size D = E / H:

    q = x_q W_q,  k = x_kv W_k,  v = x_kv W_v                (B, T|S, E)
    split:  (B, T, E) -> (B, T, H, D) -> (B, H, T, D)
    out_h = attention(q_h, k_h, v_h)                          (B, H, T, D)
    merge:  (B, H, T, D) -> (B, T, H, D) -> (B, T, E),  then W_o

Vaswani et al. (2017), section 3.2.2. The parameters are laid out as in
``torch.nn.MultiheadAttention`` (one (3E, E) input projection when query, key and
value share the embedding size), so weights copy over with :meth:`from_torch` and the
two modules give the same outputs (tested).

Hook points (identity modules, :class:`HookPoint`) name the intermediate tensors for
interpretability (lecture 12, :mod:`attn_course.interp`): ``hook_q``, ``hook_k``,
``hook_v`` (B, H, T|S, D), after any rotation and cache; ``hook_scores`` and
``hook_probs`` (B, H, T, S), ``hook_z`` (B, H, T, D), each head's output before
``out_proj``. Every attention path (this ``forward`` and
:func:`attn_course.transformer.causal_self_attention`) goes through :meth:`attend`, so a
hook sees them all. With no hook registered they return their input unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from attn_course.attention import sdpa_torch


class HookPoint(nn.Module):
    """An identity module: a named place where forward hooks can read or replace a tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, T, E) -> (B, H, T, D) with D = E / H."""
    if x.ndim != 3:
        raise ValueError(f"x must be (B, T, E), got shape {tuple(x.shape)}")
    B, T, E = x.shape
    if E % num_heads:
        raise ValueError(f"the embedding size E={E} must be divisible by num_heads={num_heads}")
    return x.view(B, T, num_heads, E // num_heads).transpose(1, 2)  # (B, H, T, D)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, D) -> (B, T, H * D): the inverse of :func:`split_heads`."""
    if x.ndim != 4:
        raise ValueError(f"x must be (B, H, T, D), got shape {tuple(x.shape)}")
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, H * D)  # (B, T, E)


class MultiHeadAttention(nn.Module):
    """Multi-head attention over batch-first inputs.

    Args:
        embed_dim: E, the model width (queries and outputs).
        num_heads: H; must divide E.
        bias: add biases to the four projections.
        kdim, vdim: widths of the key and value inputs for cross-attention (default E).

    Forward: ``query`` (B, T, E); ``key`` (B, S, kdim) defaults to ``query``
    (self-attention) and ``value`` (B, S, vdim) defaults to ``key``. Returns ``(out, probs)`` with out
    (B, T, E) and probs (B, H, T, S) when ``need_weights`` is True, else None.
    """

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True,
                 kdim: int | None = None, vdim: int | None = None):
        super().__init__()
        for name, val in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive integer, got {val!r}")
        if embed_dim % num_heads:
            raise ValueError(
                f"embed_dim={embed_dim} must be divisible by num_heads={num_heads} "
                f"(each head gets embed_dim // num_heads dimensions)"
            )
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(self.kdim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(self.vdim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        for name in ("q", "k", "v", "scores", "probs", "z"):
            setattr(self, f"hook_{name}", HookPoint())  # no parameters: state_dict unchanged
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for lin in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_uniform_(lin.weight, gain=1 / math.sqrt(2))
        nn.init.xavier_uniform_(self.out_proj.weight)
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    def _check_input(self, name: str, x, width: int, batch: int | None) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
        if x.ndim != 3 or x.shape[-1] != width:
            raise ValueError(
                f"{name} must have shape (B, length, {width}), got {tuple(x.shape)}"
            )
        if batch is not None and x.shape[0] != batch:
            raise ValueError(
                f"{name} has batch size {x.shape[0]} but query has batch size {batch}"
            )

    def forward(self, query, key=None, value=None, key_padding_mask=None, attn_mask=None,
                causal: bool = False, need_weights: bool = False):
        """Attend from ``query`` to ``key``/``value``.

        key defaults to ``query`` and value to ``key``: ``m(x)`` is self-attention and
        ``m(x, y)`` attends from x to keys and values both computed from y.
        key_padding_mask: bool (B, S), True at padding keys (as in
        ``torch.nn.MultiheadAttention``). attn_mask: bool (True = attend) or float
        (added), of one of these shapes, as ``torch.nn.MultiheadAttention`` accepts:

        - (T, S): the same mask for every batch element and head;
        - (B * H, T, S): one mask per batch element and head, row ``b * H + h`` for
          head h of element b (reshaped to (B, H, T, S));
        - 4-D, broadcastable to (B, H, T, S) without enlarging it: (B, 1, T, S) for one
          mask per batch element, (1, H, T, S) for one per head.

        A 3-D (B, T, S) mask is refused when H > 1 (even if B == H, where it could be
        mistaken for one mask per head): pass ``mask[:, None]`` of shape (B, 1, T, S).
        causal: query i sees keys j <= i (top-left aligned).

        Caution: a boolean ``attn_mask`` here means True = *may attend*, the convention
        of ``scaled_dot_product_attention`` and of the whole course, which is the
        opposite of ``torch.nn.MultiheadAttention``'s (True = *not allowed*).
        A query whose keys are all masked (a sequence that is entirely padding) gets
        zero weights and a zero attention output, not NaN.
        """
        key = query if key is None else key
        value = key if value is None else value
        self._check_input("query", query, self.embed_dim, None)
        B = query.shape[0]
        self._check_input("key", key, self.kdim, B)
        self._check_input("value", value, self.vdim, B)
        if key.shape[1] != value.shape[1]:
            raise ValueError(
                f"key and value must have the same length S, got key.shape={tuple(key.shape)} "
                f"and value.shape={tuple(value.shape)}"
            )
        _T, S = query.shape[1], key.shape[1]
        mask = None
        if key_padding_mask is not None:
            if key_padding_mask.dtype != torch.bool or tuple(key_padding_mask.shape) != (B, S):
                raise ValueError(
                    f"key_padding_mask must be a bool tensor of shape (B, S) = {(B, S)} "
                    f"(True at padding), got dtype {key_padding_mask.dtype} and shape "
                    f"{tuple(key_padding_mask.shape)}"
                )
            mask = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, S), True = attend
        if attn_mask is not None:
            attn_mask = self._attn_mask_4d(attn_mask, B, query.shape[1], S)  # (., ., T, S)
            if attn_mask.dtype == torch.bool:
                mask = attn_mask if mask is None else mask & attn_mask
            else:
                pad = None if mask is None else torch.zeros(mask.shape, dtype=attn_mask.dtype,
                                                            device=attn_mask.device)
                mask = attn_mask if pad is None else pad.masked_fill(~mask, float("-inf")) + attn_mask

        q = split_heads(self.q_proj(query), self.num_heads)  # (B, H, T, D)
        k = split_heads(self.k_proj(key), self.num_heads)  # (B, H, S, D)
        v = split_heads(self.v_proj(value), self.num_heads)  # (B, H, S, D)
        out, probs = self.attend(q, k, v, mask=mask, causal=causal)  # (B, T, E), (B, H, T, S)
        return out, (probs if need_weights else None)

    def _attn_mask_4d(self, attn_mask, B: int, T: int, S: int) -> torch.Tensor:
        """Check ``attn_mask`` and return it with 2 or 4 dims, broadcastable to (B, H, T, S)."""
        H = self.num_heads
        if not isinstance(attn_mask, torch.Tensor):
            raise TypeError(f"attn_mask must be a torch tensor, got {type(attn_mask).__name__}")
        shape = tuple(attn_mask.shape)
        accepted = (f"(T, S) = {(T, S)}, (B * H, T, S) = {(B * H, T, S)} or a 4-D mask "
                    f"broadcastable to (B, H, T, S) = {(B, H, T, S)} such as (B, 1, T, S)")
        if attn_mask.ndim == 3:
            if shape != (B * H, T, S):
                hint = (f"; a per-batch mask of shape (B, T, S) must be passed as "
                        f"attn_mask[:, None], of shape (B, 1, T, S) = {(B, 1, T, S)}"
                        if shape == (B, T, S) else "")
                raise ValueError(
                    f"attn_mask of shape {shape}: a 3-D attn_mask must be (B * H, T, S) = "
                    f"{(B * H, T, S)}, one mask per batch element and head as in "
                    f"torch.nn.MultiheadAttention{hint}"
                )
            return attn_mask.view(B, H, T, S)  # (B * H, T, S) -> (B, H, T, S)
        ok = attn_mask.ndim in (2, 4)
        if ok:
            try:
                ok = torch.broadcast_shapes(shape, (B, H, T, S)) == (B, H, T, S)
            except RuntimeError:
                ok = False
        if not ok:
            raise ValueError(f"attn_mask of shape {shape} does not fit; expected {accepted}")
        return attn_mask

    def attend(self, q, k, v, mask=None, causal: bool = False):
        """Per-head attention of projected q (B, H, T, D), k, v (B, H, S, D), then ``out_proj``.

        Passes every intermediate through its hook point. Returns ``(out, probs)``:
        out (B, T, E), probs (B, H, T, S).
        """
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        z, probs = sdpa_torch(q, k, v, mask=mask, causal=causal, return_probs=True,
                              scores_hook=self.hook_scores, probs_hook=self.hook_probs)
        z = self.hook_z(z)  # (B, H, T, D)
        return self.out_proj(merge_heads(z)), probs  # (B, T, E), (B, H, T, S)

    @torch.no_grad()
    def load_from_torch(self, mha: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy the weights of a ``torch.nn.MultiheadAttention`` with the same sizes."""
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"mha must be a torch.nn.MultiheadAttention, got {type(mha).__name__}")
        ours = (self.embed_dim, self.num_heads, self.kdim, self.vdim)
        theirs = (mha.embed_dim, mha.num_heads, mha.kdim, mha.vdim)
        if ours != theirs:
            raise ValueError(
                f"mha has (embed_dim, num_heads, kdim, vdim) = {theirs}, this module has {ours}"
            )
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("mha uses add_bias_kv or add_zero_attn, which this module does not have")
        E = self.embed_dim
        if mha._qkv_same_embed_dim:
            wq, wk, wv = mha.in_proj_weight.split(E, dim=0)  # each (E, E)
        else:
            wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
        for lin, w in ((self.q_proj, wq), (self.k_proj, wk), (self.v_proj, wv)):
            lin.weight.copy_(w)
        self.out_proj.weight.copy_(mha.out_proj.weight)
        if mha.in_proj_bias is not None:
            if self.q_proj.bias is None:
                raise ValueError("mha has biases but this module was built with bias=False")
            for lin, b in zip((self.q_proj, self.k_proj, self.v_proj), mha.in_proj_bias.split(E), strict=False):
                lin.bias.copy_(b)
            self.out_proj.bias.copy_(mha.out_proj.bias)
        elif self.q_proj.bias is not None:
            raise ValueError("this module has biases but mha was built with bias=False")
        return self

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> MultiHeadAttention:
        """A new module with the sizes and weights of ``mha`` (batch_first or not)."""
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"mha must be a torch.nn.MultiheadAttention, got {type(mha).__name__}")
        module = cls(mha.embed_dim, mha.num_heads, bias=mha.in_proj_bias is not None,
                     kdim=mha.kdim, vdim=mha.vdim)
        module.to(device=mha.out_proj.weight.device, dtype=mha.out_proj.weight.dtype)
        return module.load_from_torch(mha)
