"""Attention across processes (lecture 14): ring attention over ``torch.distributed``.

- ``schedule``: which block each process holds at each step, the token layouts
  (contiguous and zigzag) and the causal work per step; pure Python, no processes;
- ``ring``: the partial-result merge, ring attention's forward and backward passes over
  a process group (point-to-point transfers around the ring), ``shard``/``unshard``;
- ``launcher``: ``launch(fn, world_size, args)`` starts local processes in one group
  (gloo on CPUs, NCCL on GPUs), with a timeout, and always cleans them up;
- ``workers``: the functions those processes run for the lecture, tests and benchmark.

The paged KV cache of the same lecture is :mod:`attn_course.paged_kv`.
"""

from attn_course.distributed.launcher import LaunchError, current_device, free_port, launch
from attn_course.distributed.ring import (
    CommStats,
    attention_with_lse,
    merge_partials,
    ring_attention,
    ring_attention_backward,
    ring_attention_forward,
    shard,
    unshard,
)
from attn_course.distributed.schedule import (
    LAYOUTS,
    chunk_pair_kind,
    layout_chunks,
    layout_positions,
    ring_schedule,
    ring_source,
    work_per_step,
)

__all__ = [
    "LAYOUTS",
    "CommStats",
    "LaunchError",
    "attention_with_lse",
    "chunk_pair_kind",
    "current_device",
    "free_port",
    "launch",
    "layout_chunks",
    "layout_positions",
    "merge_partials",
    "ring_attention",
    "ring_attention_backward",
    "ring_attention_forward",
    "ring_schedule",
    "ring_source",
    "shard",
    "unshard",
    "work_per_step",
]
