"""Mamba-2's scalar-A selective scan, chunk by chunk as matrix products (lecture 11).

Dao and Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through
Structured State Space Duality" (Mamba-2, ICML 2024), sections 3.3 and 6 ("SSD").
Mamba-2 restricts A to a scalar times the identity per head: a_h I, with a_h < 0. The
channels of one head (its head dim P) share that a_h and the step dt_t, and all heads
share B_s and C_s (one group). Per head h, with X_t = dt_t u_t (P,) and
L_t = sum_{r <= t} dt_r a_h, a scalar per position:

    h_t = exp(dt_t a_h) h_{t-1} + X_t B_t^T        (P, N)
    y_t = h_t C_t                                  (P,)

Because the decay exp(L_t - L_s) is one number per (t, s) (not one per state n, as with
Mamba-1's A of shape (E, N)), a chunk of c positions is three matrix products:

    M      = (C B^T) * exp(L_t - L_s) [s <= t]     (c, c)  an attention-like matrix
    Y      = M X + exp(L_t) (C h0^T)               (c, P)  within the chunk, and the
                                                           state from earlier chunks
    h_last = exp(L_c) h0 + X^T (exp(L_c - L_s) * B) (P, N)  the state passed on

The work per chunk is O(c^2 (N + P) + c P N) per head, in products a GPU's tensor cores
(or a CPU's BLAS) run at full speed. With the per-(channel, state) A of Mamba-1 the
decay matrix differs for every state n, so the chunk costs c^2 N P per head and cannot
be written as one matrix product (``selective_scan_chunked``).

Shapes: u (batch, T, H, P), dt (batch, T, H) > 0, a (H,) < 0, B_s and C_s (batch, T, N);
returns y (batch, T, H, P) (and the final state (batch, H, P, N)). ``ssd_sequential`` is
the loop, and ``expand_scalar_A`` writes the same model in the shapes of
``selective_scan_sequential`` (E = H * P channels), so both can be compared.

Caveats: no D skip, no gating or convolution (Mamba-2's block adds them); float32 or
float64; the loop across chunks is sequential.
"""

from __future__ import annotations

import math

import torch

__all__ = ["expand_scalar_A", "ssd_chunked", "ssd_sequential"]


def _check(u, dt, a, B, C):
    for name, x in (("u", u), ("dt", dt), ("a", a), ("B", B), ("C", C)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
    if u.ndim != 4:
        raise ValueError(f"u must have shape (batch, T, H, P), got {tuple(u.shape)}")
    batch, T, H, P = u.shape
    if dt.shape != (batch, T, H):
        raise ValueError(f"dt must have shape (batch, T, H) = {(batch, T, H)}, got "
                         f"{tuple(dt.shape)}")
    if a.shape != (H,):
        raise ValueError(f"a must have shape (H,) = ({H},), one scalar per head, got "
                         f"{tuple(a.shape)}")
    if B.ndim != 3 or B.shape[:2] != (batch, T) or C.shape != B.shape:
        raise ValueError(f"B and C must have shape (batch, T, N) with (batch, T) = "
                         f"{(batch, T)}, got B {tuple(B.shape)} and C {tuple(C.shape)}")
    return batch, T, H, P, B.shape[-1]


def ssd_sequential(u, dt, a, B, C, return_state: bool = False):
    """The scalar-A scan as a loop over positions; shapes as in the module docstring."""
    batch, T, H, P, N = _check(u, dt, a, B, C)
    h = u.new_zeros(batch, H, P, N)  # (batch, H, P, N)
    ys = []
    for t in range(T):
        decay = torch.exp(dt[:, t] * a)  # (batch, H)
        x = dt[:, t, :, None] * u[:, t]  # (batch, H, P)
        h = decay[..., None, None] * h + x[..., None] * B[:, t, None, None, :]  # (batch, H, P, N)
        ys.append(h @ C[:, t, None, :, None])  # (batch, H, P, 1)
    y = torch.stack(ys, dim=1)[..., 0]  # (batch, T, H, P)
    return (y, h) if return_state else y


def ssd_chunked(u, dt, a, B, C, chunk: int = 64, return_state: bool = False):
    """The scalar-A scan, ``chunk`` positions at a time, each chunk three matrix products.

    Shapes as in the module docstring; T need not be a multiple of ``chunk``.
    """
    batch, T, H, P, N = _check(u, dt, a, B, C)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    h = u.new_zeros(batch, H, P, N)  # (batch, H, P, N) the state carried across chunks
    ys = []
    for t0 in range(0, T, chunk):
        t1 = min(t0 + chunk, T)
        c = t1 - t0
        x = (dt[:, t0:t1, :, None] * u[:, t0:t1]).transpose(1, 2)  # (batch, H, c, P)
        L = torch.cumsum(dt[:, t0:t1] * a, dim=1).transpose(1, 2)  # (batch, H, c)
        keep = torch.ones(c, c, dtype=torch.bool, device=u.device).tril()  # (c, c) s <= t
        seg = (L[..., :, None] - L[..., None, :]).masked_fill(~keep, -math.inf)  # (batch, H, c, c)
        Bc, Cc = B[:, t0:t1], C[:, t0:t1]  # (batch, c, N) each
        G = Cc @ Bc.transpose(1, 2)  # (batch, c, c): C_t . B_s, shared by the heads
        M = G[:, None] * torch.exp(seg)  # (batch, H, c, c)
        y = M @ x  # (batch, H, c, P) within the chunk
        y = y + torch.exp(L)[..., None] * (Cc[:, None] @ h.transpose(-1, -2))  # + earlier chunks
        ys.append(y.transpose(1, 2))  # (batch, c, H, P)
        w = torch.exp(L[..., -1:] - L)  # (batch, H, c) decay from s to the chunk's end
        h = torch.exp(L[..., -1])[..., None, None] * h + \
            x.transpose(-1, -2) @ (w[..., None] * Bc[:, None])  # (batch, H, P, N)
    y = torch.cat(ys, dim=1)  # (batch, T, H, P)
    return (y, h) if return_state else y


def expand_scalar_A(u, dt, a, N: int):
    """The same model in ``selective_scan_sequential``'s shapes, E = H * P channels.

    Returns (u (batch, T, E), delta (batch, T, E), A (E, N)) with channel h * P + p of
    head h: its step dt[..., h] and A[h * P + p, :] = a[h] for every state.
    """
    batch, T, H, P = u.shape
    delta = dt[..., None].expand(batch, T, H, P).reshape(batch, T, H * P)  # (batch, T, E)
    A = a[:, None, None].expand(H, P, N).reshape(H * P, N)  # (E, N)
    return u.reshape(batch, T, H * P), delta, A
