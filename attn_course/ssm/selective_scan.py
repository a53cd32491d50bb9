"""Mamba's selective scan: an SSM whose step size, B and C depend on the input (lecture 11).

Gu and Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023),
section 3.2 and algorithm 2; the chunked scan follows the "state passing" scheme of Dao
and Gu, "Transformers are SSMs" (Mamba-2, 2024), section 6.

S4D's A, B, C and dt are the same at every position, so the model cannot decide, token
by token, what to store and what to forget. Mamba makes dt (the step size), B and C
functions of the input:

    Abar_t = exp(dt_t A)              (batch, E, N)   dt_t (batch, E) > 0, A (E, N) < 0
    h_t = Abar_t * h_{t-1} + dt_t u_t B_t                B_t (batch, N)
    y_t = sum_n C_t[n] h_t[:, n]                         C_t (batch, N)

A large dt_t resets the state towards the current token; a small one keeps the past.
(The Mamba paper's equations discretise both A and B by zero-order hold,
Bbar = (dt A)^{-1} (exp(dt A) - I) dt B; its reference implementation, ``selective_scan_ref``
in the mamba_ssm package, and its CUDA kernel use exp(dt A) for A but the simpler
Euler rule dt B for B, and so does this module. The two agree to first order in dt A.)
With input-dependent coefficients there is no fixed convolution kernel any more, so the
FFT trick of S4D is gone. The recurrence is still *linear* in h, though, which is what
makes it parallel: h_t = sum_{s<=t} exp(L_t - L_s) dt_s u_s B_s with L_t = sum_{r<=t}
dt_r A, and the log of a product of Abar is just a cumulative sum.

- :func:`selective_scan_sequential`: the loop over :func:`selective_scan_step`;
- :func:`selective_scan_chunked`: within each chunk of c positions, every h_t at once
  from the cumulative sums (a (c, c) lower-triangular decay matrix per channel and
  state); across chunks, the state at each chunk boundary is carried forward.

Tested equal, including lengths that are not a multiple of the chunk size. With A = 0,
dt = 1, B_t = phi(k_t), C_t = phi(q_t) and u = v, the scan is the numerator of causal
linear attention: linear attention is an SSM that never forgets (tested).

Shape letters: ``batch``, T (length), E (channels), N (state size); B is the SSM's
input matrix here, so the batch dimension is spelled out.

Caveats. Mamba's CUDA kernel keeps h in on-chip memory and never writes the
(batch, T, E, N) states to main memory; this reference does, so its memory is
O(T E N) (and O(T c E N) inside a chunk). The chunked form does about c times the
arithmetic of the loop (the (c, c) decay matrices), in T / c sequential steps instead of
T: it pays off where many operations run at once (a GPU), while on one CPU thread only
small chunks beat the loop (measured in lecture 11). Mamba-2 gets its speed from a
scalar A per head instead (``attn_course.ssm.ssd``), which turns a chunk into a few
matrix products. The loop across chunks is sequential; it could itself be an
associative scan, the same linear recurrence again (``attn_course.ssm.scan``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SelectiveSSM",
    "selective_scan_chunked",
    "selective_scan_sequential",
    "selective_scan_step",
]


def _check_scan(u, delta, A, B, C, D_skip):
    for name, x in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
    if u.ndim != 3:
        raise ValueError(f"u must have shape (batch, T, E), got {tuple(u.shape)}")
    batch, T, E = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta must have u's shape (batch, T, E) = {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.ndim != 2 or A.shape[0] != E:
        raise ValueError(f"A must have shape (E, N) with E = {E}, got {tuple(A.shape)}")
    N = A.shape[1]
    for name, x in (("B", B), ("C", C)):
        if x.shape != (batch, T, N):
            raise ValueError(f"{name} must have shape (batch, T, N) = {(batch, T, N)}, got {tuple(x.shape)}")
    if D_skip is not None and D_skip.shape != (E,):
        raise ValueError(f"D_skip must have shape (E,) = ({E},), got {tuple(D_skip.shape)}")
    return batch, T, E, N


def selective_scan_step(h: torch.Tensor, u_t: torch.Tensor, delta_t: torch.Tensor,
                        A: torch.Tensor, B_t: torch.Tensor, C_t: torch.Tensor):
    """One step. h: (batch, E, N); u_t, delta_t: (batch, E); A: (E, N); B_t, C_t: (batch, N).

    Returns ``(h, y_t)``: the new state (batch, E, N) and the output (batch, E).
    """
    Abar = torch.exp(delta_t[..., None] * A)  # (batch, E, N)
    h = Abar * h + (delta_t * u_t)[..., None] * B_t[:, None, :]  # (batch, E, N)
    y_t = (h * C_t[:, None, :]).sum(dim=-1)  # (batch, E)
    return h, y_t


def selective_scan_sequential(u, delta, A, B, C, D_skip=None, h0=None, return_state=False):
    """The selective scan as a loop over time.

    u, delta: (batch, T, E); A: (E, N); B, C: (batch, T, N); D_skip: (E,) or None, adds
    D_skip * u; h0: (batch, E, N) or None (zeros). Returns y (batch, T, E), and the
    final state (batch, E, N) when ``return_state``.
    """
    batch, T, E, N = _check_scan(u, delta, A, B, C, D_skip)
    h = u.new_zeros(batch, E, N) if h0 is None else h0
    ys = []
    for t in range(T):
        h, y_t = selective_scan_step(h, u[:, t], delta[:, t], A, B[:, t], C[:, t])
        ys.append(y_t)
    y = torch.stack(ys, dim=1)  # (batch, T, E)
    if D_skip is not None:
        y = y + u * D_skip
    return (y, h) if return_state else y


def selective_scan_chunked(u, delta, A, B, C, D_skip=None, h0=None, chunk: int = 16,
                           return_state=False):
    """The same scan, parallel within chunks of ``chunk`` positions, sequential across.

    Arguments and returns as :func:`selective_scan_sequential`. T need not be a
    multiple of ``chunk``: the tail is padded with dt = 0 steps, which leave the state
    unchanged (Abar = 1, nothing added).
    """
    batch, T, E, N = _check_scan(u, delta, A, B, C, D_skip)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    c = min(chunk, T)
    nc = -(-T // c)  # number of chunks
    pad = nc * c - T
    u_p, dt_p = (F.pad(x, (0, 0, 0, pad)) for x in (u, delta))  # (batch, nc * c, E)
    B_p, C_p = (F.pad(x, (0, 0, 0, pad)) for x in (B, C))  # (batch, nc * c, N)

    dA = (dt_p[..., None] * A).reshape(batch, nc, c, E, N)  # log Abar_t per position
    L = dA.cumsum(dim=2)  # (batch, nc, c, E, N): log prod_{r<=t} Abar_r within the chunk
    x = (dt_p * u_p)[..., None] * B_p[:, :, None, :]  # (batch, nc * c, E, N): dt u B
    x = x.reshape(batch, nc, c, E, N)  # (batch, nc, c, E, N)

    # Within each chunk, from a zero state: h_t = sum_{s<=t} exp(L_t - L_s) x_s.
    seg = L[:, :, :, None] - L[:, :, None, :]  # (batch, nc, c_t, c_s, E, N), <= 0 for s <= t
    lower = torch.ones(c, c, dtype=torch.bool, device=u.device).tril()[:, :, None, None]
    decay = torch.exp(seg.masked_fill(~lower, float("-inf")))  # zero above the diagonal
    h_local = torch.einsum("bgtsdn,bgsdn->bgtdn", decay, x)  # (batch, nc, c, E, N)

    # Across chunks: carry the state at each chunk boundary (a short sequential loop).
    chunk_decay = torch.exp(L[:, :, -1])  # (batch, nc, E, N): Abar product over a chunk
    h = u.new_zeros(batch, E, N) if h0 is None else h0
    starts = []
    for g in range(nc):
        starts.append(h)
        h = chunk_decay[:, g] * h + h_local[:, g, -1]  # state at the end of chunk g
    h_start = torch.stack(starts, dim=1)  # (batch, nc, E, N)
    h_all = h_local + torch.exp(L) * h_start[:, :, None]  # (batch, nc, c, E, N)

    C_c = C_p.reshape(batch, nc, c, N)  # (batch, nc, c, N)
    y = torch.einsum("bgtdn,bgtn->bgtd", h_all, C_c).reshape(batch, nc * c, E)[:, :T]
    if D_skip is not None:
        y = y + u * D_skip
    return (y, h) if return_state else y  # y (batch, T, E)


class SelectiveSSM(nn.Module):
    """Mamba's selective SSM (the S6 block's core, without its convolution and gate).

    Args: d_model (E channels), d_state (N), dt_rank (default ceil(E / 16)), dt_min,
    dt_max (range of the initial step sizes). A starts at -(1, 2, ..., N) per channel
    (S4D-Real, as in Mamba) and is kept negative as -exp(A_log). Forward: u
    (batch, T, E) -> y (batch, T, E); ``chunk`` None runs the loop, an int the chunked scan.
    """

    def __init__(self, d_model: int, d_state: int = 16, dt_rank: int | None = None,
                 dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        for name, val in (("d_model", d_model), ("d_state", d_state)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive integer, got {val!r}")
        self.d_state = d_state
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.x_proj = nn.Linear(d_model, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_model, bias=True)
        dt = torch.exp(torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        with torch.no_grad():  # softplus(bias) = dt at initialisation
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        A = torch.arange(1, d_state + 1, dtype=torch.float32).expand(d_model, d_state)
        self.A_log = nn.Parameter(torch.log(A).clone())  # (E, N)
        self.D = nn.Parameter(torch.ones(d_model))  # (E,)

    def coefficients(self, u: torch.Tensor):
        """The input-dependent (delta, A, B, C) for u (batch, T, E)."""
        dt_in, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt_in))  # (batch, T, E), > 0
        return delta, -torch.exp(self.A_log), B, C  # A (E, N); B, C (batch, T, N)

    def forward(self, u: torch.Tensor, chunk: int | None = 16) -> torch.Tensor:
        delta, A, B, C = self.coefficients(u)
        if chunk is None:
            return selective_scan_sequential(u, delta, A, B, C, D_skip=self.D)
        return selective_scan_chunked(u, delta, A, B, C, D_skip=self.D, chunk=chunk)
