"""Ring attention over ``torch.distributed``: exact attention for a sequence split over G processes.

Liu, Zaharia and Abbeel, "Ring Attention with Blockwise Transformers for Near-Infinite
Context" (2023). Each of G processes (``world_size``) holds T/G queries and the keys
and values of the same T/G tokens. At each of G steps a process attends with its
queries to the key-value block it holds, *while* it sends that block to the next
process of the ring and receives the next one from the previous process
(point-to-point ``isend``/``irecv``, see :mod:`attn_course.distributed.schedule` for who
holds what). Each step gives a partial result normalised over the keys seen in that
block: an output ``out`` (B, H, T/G, D) and the log-sum-exp of its scores ``lse``
(B, H, T/G). Two partial results are merged exactly with the rescaling of lecture 09's
online softmax (:func:`merge_partials`):

    lse = log(exp(lse_a) + exp(lse_b))
    out = exp(lse_a - lse) * out_a + exp(lse_b - lse) * out_b

(``attn_course.flash.merge_partials`` is the same merge of lecture 09's Flash-Decoding,
in numpy, for many parts at once; the ring merges two at a time, in torch, as its blocks
arrive), so after G steps every process holds exactly its rows of softmax(Q K^T / sqrt(D)) V,
and no process ever held more than two key-value blocks. The backward pass
(:func:`ring_attention_backward`) passes the key-value blocks around once more,
together with the gradients of the keys and values, which arrive back at their owner
after G exchanges; it recomputes the probabilities from the saved ``lse`` as
FlashAttention's backward does (``attn_course.flash.flash_backward``).

Causal attention skips the chunk pairs that lie entirely in the future of their
queries. With the ``"zigzag"`` layout (each process holds one chunk from the start and
one from the end of the sequence) every process does the same work at every step.

Caveats:

- one ring over the default process group; every process must pass local q, k, v of the
  same shape (B, H, T/G, D), so T must be divisible by G (2G for zigzag); self-attention
  only (keys and queries come from the same tokens);
- communication overlaps computation only as far as the backend lets it: gloo runs
  point-to-point transfers on its own threads, so on CPU processes the transfer of the
  next block proceeds while this one is computed; with NCCL the transfers run on their
  own CUDA stream. The gradient blocks of the backward pass are added on arrival, so
  they overlap with the next step's computation too;
- the arithmetic is plain torch (the scores of one chunk pair are materialised); a
  production kernel would call a fused attention kernel that returns the lse per block.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from attn_course.distributed.schedule import LAYOUTS, chunk_pair_kind, layout_chunks

__all__ = [
    "CommStats",
    "attention_with_lse",
    "merge_partials",
    "ring_attention",
    "ring_attention_backward",
    "ring_attention_forward",
    "shard",
    "unshard",
]


@dataclass
class CommStats:
    """What one process sent and how long it waited, one row per step of the ring.

    Each row: ``phase`` ("forward" or "backward"), ``step``, ``bytes_sent`` (the bytes of
    the tensors passed to ``isend`` at that step), ``compute_s`` (seconds computing
    attention on the block held) and ``wait_s`` (seconds spent waiting for that step's
    transfers: with the transfer overlapped, the communication that the computation did
    not hide; with ``overlap=False``, the whole time of the transfer).
    Plain data, so it can be returned from a worker process.
    """

    rows: list = field(default_factory=list)

    def record(self, phase: str, step: int, bytes_sent: int, compute_s: float, wait_s: float):
        self.rows.append(dict(phase=phase, step=step, bytes_sent=int(bytes_sent),
                              compute_s=float(compute_s), wait_s=float(wait_s)))

    def bytes_sent(self, phase: str | None = None) -> int:
        return sum(r["bytes_sent"] for r in self.rows if phase in (None, r["phase"]))


def _check_local(q, k, v) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(
                f"{name} must be a tensor of shape (B, H, T/G, D) (this process's block), got "
                f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
            )
    if not (q.shape == k.shape == v.shape):
        raise ValueError(
            f"q, k and v must have the same shape (B, H, T/G, D) on every process (self-attention, "
            f"equal blocks), got q.shape={tuple(q.shape)}, k.shape={tuple(k.shape)}, "
            f"v.shape={tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype) or not q.is_floating_point():
        raise TypeError(
            f"q, k and v must share one floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}"
        )


def attention_with_lse(q, k, v, scale: float, mask=None):
    """Attention of q (..., Tq, D) over k, v (..., Tk, D), and the log-sum-exp of its scores.

    mask: bool (Tq, Tk), True = may attend. Returns ``(out, lse)``: out (..., Tq, D)
    normalised over these keys only, lse (..., Tq). A row with no visible key gets
    out = 0 and lse = -inf, which :func:`merge_partials` treats as "nothing seen".
    """
    scores = (q @ k.transpose(-1, -2)) * scale  # (..., Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # (..., Tq)
    shift = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))  # (..., Tq)
    probs = torch.exp(scores - shift[..., None])  # (..., Tq, Tk); exp(-inf) = 0
    return probs @ v, lse  # (..., Tq, D), (..., Tq)


def merge_partials(out_a, lse_a, out_b, lse_b):
    """Merge two partial attention results over disjoint sets of keys into one.

    out_a, out_b: (..., T, D), each normalised over its own keys; lse_a, lse_b: (..., T),
    the log-sum-exp of each one's scores (-inf: no key seen). Returns ``(out, lse)`` over
    the union of the keys, exactly as lecture 09's online softmax rescales its state:
    ``lse = logaddexp(lse_a, lse_b)``, ``out = exp(lse_a - lse) out_a + exp(lse_b - lse) out_b``.
    """
    if out_a.shape != out_b.shape or lse_a.shape != lse_b.shape or out_a.shape[:-1] != lse_a.shape:
        raise ValueError(
            f"expected out_a, out_b of one shape (..., T, D) and lse_a, lse_b of shape (..., T), "
            f"got out_a {tuple(out_a.shape)}, lse_a {tuple(lse_a.shape)}, out_b "
            f"{tuple(out_b.shape)}, lse_b {tuple(lse_b.shape)}"
        )
    lse = torch.logaddexp(lse_a, lse_b)  # (..., T); -inf only if both are -inf
    shift = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    w_a = torch.exp(lse_a - shift)[..., None]  # (..., T, 1); 0 where lse_a = -inf
    w_b = torch.exp(lse_b - shift)[..., None]
    return w_a * out_a + w_b * out_b, lse


def _local_slices(chunks):
    """Local slices of this process's tokens, one per chunk, with the chunk's global range."""
    out, start = [], 0
    for a, b in chunks:
        out.append((slice(start, start + b - a), (a, b)))
        start += b - a
    return out


def _chunk_mask(q_rng, k_rng, device):
    qpos = torch.arange(*q_rng, device=device)
    kpos = torch.arange(*k_rng, device=device)
    return qpos[:, None] >= kpos[None, :]  # (Tq, Tk) True = may attend


def _start_exchange(send, recv, world_size, rank):
    """Post the send of ``send`` to rank+1 and the receive of ``recv`` from rank-1."""
    nxt, prev = (rank + 1) % world_size, (rank - 1) % world_size
    ops = [dist.P2POp(dist.isend, send, nxt), dist.P2POp(dist.irecv, recv, prev)]
    return dist.batch_isend_irecv(ops)


def _setup(q, causal, layout, scale):
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not dist.is_initialized():
        raise RuntimeError("ring attention needs an initialised process group; start the "
                           "processes with attn_course.distributed.launch")
    G, rank = dist.get_world_size(), dist.get_rank()
    Tl = q.shape[-2]
    if layout == "zigzag" and Tl % 2:
        raise ValueError(
            f"layout='zigzag' needs an even local length T/G (two chunks per process), got "
            f"q.shape={tuple(q.shape)}"
        )
    chunks = layout_chunks(Tl * G, G, layout)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return G, rank, chunks, scale


def _check_group_shapes(q, G: int, rank: int) -> None:
    """Every process must hold a block of the same shape (one small all-gather)."""
    shape = torch.tensor(list(q.shape), dtype=torch.int64, device=q.device)
    shapes = [torch.empty_like(shape) for _ in range(G)]
    dist.all_gather(shapes, shape)
    shapes = [tuple(s.tolist()) for s in shapes]
    if len(set(shapes)) > 1:
        raise ValueError(
            f"every process must hold q, k, v blocks of the same shape (B, H, T/G, D), so T must "
            f"be divisible by G={G} (2G for zigzag); process {rank} has q.shape={tuple(q.shape)}, "
            f"the processes have {shapes}; pad the sequence or use attn_course.distributed.shard"
        )


@torch.no_grad()
def ring_attention_forward(q, k, v, causal: bool = False, layout: str = "contiguous",
                           scale: float | None = None, stats: CommStats | None = None,
                           overlap: bool = True, check_shapes: bool = True):
    """This process's rows of attention over the whole sequence, and their log-sum-exp.

    q, k, v: (B, H, T/G, D), this process's block in ``layout`` order (see :func:`shard`).
    overlap: post the transfer of the next block before computing on this one (False:
    wait for it first, to measure communication alone). check_shapes: first compare the
    block shapes of all processes (one small all-gather) and raise ``ValueError`` on
    every process if they differ, instead of failing inside a transfer.
    Returns ``(out, lse)``: (B, H, T/G, D) and (B, H, T/G).
    """
    _check_local(q, k, v)
    G, rank, chunks, scale = _setup(q, causal, layout, scale)
    if check_shapes:
        _check_group_shapes(q, G, rank)
    out = torch.zeros_like(q)  # (B, H, T/G, D)
    lse = torch.full(q.shape[:-1], float("-inf"), dtype=q.dtype, device=q.device)  # (B, H, T/G)
    kv = torch.stack([k, v]).contiguous()  # (2, B, H, T/G, D): one message per step
    mine = _local_slices(chunks[rank])
    for s in range(G):
        works, recv, waited = [], None, 0.0
        sent = kv.numel() * kv.element_size() if s < G - 1 else 0
        if s < G - 1:
            recv = torch.empty_like(kv)
            t_post = time.perf_counter()
            works = _start_exchange(kv, recv, G, rank)
            if not overlap:  # communication alone: wait for the transfer before computing
                for w in works:
                    w.wait()
                works, waited = [], time.perf_counter() - t_post  # a gloo Work is waited once
        t0 = time.perf_counter()
        for q_sl, q_rng in mine:
            for k_sl, k_rng in _local_slices(chunks[(rank - s) % G]):
                kind = chunk_pair_kind(q_rng, k_rng, causal)
                if kind == "skip":
                    continue
                mask = _chunk_mask(q_rng, k_rng, q.device) if kind == "diagonal" else None
                o, l = attention_with_lse(q[..., q_sl, :], kv[0, ..., k_sl, :], kv[1, ..., k_sl, :],
                                          scale, mask)
                out[..., q_sl, :], lse[..., q_sl] = merge_partials(out[..., q_sl, :], lse[..., q_sl], o, l)
        if stats is not None and q.is_cuda:
            torch.cuda.synchronize(q.device)  # CUDA calls return before their work is done
        t1 = time.perf_counter()
        for w in works:
            w.wait()
        t2 = time.perf_counter()
        if stats is not None:
            stats.record("forward", s, sent, t1 - t0, waited + t2 - t1)
        if recv is not None:
            kv = recv
    return out, lse


@torch.no_grad()
def ring_attention_backward(dout, q, k, v, out, lse, causal: bool = False,
                            layout: str = "contiguous", scale: float | None = None,
                            stats: CommStats | None = None):
    """Gradients ``(dq, dk, dv)`` of this process's blocks, from the saved ``out`` and ``lse``.

    The key-value blocks go around the ring again; the gradient of each block travels
    with it, collects every process's contribution and is back at its owner after G
    exchanges. Per chunk pair, with P = exp(S - lse) recomputed and
    delta = rowsum(dout * out) (FlashAttention-2's backward):
    dV += P^T dout, dS = P * (dout V^T - delta), dQ += dS K * scale, dK += dS^T Q * scale.
    """
    _check_local(q, k, v)
    G, rank, chunks, scale = _setup(q, causal, layout, scale)
    delta = (dout * out).sum(dim=-1)  # (B, H, T/G)
    dq = torch.zeros_like(q)
    kv = torch.stack([k, v]).contiguous()  # (2, B, H, T/G, D)
    mine = _local_slices(chunks[rank])
    dkv_in, dkv_works = None, []  # the gradient block arriving from the previous process
    dkv_sent = None  # the gradient block in flight to the next process
    for s in range(G):
        works, recv = [], None
        if s < G - 1:
            recv = torch.empty_like(kv)
            works = _start_exchange(kv, recv, G, rank)
        t0 = time.perf_counter()
        dkv = torch.zeros_like(kv)  # this process's contribution to the block it holds
        for q_sl, q_rng in mine:
            q_c, do_c = q[..., q_sl, :], dout[..., q_sl, :]  # (B, H, c, D)
            for k_sl, k_rng in _local_slices(chunks[(rank - s) % G]):
                kind = chunk_pair_kind(q_rng, k_rng, causal)
                if kind == "skip":
                    continue
                k_c, v_c = kv[0, ..., k_sl, :], kv[1, ..., k_sl, :]
                scores = (q_c @ k_c.transpose(-1, -2)) * scale  # (B, H, cq, ck)
                if kind == "diagonal":
                    scores = scores.masked_fill(~_chunk_mask(q_rng, k_rng, q.device), float("-inf"))
                l_c = lse[..., q_sl]
                shift = torch.where(torch.isfinite(l_c), l_c, torch.zeros_like(l_c))
                p = torch.exp(scores - shift[..., None])  # (B, H, cq, ck)
                dkv[1, ..., k_sl, :] += p.transpose(-1, -2) @ do_c
                ds = p * (do_c @ v_c.transpose(-1, -2) - delta[..., q_sl, None])  # (B, H, cq, ck)
                dq[..., q_sl, :] += (ds @ k_c) * scale
                dkv[0, ..., k_sl, :] += (ds.transpose(-1, -2) @ q_c) * scale
        t1 = time.perf_counter()
        for w in dkv_works:
            w.wait()
        if dkv_in is not None:
            dkv += dkv_in  # what the earlier processes of the ring added to this block
        for w in works:
            w.wait()
        t2 = time.perf_counter()
        if G == 1:
            dkv_in, sent = dkv, 0
        else:
            dkv_in = torch.empty_like(dkv)
            dkv_works = _start_exchange(dkv, dkv_in, G, rank)  # to the next process, with its block
            dkv_sent = dkv  # keep the buffer alive until its transfer completes
            sent = (kv.numel() * kv.element_size() if works else 0) + dkv.numel() * dkv.element_size()
        if stats is not None:
            stats.record("backward", s, sent, t1 - t0, t2 - t1)
        if recv is not None:
            kv = recv
    for w in dkv_works:
        w.wait()
    dkv_sent = None  # noqa: F841  (the last gradient block has arrived; its buffer may go)
    return dq, dkv_in[0], dkv_in[1]


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, layout, scale, stats):
        out, lse = ring_attention_forward(q, k, v, causal, layout, scale, stats)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.args = (causal, layout, scale, stats)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = ring_attention_backward(dout.contiguous(), q, k, v, out, lse, *ctx.args)
        return dq, dk, dv, None, None, None, None


def ring_attention(q, k, v, causal: bool = False, layout: str = "contiguous",
                   scale: float | None = None, stats: CommStats | None = None):
    """Differentiable ring attention: this process's output block (B, H, T/G, D).

    Call it on every process of the group at once, each with its own block of q, k, v
    (B, H, T/G, D) in ``layout`` order. ``loss.backward()`` runs
    :func:`ring_attention_backward` on every process (they must all call it).
    """
    return _RingAttention.apply(q, k, v, causal, layout, scale, stats)


def shard(x: torch.Tensor, rank: int, world_size: int, layout: str = "contiguous", dim: int = -2):
    """Process ``rank``'s block of ``x`` (its tokens along ``dim``, in ``layout`` order)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch tensor, got {type(x).__name__}")
    chunks = layout_chunks(x.shape[dim], world_size, layout)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank!r}")
    return torch.cat([x.narrow(dim, a, b - a) for a, b in chunks[rank]], dim=dim)


def unshard(blocks, layout: str = "contiguous", dim: int = -2) -> torch.Tensor:
    """The inverse of :func:`shard`: the whole tensor from every process's block, in rank order."""
    blocks = list(blocks)
    G = len(blocks)
    T = sum(b.shape[dim] for b in blocks)
    chunks = layout_chunks(T, G, layout)
    pieces = []
    for r, block in enumerate(blocks):
        start = 0
        for a, b in chunks[r]:
            pieces.append((a, block.narrow(dim, start, b - a)))
            start += b - a
    return torch.cat([p for _, p in sorted(pieces, key=lambda t: t[0])], dim=dim)
