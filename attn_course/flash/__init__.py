"""FlashAttention (lecture 09): exact attention without the T x S matrix.

- ``online_softmax``: the one-pass softmax normaliser (running max m and sum l);
- ``tiled``: the tiled forward pass and the backward pass by recomputation, in numpy;
- ``io_model``: HBM reads and writes of standard and tiled attention, in both loop
  orders (FlashAttention-2: queries outside; FlashAttention-1: keys outside);
- ``decoding``: Flash-Decoding, one query against a long cache split across key blocks
  and merged with the log-sum-exp;
- ``triton/``: the FlashAttention-2 forward and backward in Triton, autotuned and
  differentiable (``attn_course.flash.triton.flash_attention``); ``triton/mode.py``
  picks compiled (GPU) or interpreted (CPU) before importing triton. Not imported here:
  it needs ``triton``, and the mode is fixed at import time;
- ``api``: ``attention(q, k, v, causal, scale, impl="auto" | "triton" | "sdpa" | "reference",
  return_lse=False)``, one contract for every implementation.
"""

from attn_course.flash.api import IMPLS, attention, resolve_impl, triton_available
from attn_course.flash.decoding import (
    decoding_parallelism,
    flash_decode,
    merge_partials,
    split_partials,
)
from attn_course.flash.io_model import (
    flash_block_sizes,
    io_bound,
    standard_io,
    tiled_io,
    tiled_io_keys_outer,
    tiled_io_steps,
)
from attn_course.flash.online_softmax import (
    online_logsumexp,
    online_normalizer,
    online_softmax,
    online_update,
)
from attn_course.flash.tiled import flash_backward, flash_forward, flash_forward_keys_outer

__all__ = [
    "IMPLS",
    "attention",
    "decoding_parallelism",
    "flash_backward",
    "flash_block_sizes",
    "flash_decode",
    "flash_forward",
    "flash_forward_keys_outer",
    "io_bound",
    "merge_partials",
    "online_logsumexp",
    "online_normalizer",
    "online_softmax",
    "online_update",
    "resolve_impl",
    "split_partials",
    "standard_io",
    "tiled_io",
    "tiled_io_keys_outer",
    "tiled_io_steps",
    "triton_available",
]
