"""How much memory traffic attention needs: an HBM access count (lecture 09).

A GPU computes on chip (registers and SRAM, ~100-200 KB per streaming multiprocessor)
but keeps the tensors in HBM (tens of GB). Reading and writing HBM, not arithmetic, is
what limits standard attention. Dao et al., "FlashAttention" (NeurIPS 2022), section
3.2, count those accesses in *elements*, for sequence length N, head dim d and an
on-chip memory of M elements:

- standard attention (their Algorithm 0) writes S = QK^T to HBM, reads it back for the
  softmax, writes P, reads P again for PV: Theta(N d + N^2) accesses (Theorem 2);
- tiled attention reads Q and writes O once, and reads K and V once per block of
  queries: with blocks of Br = M / (4 d) queries, Theta(N^2 d^2 / M) accesses
  (Theorem 2); no exact attention algorithm can do asymptotically better for all M in
  [d, N d] (Proposition 3).

Counts here are exact for the algorithms as written (one head, no batch); the tiled
count uses the FlashAttention-2 loop order of ``attn_course.flash.tiled`` (queries
outer), whose blocks of Br queries play the role the paper gives to the blocks of Bc
keys. Caveats: real kernels also hit caches (L2) and the count ignores them; M is in
elements, so bytes are elements times the element size (2 for fp16).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["flash_block_sizes", "io_bound", "plot_io_model", "standard_io", "tiled_io",
           "tiled_io_steps"]


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def standard_io(N: int, d: int) -> tuple[int, int]:
    """(reads, writes) of standard attention, in elements (Algorithm 0 of the paper).

    1. read Q, K (2Nd); write S (N^2). 2. read S (N^2); write P (N^2).
    3. read P, V (N^2 + Nd); write O (Nd).
    """
    N, d = _positive_int("N", N), _positive_int("d", d)
    reads = 2 * N * d + N * N + (N * N + N * d)
    writes = N * N + N * N + N * d
    return reads, writes


def flash_block_sizes(d: int, M: int) -> tuple[int, int]:
    """(Br, Bc) for an on-chip memory of M elements: Br = ceil(M / 4d), Bc = min(Br, d).

    The paper's choice (Algorithm 1, line 1) with rows and columns swapped for the
    queries-outer loop order; M must be at least d.
    """
    d, M = _positive_int("d", d), _positive_int("M", M)
    if M < d:
        raise ValueError(f"M must be at least d = {d} elements (one row on chip), got {M}")
    block_q = math.ceil(M / (4 * d))
    return block_q, min(block_q, d)


def tiled_io(N: int, d: int, block_q: int, block_k: int, causal: bool = False) -> tuple[int, int]:
    """(reads, writes) of tiled attention with blocks of ``block_q`` queries, ``block_k`` keys.

    For each block of queries: read Q_i once, read every visible K_j and V_j, write O_i
    and its log-sum-exp once. Causal: key blocks after the block's last query are
    skipped (whole blocks, as the kernels do).
    """
    N, d = _positive_int("N", N), _positive_int("d", d)
    block_q, block_k = _positive_int("block_q", block_q), _positive_int("block_k", block_k)
    ends = np.minimum(np.arange(1, math.ceil(N / block_q) + 1) * block_q, N)  # (Tr,) i1
    if causal:  # keys [0, i1) rounded up to whole key blocks
        keys_read = np.minimum(np.ceil(ends / block_k).astype(np.int64) * block_k, N)  # (Tr,)
    else:
        keys_read = np.full(ends.shape, N)  # (Tr,)
    reads = N * d + int(np.sum(2 * keys_read * d))  # Q once; K and V per query block
    writes = N * d + N  # O and lse once
    return reads, writes


def tiled_io_steps(N: int, d: int, block_q: int, block_k: int, causal: bool = False):
    """Cumulative (reads, writes) after each tile (i, j) in the order the algorithm visits them.

    Returns a list of tuples ``(i, j, reads_so_far, writes_so_far)`` with tile indices i
    (query block) and j (key block). Its last entry equals :func:`tiled_io`.
    """
    N, d = _positive_int("N", N), _positive_int("d", d)
    block_q, block_k = _positive_int("block_q", block_q), _positive_int("block_k", block_k)
    steps, reads, writes = [], 0, 0
    for i, i0 in enumerate(range(0, N, block_q)):
        i1 = min(i0 + block_q, N)
        j_end = min(N, i1) if causal else N
        n_j = math.ceil(j_end / block_k)
        for j in range(n_j):
            j0, j1 = j * block_k, min((j + 1) * block_k, N)
            if j == 0:
                reads += (i1 - i0) * d  # load Q_i
            reads += 2 * (j1 - j0) * d  # load K_j and V_j
            if j == n_j - 1:
                writes += (i1 - i0) * (d + 1)  # store O_i and lse_i
            steps.append((i, j, reads, writes))
    return steps


def io_bound(N, d, M):
    """The Theta(N^2 d^2 / M) term of Theorem 2 (no constant), elementwise on arrays."""
    return np.asarray(N, dtype=float) ** 2 * float(d) ** 2 / np.asarray(M, dtype=float)


def plot_io_model(N_values, d: int, M_values, ax=None):
    """Plot total HBM accesses vs N: standard, tiled for each M, and the bound's slope.

    N_values: sequence lengths; d: head dim; M_values: on-chip sizes in elements.
    Returns the matplotlib Axes (log-log).
    """
    import matplotlib.pyplot as plt

    N_values = np.asarray(N_values)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(N_values, [sum(standard_io(int(n), d)) for n in N_values], "k-o", ms=3,
              label="standard: 4N\u00b2 + 4Nd")
    for M in M_values:
        bq, bk = flash_block_sizes(d, M)
        total = [sum(tiled_io(int(n), d, bq, bk)) for n in N_values]
        line, = ax.loglog(N_values, total, "-o", ms=3, label=f"tiled, M = {M // 1024}K")
        ax.loglog(N_values, io_bound(N_values, d, M), "--", color=line.get_color(), lw=1,
                  label=f"N\u00b2d\u00b2/M, M = {M // 1024}K")
    ax.set_xlabel("sequence length N")
    ax.set_ylabel("HBM accesses (elements)")
    ax.set_title(f"HBM traffic of one head, d = {d}")
    ax.legend(fontsize=7)
    return ax
