"""Sliding-window (local) attention, computed block by block in O(T w) memory (lecture 10).

Each query attends only to the keys within a window of ``w`` positions around it:

- not causal (Longformer, Beltagy et al. 2020, section 3.1, which introduced sliding
  windows for long documents): query i sees keys with |i - j| < w, that is w - 1
  tokens on each side;
- causal (the form Mistral 7B uses, Jiang et al. 2023, section 2): query i sees keys
  i - w < j <= i, that is itself and the w - 1 tokens before it.

Masking a T x T score matrix gives the right numbers but still costs O(T^2) time and
memory. Here the sequence is cut into blocks of w positions (or one block when T < w): the queries of block b can
only reach keys in blocks b - 1 and b (and b + 1 when not causal), so each block of
queries is compared with 2w (or 3w) keys and the window mask is applied inside that
block pair only:

    q     (..., T, D)  -> pad to nb * w -> (..., nb, w, D)
    keys  (..., T, D)  -> pad by one block each side -> (..., nb, 2w or 3w, D)
    scores (..., nb, w, 2w or 3w)                       O(T w), not O(T^2)

Stacking layers widens the receptive field: after L layers a token can be influenced
by tokens up to L (w - 1) positions away. Tested equal to full attention with the band
mask :func:`sliding_window_mask`.

Caveats. Self-attention only (one sequence provides queries and keys, T == S). The key
blocks are gathered into a new tensor of 2 or 3 times the size of k and v; a fused
kernel (as in FlashAttention's ``window_size`` argument) reads them in place. A Python
implementation is still memory-bound on small windows, so the time saved is smaller
than the memory saved (see ``benchmarks/alternatives.py``). O(T w) is how the memory
grows, not its size: the blocks hold 2w (or 3w) scores per query, more than the T^2 of
the full matrix while T < 2w, and a fused exact kernel (PyTorch's SDPA), which stores
no scores at all, needs less memory than this at every length lecture 10 measures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attn_course.attention import _check_qkv

__all__ = ["sliding_window_attention", "sliding_window_mask"]


def _check_window(window) -> int:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive integer (the band width w), got {window!r}")
    return window


def sliding_window_mask(T: int, window: int, causal: bool = True,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean (T, T) band mask, True = attend: ``0 <= i - j < window`` when causal,
    ``|i - j| < window`` otherwise. For tests and pictures; it is O(T^2)."""
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive integer, got {T!r}")
    window = _check_window(window)
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    d = i - j  # (T, T): how far key j lies behind query i
    return (d >= 0) & (d < window) if causal else d.abs() < window


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                             causal: bool = True, scale: float | None = None) -> torch.Tensor:
    """Blocked sliding-window self-attention.

    q, k: (..., T, D), v: (..., T, Dv); leading dimensions broadcast. window: w >= 1,
    see the module docstring for which keys each query sees. scale: defaults to
    1/sqrt(D). Returns (..., T, Dv), equal to
    ``sdpa_torch(q, k, v, mask=sliding_window_mask(T, window, causal))``.
    float16 and bfloat16 are computed in float32 and cast back.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
    T, S, D, scale = _check_qkv(q, k, v, None, scale)
    if T != S:
        raise ValueError(
            f"sliding-window attention is self-attention and needs T == S, got "
            f"q.shape={tuple(q.shape)} and k.shape={tuple(k.shape)}"
        )
    w = _check_window(window)
    out_dtype = q.dtype
    compute = torch.float32 if out_dtype in (torch.float16, torch.bfloat16) else out_dtype
    lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    q, k, v = (x.to(compute).expand(*lead, *x.shape[-2:]) for x in (q, k, v))
    Dv = v.shape[-1]

    c = min(w, T)  # block size: w, or the whole sequence when it is shorter than w
    nb = -(-T // c)  # number of query blocks
    pad = nb * c - T
    after = 0 if causal else c  # one extra key block after the last one
    span = 2 * c + after  # keys per query block: blocks b-1, b (and b+1)
    qb = F.pad(q, (0, 0, 0, pad)).reshape(*lead, nb, c, D)  # (..., nb, c, D)
    # keys padded with one empty block in front (and one behind when not causal):
    kp = F.pad(k, (0, 0, c, pad + after))  # (..., (nb + 1) * c + after, D)
    vp = F.pad(v, (0, 0, c, pad + after))  # (..., (nb + 1) * c + after, Dv)
    kb = kp.unfold(-2, span, c).transpose(-1, -2)  # (..., nb, span, D)
    vb = vp.unfold(-2, span, c).transpose(-1, -2)  # (..., nb, span, Dv)

    # Absolute positions of the queries and keys of each block pair:
    b = torch.arange(nb, device=q.device)[:, None, None]  # (nb, 1, 1)
    i = b * c + torch.arange(c, device=q.device)[None, :, None]  # (nb, c, 1)
    j = (b - 1) * c + torch.arange(span, device=q.device)[None, None, :]  # (nb, 1, span)
    d = i - j  # (nb, c, span)
    keep = (d < w) & ((d >= 0) if causal else (d > -w)) & (j >= 0) & (j < T)  # (nb, c, span)

    scores = (qb @ kb.transpose(-1, -2)) * scale  # (..., nb, c, span)
    scores = scores.masked_fill(~keep, float("-inf"))
    # Every row keeps at least one key (a real query sees itself; a padding query, at
    # i >= T, sees key T - 1 since c <= w), so the plain softmax never meets 0 / 0.
    probs = torch.softmax(scores, dim=-1)  # (..., nb, c, span)
    out = (probs @ vb).reshape(*lead, nb * c, Dv)  # (..., nb, c, Dv) -> (..., nb * c, Dv)
    return out[..., :T, :].to(out_dtype)  # (..., T, Dv)
