"""Associative (parallel prefix) scans of the linear recurrence h_t = a_t h_{t-1} + b_t
(lecture 11).

The selective scan's recurrence is linear in h, and pairs (a, b) compose associatively:
applying step (a1, b1) and then (a2, b2) is the single step

    (a1, b1) . (a2, b2) = (a1 a2, a2 b1 + b2),

so all prefixes h_1 .. h_T can be computed by any parallel prefix-sum algorithm (Blelloch,
"Prefix sums and their applications", 1990; Martin and Cundy, "Parallelizing linear
recurrent neural nets over sequence length", ICLR 2018; S5, Smith et al. 2023, and Mamba's
GPU kernel use this). Counting one application of the operator as one unit of work, and
the rounds of operations that can run at once as the depth:

- sequential loop:           work T - 1,           depth T - 1;
- Hillis and Steele (1986):  work ~ T log2 T,      depth ceil(log2 T)  (every element
  combines with the one 2^d before it in round d);
- Blelloch (1990):           work < 2 T,           depth ~ 2 log2 T    (an up-sweep builds
  sums of blocks of 2, 4, 8, ... in a tree; a down-sweep fills in the rest).

Blelloch's does no more work than the loop up to a factor 2 and is the one GPUs use; the
depth is what a machine with enough processors waits for.

Shapes: a and b are tensors with the time axis at ``dim`` (default 1: (batch, T, ...)),
broadcast against each other; h_0 = 0 (pass ``h0`` to start elsewhere: it is folded into
b_1). Each function returns h of the broadcast shape, and with ``return_counts`` also
{"work", "depth"}, counted as the operator is applied.

Caveats: written as rounds of vectorised torch operations to show the algorithm, not for
speed; non-power-of-two lengths are padded with the identity step (a = 1, b = 0) inside
Blelloch's scan, whose padded steps are counted too.
"""

from __future__ import annotations

import math

import torch

__all__ = ["hillis_steele_scan", "blelloch_scan", "linear_recurrence_loop",
           "selective_scan_associative"]


def _prepare(a, b, dim, h0):
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
    try:
        shape = torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        raise ValueError(f"a and b must broadcast, got shapes {tuple(a.shape)} and "
                         f"{tuple(b.shape)}") from None
    if not -len(shape) <= dim < len(shape):
        raise ValueError(f"dim must index the time axis of a tensor of shape {tuple(shape)}, "
                         f"got {dim}")
    a, b = (torch.movedim(x.expand(shape), dim, 0).clone() for x in (a, b))  # (T, ...)
    if h0 is not None:  # h_1 = a_1 h0 + b_1: fold h0 into the first step
        b[0] = a[0] * h0 + b[0]
    return a, b


def _combine(a1, b1, a2, b2):
    """(a1, b1) then (a2, b2): (a1 a2, a2 b1 + b2)."""
    return a1 * a2, a2 * b1 + b2


def linear_recurrence_loop(a, b, dim: int = 1, h0=None, return_counts: bool = False):
    """h_t = a_t h_{t-1} + b_t, one step after another (the reference order)."""
    a, b = _prepare(a, b, dim, h0)
    hs = [b[0]]
    for t in range(1, a.shape[0]):
        hs.append(a[t] * hs[-1] + b[t])
    h = torch.movedim(torch.stack(hs), 0, dim)
    steps = a.shape[0] - 1
    return (h, {"work": steps, "depth": steps}) if return_counts else h


def hillis_steele_scan(a, b, dim: int = 1, h0=None, return_counts: bool = False):
    """All prefixes in ceil(log2 T) rounds: in round d, element t takes in element t - 2^d."""
    a, b = _prepare(a, b, dim, h0)
    T = a.shape[0]
    work = depth = 0
    offset = 1
    while offset < T:
        a_new, b_new = _combine(a[:-offset], b[:-offset], a[offset:], b[offset:])
        a = torch.cat([a[:offset], a_new])  # (T, ...) the first `offset` are final
        b = torch.cat([b[:offset], b_new])
        work += T - offset
        depth += 1
        offset *= 2
    h = torch.movedim(b, 0, dim)
    return (h, {"work": work, "depth": depth}) if return_counts else h


def blelloch_scan(a, b, dim: int = 1, h0=None, return_counts: bool = False):
    """All prefixes by Blelloch's work-efficient up-sweep and down-sweep (inclusive form)."""
    a, b = _prepare(a, b, dim, h0)
    T = a.shape[0]
    n = 1 << max(0, math.ceil(math.log2(T)))  # the tree needs a power of two
    if n > T:  # pad with the identity step: a = 1, b = 0
        pad = (n - T, *a.shape[1:])
        a = torch.cat([a, a.new_ones(pad)])
        b = torch.cat([b, b.new_zeros(pad)])
    work = depth = 0
    stride = 1
    while stride < n:  # up-sweep: element i (i + 1 a multiple of 2 stride) takes in i - stride
        idx = torch.arange(2 * stride - 1, n, 2 * stride)
        a[idx], b[idx] = _combine(a[idx - stride], b[idx - stride], a[idx], b[idx])
        work, depth = work + len(idx), depth + 1
        stride *= 2
    stride //= 4
    while stride >= 1:  # down-sweep: the middle of each block takes in its left neighbour's prefix
        idx = torch.arange(3 * stride - 1, n, 2 * stride)
        if len(idx):
            a[idx], b[idx] = _combine(a[idx - stride], b[idx - stride], a[idx], b[idx])
            work, depth = work + len(idx), depth + 1
        stride //= 2
    h = torch.movedim(b[:T], 0, dim)
    return (h, {"work": work, "depth": depth}) if return_counts else h


def selective_scan_associative(u, delta, A, B, C, scan=blelloch_scan):
    """Mamba's selective scan with the recurrence done by an associative scan.

    Shapes as in :func:`attn_course.ssm.selective_scan_sequential`: u, delta (batch, T, E),
    A (E, N), B, C (batch, T, N). a_t = exp(delta_t A) and b_t = delta_t u_t B_t, both
    (batch, T, E, N); returns y (batch, T, E) with y_t = sum_n C_t[n] h_t[:, n].
    """
    a = torch.exp(delta[..., None] * A)  # (batch, T, E, N)
    b = (delta * u)[..., None] * B[:, :, None, :]  # (batch, T, E, N)
    h = scan(a, b, dim=1)  # (batch, T, E, N)
    return (h * C[:, :, None, :]).sum(-1)  # (batch, T, E)
