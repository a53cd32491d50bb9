"""Functions that run inside the processes started by :func:`~attn_course.distributed.launch`.

They live in a module (not in a notebook) because every new process imports its function
by name. Each takes ``(rank, world_size, ...)``, runs on every process of the group at
once, and returns plain data (tensors, numbers, lists, dicts) to the caller.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.distributed as dist

from attn_course.distributed.launcher import current_device
from attn_course.distributed.ring import CommStats, ring_attention, ring_attention_forward, shard

__all__ = ["fail_worker", "hang_worker", "ring_benchmark_worker", "ring_check_worker",
           "sum_ranks_worker"]


def sum_ranks_worker(rank: int, world_size: int) -> dict:
    """The smallest collective: every process adds up the ranks; returns what it got."""
    x = torch.tensor([float(rank)], device=current_device())
    dist.all_reduce(x)
    return dict(rank=rank, backend=dist.get_backend(), total=float(x.item()))


def ring_check_worker(rank: int, world_size: int, q, k, v, dout, cases) -> list[dict]:
    """Ring attention on this process's blocks of the whole q, k, v (B, H, T, D), per case.

    cases: list of dicts ``causal``, ``layout``, ``backward`` (and ``uneven``: process 1
    passes one token fewer, and the error each process raised is returned). Returns, per
    case, this process's output block, its lse, the gradients of its blocks (when
    ``backward``) and the communication rows of :class:`CommStats`.
    """
    device = current_device()
    results = []
    for case in cases:
        causal, layout = case["causal"], case["layout"]
        if case.get("uneven"):  # process 1 passes one token fewer: every process must refuse
            q_l = shard(q, rank, world_size, layout).to(device)
            q_l = q_l[..., :-1, :] if rank == 1 else q_l
            try:
                ring_attention_forward(q_l, q_l, q_l, causal, layout)
                results.append(dict(case, error=None))
            except ValueError as e:
                results.append(dict(case, error=str(e)))
            continue
        q_l, k_l, v_l = (shard(x, rank, world_size, layout).to(device).requires_grad_(case["backward"])
                         for x in (q, k, v))
        stats = CommStats()
        out = ring_attention(q_l, k_l, v_l, causal=causal, layout=layout, stats=stats)
        _, lse = ring_attention_forward(q_l.detach(), k_l.detach(), v_l.detach(), causal, layout)
        row = dict(case, out=out.detach().cpu(), lse=lse.cpu())
        if case["backward"]:
            out.backward(shard(dout, rank, world_size, layout).to(device))
            row.update(dq=q_l.grad.cpu(), dk=k_l.grad.cpu(), dv=v_l.grad.cpu())
        row["stats"] = stats.rows
        results.append(row)
    return results


def fail_worker(rank: int, world_size: int, bad_rank: int = 1):
    """Process ``bad_rank`` raises; the others wait at a barrier it never reaches."""
    if rank == bad_rank:
        raise ValueError(f"process {rank} failed on purpose")
    dist.barrier()
    return rank


def hang_worker(rank: int, world_size: int, seconds: float = 600.0):
    """The last process sleeps for ``seconds`` (past any sensible timeout); the others return."""
    if rank == world_size - 1:
        time.sleep(seconds)
    return rank


def ring_benchmark_worker(rank: int, world_size: int, configs, repeats: int = 5,
                          seed: int = 0, memory: bool = True) -> list[dict]:
    """Time and measure ring attention's forward pass on this process, once per config.

    configs: list of dicts with B, H, T, D, causal, layout. Every process builds the same
    random q, k, v (B, H, T, D) from ``seed`` and keeps its block. Per config, returns
    the median, minimum and maximum over ``repeats`` runs (seconds) of: ``total_s``, the
    whole ring with each transfer overlapped with the computation; ``compute_s``, the
    computation summed over the steps; ``comm_s``, the transfers summed over the steps,
    measured alone (each waited for before computing, ``overlap=False``); also the bytes
    sent at each step and the peak bytes of tensors allocated during one ring
    (``attn_course.cost.peak_bytes_torch`` on the CPU, ``torch.cuda.max_memory_allocated``
    on a GPU), and the bytes of this process's q block. The shape check of
    ``ring_attention_forward`` is off here: what is timed is the ring alone.
    """
    from attn_course.cost import peak_bytes_torch

    rows = []
    for cfg in configs:
        B, H, T, D = cfg["B"], cfg["H"], cfg["T"], cfg["D"]
        causal, layout = cfg["causal"], cfg["layout"]
        gen = torch.Generator().manual_seed(seed)
        q, k, v = (torch.randn(B, H, T, D, generator=gen) for _ in range(3))
        device = current_device()
        q, k, v = (shard(x, rank, world_size, layout).contiguous().to(device) for x in (q, k, v))

        def run(overlap: bool, stats=None, q=q, k=k, v=v, causal=causal, layout=layout):
            result = ring_attention_forward(q, k, v, causal, layout, stats=stats, overlap=overlap,
                                            check_shapes=False)
            if q.is_cuda:
                torch.cuda.synchronize(q.device)
            return result

        run(True)  # warm-up
        totals, compute, comm, sent = [], [], [], []
        for _ in range(repeats):
            dist.barrier()
            t0 = time.perf_counter()
            run(True)
            totals.append(time.perf_counter() - t0)
            dist.barrier()
            stats = CommStats()
            run(False, stats)
            compute.append(sum(r["compute_s"] for r in stats.rows))
            comm.append(sum(r["wait_s"] for r in stats.rows))
            sent = [r["bytes_sent"] for r in stats.rows]
        dist.barrier()
        if memory and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            run(True)
            peak = torch.cuda.max_memory_allocated(device) - base
        else:
            peak = peak_bytes_torch(lambda run=run: run(True)) if memory else None
        dist.barrier()

        def med(xs):
            return statistics.median(xs), min(xs), max(xs)

        rows.append(dict(cfg, rank=rank, world_size=world_size, repeats=repeats,
                         total_s=med(totals), compute_s=med(compute), comm_s=med(comm),
                         bytes_per_step=sent, peak_bytes=peak,
                         block_bytes=q.numel() * q.element_size()))
    return rows
