"""How much memory traffic attention needs: an HBM access count (lecture 09).

A GPU computes on chip (registers and SRAM, ~100-200 KB per streaming multiprocessor)
but keeps the tensors in HBM (tens of GB). Reading and writing HBM, not arithmetic, is
what limits standard attention. Dao et al., "FlashAttention" (NeurIPS 2022), section
3.2, count those accesses in *elements*; in the course's notation (docs/notation.md;
the paper's N is our T = S, its d our D) for sequence length T, head dim D and an
on-chip memory of M elements:

- standard attention (their Algorithm 0) writes the scores QK^T to HBM, reads them back
  for the softmax, writes P, reads P again for PV: Theta(T D + T^2) accesses (Theorem 2);
- tiled attention reads Q and writes O once, and reads K and V once per block of
  queries: with blocks of Br = M / (4 D) queries, Theta(T^2 D^2 / M) accesses
  (Theorem 2); no exact attention algorithm can do asymptotically better for all M in
  [D, T D] (Proposition 3).

Two loop orders are counted. :func:`tiled_io` is FlashAttention-2's (Dao, 2023,
Algorithm 1; ``attn_course.flash.tiled``): query blocks outside, each O_i written once.
:func:`tiled_io_keys_outer` is FlashAttention-1's (Algorithm 1 of the 2022 paper): key
blocks outside, query blocks inside, so every O_i, l_i and m_i is read from and written
back to HBM once per key block. Both are Theta(T^2 D^2 / M); they differ in the writes.

Counts are exact for the algorithms as written (one head, no batch, T = S). Caveats:
real kernels also hit caches (L2) and the count ignores them; M is in elements, so
bytes are elements times the element size (2 for fp16).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["flash_block_sizes", "io_bound", "plot_io_model", "standard_io", "tiled_io",
           "tiled_io_keys_outer", "tiled_io_steps"]


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def standard_io(T: int, D: int) -> tuple[int, int]:
    """(reads, writes) of standard attention, in elements (Algorithm 0 of the paper).

    1. read Q, K (2TD); write the scores (T^2). 2. read them (T^2); write P (T^2).
    3. read P, V (T^2 + TD); write O (TD).
    """
    T, D = _positive_int("T", T), _positive_int("D", D)
    reads = 2 * T * D + T * T + (T * T + T * D)
    writes = T * T + T * T + T * D
    return reads, writes


def flash_block_sizes(D: int, M: int) -> tuple[int, int]:
    """(Br, Bc) for an on-chip memory of M elements: Br = ceil(M / 4D), Bc = min(Br, D).

    The paper's choice (Algorithm 1, line 1) with rows and columns swapped for the
    queries-outer loop order; M must be at least D.
    """
    D, M = _positive_int("D", D), _positive_int("M", M)
    if M < D:
        raise ValueError(f"M must be at least D = {D} elements (one row on chip), got {M}")
    block_q = math.ceil(M / (4 * D))
    return block_q, min(block_q, D)


def tiled_io(T: int, D: int, block_q: int, block_k: int, causal: bool = False) -> tuple[int, int]:
    """(reads, writes) of tiled attention, query blocks outside (FlashAttention-2).

    For each block of ``block_q`` queries: read Q_i once, read every visible K_j and V_j
    (blocks of ``block_k``), write O_i and its log-sum-exp once. Causal: key blocks after
    the block's last query are skipped (whole blocks, as the kernels do).
    """
    T, D = _positive_int("T", T), _positive_int("D", D)
    block_q, block_k = _positive_int("block_q", block_q), _positive_int("block_k", block_k)
    ends = np.minimum(np.arange(1, math.ceil(T / block_q) + 1) * block_q, T)  # (Tr,) i1
    if causal:  # keys [0, i1) rounded up to whole key blocks
        keys_read = np.minimum(np.ceil(ends / block_k).astype(np.int64) * block_k, T)  # (Tr,)
    else:
        keys_read = np.full(ends.shape, T)  # (Tr,)
    reads = T * D + int(np.sum(2 * keys_read * D))  # Q once; K and V per query block
    writes = T * D + T  # O and lse once
    return reads, writes


def tiled_io_keys_outer(T: int, D: int, block_q: int, block_k: int,
                        causal: bool = False) -> tuple[int, int]:
    """(reads, writes) of tiled attention, key blocks outside (FlashAttention-1).

    Algorithm 1 of Dao et al. (2022): initialise O = 0, l = 0, m = -inf in HBM (writes
    TD + 2T); for each block of ``block_k`` keys, read K_j and V_j once; for each block
    of ``block_q`` queries that sees them, read Q_i, O_i, l_i, m_i, fold the tile in and
    write O_i, l_i, m_i back. Causal: query blocks that end before key j0 are skipped.
    O is divided by l in the last pass over each row (counted in that pass's write).
    """
    T, D = _positive_int("T", T), _positive_int("D", D)
    block_q, block_k = _positive_int("block_q", block_q), _positive_int("block_k", block_k)
    reads, writes = 0, T * D + 2 * T  # O, l, m initialised in HBM
    for j0 in range(0, T, block_k):
        reads += 2 * (min(j0 + block_k, T) - j0) * D  # K_j, V_j once
        i_start = (j0 // block_q) * block_q if causal else 0
        rows = T - i_start  # queries of the visited query blocks
        reads += rows * (2 * D + 2)  # Q_i, O_i, l_i, m_i
        writes += rows * (D + 2)  # O_i, l_i, m_i
    return reads, writes


def tiled_io_steps(T: int, D: int, block_q: int, block_k: int, causal: bool = False):
    """Cumulative (reads, writes) after each tile (i, j) in the order the algorithm visits them.

    Returns a list of tuples ``(i, j, reads_so_far, writes_so_far)`` with tile indices i
    (query block) and j (key block). Its last entry equals :func:`tiled_io`.
    """
    T, D = _positive_int("T", T), _positive_int("D", D)
    block_q, block_k = _positive_int("block_q", block_q), _positive_int("block_k", block_k)
    steps, reads, writes = [], 0, 0
    for i, i0 in enumerate(range(0, T, block_q)):
        i1 = min(i0 + block_q, T)
        j_end = min(T, i1) if causal else T
        n_j = math.ceil(j_end / block_k)
        for j in range(n_j):
            j0, j1 = j * block_k, min((j + 1) * block_k, T)
            if j == 0:
                reads += (i1 - i0) * D  # load Q_i
            reads += 2 * (j1 - j0) * D  # load K_j and V_j
            if j == n_j - 1:
                writes += (i1 - i0) * (D + 1)  # store O_i and lse_i
            steps.append((i, j, reads, writes))
    return steps


def io_bound(T, D, M):
    """The Theta(T^2 D^2 / M) term of Theorem 2 (no constant), elementwise on arrays."""
    return np.asarray(T, dtype=float) ** 2 * float(D) ** 2 / np.asarray(M, dtype=float)


def plot_io_model(T_values, D: int, M_values, ax=None):
    """Plot total HBM accesses vs T: standard, tiled for each M, and the bound's slope.

    T_values: sequence lengths; D: head dim; M_values: on-chip sizes in elements.
    Returns the matplotlib Axes (log-log).
    """
    import matplotlib.pyplot as plt

    T_values = np.asarray(T_values)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(T_values, [sum(standard_io(int(n), D)) for n in T_values], "k-o", ms=3,
              label="standard: 4T\u00b2 + 4TD")
    for M in M_values:
        bq, bk = flash_block_sizes(D, M)
        total = [sum(tiled_io(int(n), D, bq, bk)) for n in T_values]
        line, = ax.loglog(T_values, total, "-o", ms=3, label=f"tiled, M = {M // 1024}K")
        ax.loglog(T_values, io_bound(T_values, D, M), "--", color=line.get_color(), lw=1,
                  label=f"T\u00b2D\u00b2/M, M = {M // 1024}K")
    ax.set_xlabel("sequence length T (= S)")
    ax.set_ylabel("HBM accesses (elements)")
    ax.set_title(f"HBM traffic of one head, D = {D}")
    ax.legend(fontsize=7)
    return ax
