"""Who holds what, and when: the pure bookkeeping of ring attention (lecture 14).

G processes (``world_size``) form a ring 0 -> 1 -> ... -> G-1 -> 0. Each holds a block
of the queries and a block of the keys and values of one sequence of T tokens. At step
s = 0, 1, ..., G-1, process r attends with its queries to the key-value block that
*started* on process ``(r - s) mod G`` (:func:`ring_source`), then passes it on to
process r + 1. After G steps every query has met every key, with G - 1 exchanges.

Layouts (which tokens a process holds, :func:`layout_chunks`):

- ``"contiguous"``: process r holds tokens ``[r T/G, (r+1) T/G)``. With a causal mask
  process 0 needs only its own block and process G-1 needs all of them: the work per
  step is unbalanced, and every step lasts as long as its busiest process.
- ``"zigzag"``: T is cut into 2G chunks and process r holds chunk r and chunk
  2G-1-r, one from the start and one from the end. Every process then does the same
  causal work at every step after the first (:func:`work_per_step`). This is the
  "zigzag" order of Zhu's ring-flash-attention and of PyTorch's context parallelism; the
  striped order of Brandon et al. ("Striped Attention: Faster Ring Attention for Causal
  Transformers", 2023) balances the work the same way with stripes of single tokens.

Everything here is plain Python and numpy (no process group), so the ring's picture in
lecture 14 and the tests can use it without starting processes.

Caveat: the work counted by :func:`work_per_step` is the number of query-key pairs whose
score is computed, chunk by chunk: a chunk pair that is entirely in the future of its
queries is skipped, a chunk pair on the diagonal is computed whole (half of it masked),
as a blocked kernel does.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "LAYOUTS",
    "chunk_pair_kind",
    "layout_chunks",
    "layout_positions",
    "ring_schedule",
    "ring_source",
    "work_per_step",
]

LAYOUTS = ("contiguous", "zigzag")


def _require_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def ring_source(rank: int, step: int, world_size: int) -> int:
    """The process whose key-value block ``rank`` holds at ``step``: ``(rank - step) mod G``."""
    G = _require_int("world_size", world_size, 1)
    rank = _require_int("rank", rank, 0)
    if rank >= G:
        raise ValueError(f"rank must be in 0..{G - 1} for world_size={G}, got {rank}")
    step = _require_int("step", step, 0)
    return (rank - step) % G


def ring_schedule(world_size: int) -> np.ndarray:
    """(G steps, G processes) array: entry [s, r] is the block process r holds at step s."""
    G = _require_int("world_size", world_size, 1)
    steps = np.arange(G)[:, None]  # (G, 1)
    ranks = np.arange(G)[None, :]  # (1, G)
    return (ranks - steps) % G  # (G, G)


def layout_chunks(T: int, world_size: int, layout: str = "contiguous") -> list[list[tuple[int, int]]]:
    """The token ranges ``[(start, stop), ...]`` that each process holds, in order.

    contiguous: one range of T/G tokens per process; zigzag: two ranges of T/(2G) tokens,
    chunk r and chunk 2G-1-r. T must be divisible by G (contiguous) or 2G (zigzag).
    """
    G = _require_int("world_size", world_size, 1)
    T = _require_int("T", T, 1)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    parts = G if layout == "contiguous" else 2 * G
    if T % parts:
        raise ValueError(
            f"sequence length T={T} must be divisible by {parts} for layout={layout!r} with "
            f"world_size={G} ({'G' if layout == 'contiguous' else '2G'} equal chunks); pad the "
            f"sequence to a multiple of {parts}, e.g. T={-(-T // parts) * parts}"
        )
    c = T // parts
    if layout == "contiguous":
        return [[(r * c, (r + 1) * c)] for r in range(G)]
    return [[(r * c, (r + 1) * c), ((2 * G - 1 - r) * c, (2 * G - r) * c)] for r in range(G)]


def layout_positions(T: int, world_size: int, layout: str = "contiguous") -> list[np.ndarray]:
    """The global positions of the tokens each process holds, one int array per process."""
    return [np.concatenate([np.arange(a, b) for a, b in chunks])
            for chunks in layout_chunks(T, world_size, layout)]


def chunk_pair_kind(q_chunk: tuple[int, int], k_chunk: tuple[int, int], causal: bool) -> str:
    """How a block of queries meets a block of keys: ``"full"``, ``"diagonal"`` or ``"skip"``.

    full: every key is visible to every query; skip: with a causal mask, every key is in
    the future of every query; diagonal: some are, some are not (the mask is needed).
    """
    (q0, q1), (k0, k1) = q_chunk, k_chunk
    if not causal or k1 - 1 <= q0:
        return "full"
    if k0 > q1 - 1:
        return "skip"
    return "diagonal"


def work_per_step(T: int, world_size: int, layout: str = "contiguous",
                  causal: bool = True) -> np.ndarray:
    """(G steps, G processes): query-key scores each process computes at each step.

    Chunk pairs of kind "skip" cost nothing; "full" and "diagonal" cost their area.
    The slowest process of a step sets the step's time, so ``work.max(axis=1).sum()``
    is the critical path of the whole ring.
    """
    chunks = layout_chunks(T, world_size, layout)
    G = len(chunks)
    work = np.zeros((G, G), dtype=np.int64)
    for s in range(G):
        for r in range(G):
            for qc in chunks[r]:
                for kc in chunks[(r - s) % G]:
                    if chunk_pair_kind(qc, kc, causal) != "skip":
                        work[s, r] += (qc[1] - qc[0]) * (kc[1] - kc[0])
    return work
