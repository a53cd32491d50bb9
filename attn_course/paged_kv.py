"""A paged KV cache: keys and values in fixed-size pages, one block table per sequence (lecture 14).

Kwon et al., "Efficient Memory Management for Large Language Model Serving with
PagedAttention" (SOSP 2023), the cache of vLLM. A server that preallocates, for every
sequence of a batch, a contiguous cache of the longest length it may reach
(``attn_course.kv_cache.kv_cache_bytes(num_layers, B, H, max_len, D)``) wastes the
memory of every position a sequence never reaches. Instead:

- a :class:`PagePool` holds ``num_pages`` pages; a page stores the keys and values of
  ``page_size`` consecutive positions of one sequence, for every layer and head:
  ``k``, ``v`` of shape (num_layers, num_pages, H, page_size, D);
- each sequence has a :class:`BlockTable`: the list of its pages in order, so position
  p lives in page ``pages[p // page_size]`` at offset ``p % page_size``; a new page is
  taken from the pool's free list only when the last one is full, and a finished
  sequence gives its pages back;
- attention reads the keys and values page by page (:func:`paged_attention`): each page
  gives a partial result (out, lse), merged exactly as the blocks of ring attention and
  the tiles of FlashAttention (:func:`attn_course.distributed.merge_partials`). It equals
  attention over a contiguous cache (tested), and at most ``page_size - 1`` positions
  per sequence are allocated but unused.

:func:`generate_paged` runs the course's :class:`~attn_course.transformer.TinyLM` (its own
modules and weights) over a batch of prompts of different lengths that share one pool,
and gives the same tokens as :func:`attn_course.transformer.generate` with the
contiguous cache of :mod:`attn_course.kv_cache`, one sequence at a time (tested).

Caveats: pages are torch tensors indexed from Python, one sequence at a time (vLLM's
kernel reads the block table on the GPU, for the whole batch at once); no
copy-on-write sharing of pages between sequences (beam search, shared prompts), no
eviction or swapping when the pool runs out (it raises); greedy decoding only.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import torch

from attn_course.distributed.ring import attention_with_lse, merge_partials
from attn_course.multihead import merge_heads, split_heads
from attn_course.positional import apply_rope
from attn_course.transformer import TinyLM

__all__ = ["BlockTable", "PagePool", "cache_memory", "generate_paged", "paged_attention",
           "paged_forward"]


def _require_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@dataclass
class BlockTable:
    """One sequence's pages, in order, and how many positions it holds."""

    pages: list = field(default_factory=list)
    length: int = 0


class PagePool:
    """``num_pages`` pages of ``page_size`` positions, for every layer: k, v (L, N, H, page_size, D)."""

    def __init__(self, num_pages: int, page_size: int, num_layers: int, num_heads: int,
                 head_dim: int, dtype=torch.float32, device=None):
        self.num_pages = _require_int("num_pages", num_pages)
        self.page_size = _require_int("page_size", page_size)
        shape = (_require_int("num_layers", num_layers), self.num_pages,
                 _require_int("num_heads", num_heads), self.page_size, _require_int("head_dim", head_dim))
        self.k = torch.zeros(shape, dtype=dtype, device=device)  # (L, N, H, page_size, D)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.free = list(range(self.num_pages - 1, -1, -1))  # a stack: page 0 is taken first

    @classmethod
    def for_model(cls, model: TinyLM, num_pages: int, page_size: int) -> PagePool:
        """A pool with the sizes (layers, heads, head dim, dtype) of ``model``."""
        attn = model.blocks[0].attn
        w = model.head.weight
        return cls(num_pages, page_size, len(model.blocks), attn.num_heads, attn.head_dim,
                   dtype=w.dtype, device=w.device)

    @property
    def pages_in_use(self) -> int:
        return self.num_pages - len(self.free)

    @property
    def page_bytes(self) -> int:
        """Bytes of one page: its keys and values in every layer."""
        per_layer = self.k[0, 0].numel() * self.k.element_size()
        return 2 * self.k.shape[0] * per_layer

    def reserve(self, table: BlockTable, n: int) -> None:
        """Make room for ``n`` more positions of ``table``'s sequence (new pages as needed)."""
        needed = math.ceil((table.length + n) / self.page_size) - len(table.pages)
        if needed > len(self.free):
            raise RuntimeError(
                f"the pool is out of pages: {needed} more needed for {n} new positions, "
                f"{len(self.free)} of {self.num_pages} pages of {self.page_size} positions free"
            )
        for _ in range(max(0, needed)):
            table.pages.append(self.free.pop())

    def release(self, table: BlockTable) -> None:
        """Give a finished sequence's pages back to the pool."""
        self.free.extend(reversed(table.pages))
        table.pages, table.length = [], 0

    def write(self, layer: int, table: BlockTable, start: int, k, v) -> None:
        """Store k, v (H, T, D) at positions ``start .. start + T - 1`` of the sequence."""
        if k.shape != v.shape or k.ndim != 3 or k.shape[0] != self.k.shape[2] or k.shape[2] != self.k.shape[4]:
            raise ValueError(
                f"k and v must have shape (H, T, D) = ({self.k.shape[2]}, T, {self.k.shape[4]}), "
                f"got k {tuple(k.shape)} and v {tuple(v.shape)}"
            )
        for t in range(k.shape[1]):
            page, slot = divmod(start + t, self.page_size)
            if page >= len(table.pages):
                raise ValueError(f"position {start + t} is past the {len(table.pages)} pages "
                                 f"reserved for this sequence; call reserve() first")
            self.k[layer, table.pages[page], :, slot] = k[:, t]  # (H, D)
            self.v[layer, table.pages[page], :, slot] = v[:, t]

    def gather(self, layer: int, table: BlockTable, length: int | None = None):
        """The sequence's first ``length`` keys and values as contiguous (H, S, D) tensors."""
        S = table.length if length is None else length
        n = math.ceil(S / self.page_size)
        idx = torch.tensor(table.pages[:n], dtype=torch.long, device=self.k.device)
        k = self.k[layer, idx].transpose(0, 1).flatten(1, 2)[:, :S]  # (H, n * page_size, D) -> (H, S, D)
        v = self.v[layer, idx].transpose(0, 1).flatten(1, 2)[:, :S]
        return k, v


def paged_attention(q, pool: PagePool, layer: int, table: BlockTable, length: int,
                    scale: float | None = None):
    """Causal attention of q (H, T, D), the last T of ``length`` positions, over the pages.

    Reads one page of keys and values at a time and merges the partial results with
    their log-sum-exp; never builds the contiguous cache. Returns (H, T, D).
    """
    H, T, D = q.shape
    if not 1 <= T <= length:
        raise ValueError(f"q must hold 1..length={length} query positions, got q.shape={tuple(q.shape)}")
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    qpos = torch.arange(length - T, length, device=q.device)  # (T,) bottom-right alignment
    out = torch.zeros_like(q)
    lse = torch.full((H, T), float("-inf"), dtype=q.dtype, device=q.device)
    for i in range(math.ceil(length / pool.page_size)):
        n = min(pool.page_size, length - i * pool.page_size)  # positions used in this page
        k = pool.k[layer, table.pages[i], :, :n]  # (H, n, D)
        v = pool.v[layer, table.pages[i], :, :n]
        kpos = torch.arange(i * pool.page_size, i * pool.page_size + n, device=q.device)
        mask = qpos[:, None] >= kpos[None, :]  # (T, n)
        o, l = attention_with_lse(q, k, v, scale, mask)
        out, lse = merge_partials(out, lse, o, l)
    return out


@torch.no_grad()
def paged_forward(model: TinyLM, idx, pool: PagePool, table: BlockTable):
    """Run ``model`` on new tokens idx (1, T) of one sequence whose cache is in ``pool``.

    The same computation as ``TinyLM.forward`` with a cache, with the keys and values
    written to and read from pages. Returns logits (1, T, V).
    """
    if not isinstance(idx, torch.Tensor) or idx.ndim != 2 or idx.shape[0] != 1:
        raise ValueError(f"idx must be a tensor of token ids of shape (1, T), got "
                         f"{tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__}")
    past, T = table.length, idx.shape[1]
    if past + T > model.max_len:
        raise ValueError(f"positions {past}..{past + T - 1} exceed max_len={model.max_len}")
    pool.reserve(table, T)
    x = model.tok_emb(idx)  # (1, T, E)
    if model.positional == "learned":
        x = x + model.pos_emb(torch.arange(past, past + T, device=idx.device))
    elif model.positional == "sinusoidal":
        x = x + model.pos_table[past:past + T]
    for i, block in enumerate(model.blocks):
        mha = block.attn
        h = block.ln1(x)
        q = split_heads(mha.q_proj(h), mha.num_heads)  # (1, H, T, D)
        k = split_heads(mha.k_proj(h), mha.num_heads)
        v = split_heads(mha.v_proj(h), mha.num_heads)
        if block.rope_base is not None:
            positions = range(past, past + T)
            q, k = apply_rope(q, positions, block.rope_base), apply_rope(k, positions, block.rope_base)
        pool.write(i, table, past, k[0], v[0])
        z = paged_attention(q[0], pool, i, table, past + T)  # (H, T, D)
        x = x + mha.out_proj(merge_heads(z[None]))  # (1, T, E)
        x = x + block.mlp(block.ln2(x))
    table.length = past + T
    return model.head(model.ln_f(x))  # (1, T, V)


@torch.no_grad()
def generate_paged(model: TinyLM, prompts, max_new_tokens, pool: PagePool):
    """Greedy generation for prompts of different lengths sharing one page pool.

    prompts: list of 1-D token tensors (or lists); max_new_tokens: an int, or one per
    prompt. Each step feeds every unfinished sequence its newest token. Returns
    ``(tokens, logits, tables)``: per sequence, its tokens (T0 + N,), the logits (N, V)
    each new token was chosen from, and its :class:`BlockTable` (still holding its pages).
    """
    prompts = [torch.as_tensor(p, dtype=torch.long).reshape(-1) for p in prompts]
    if not prompts or any(p.numel() == 0 for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty token sequences")
    if isinstance(max_new_tokens, numbers.Integral):
        max_new_tokens = [max_new_tokens] * len(prompts)
    if len(max_new_tokens) != len(prompts):
        raise ValueError(f"max_new_tokens must be an int or one per prompt ({len(prompts)}), "
                         f"got {len(max_new_tokens)} values")
    for n in max_new_tokens:
        _require_int("max_new_tokens", n, minimum=0)
    tables = [BlockTable() for _ in prompts]
    tokens = [p.clone() for p in prompts]
    logits = [[] for _ in prompts]
    new = [p[None] for p in prompts]  # (1, T0): the prompt is the first input ("prefill")
    for step in range(max(max_new_tokens)):
        for b in range(len(prompts)):
            if step >= max_new_tokens[b]:
                continue
            last = paged_forward(model, new[b], pool, tables[b])[0, -1]  # (V,)
            logits[b].append(last)
            nxt = last.argmax().reshape(1)
            tokens[b] = torch.cat([tokens[b], nxt])
            new[b] = nxt[None]  # (1, 1)
    V = model.vocab_size
    return tokens, [torch.stack(lg) if lg else torch.empty(0, V) for lg in logits], tables


def cache_memory(lengths, max_len: int, page_size: int, bytes_per_position: int) -> dict:
    """Bytes of the KV cache of sequences of ``lengths``, three ways.

    ``used``: the positions they hold; ``contiguous``: every sequence preallocated to
    ``max_len``; ``paged``: whole pages of ``page_size``. ``bytes_per_position`` is the
    keys and values of one position in every layer, ``2 * num_layers * H * D * itemsize``.
    """
    lengths = [_require_int("lengths[i]", n, minimum=0) for n in lengths]
    if max(lengths, default=0) > max_len:
        raise ValueError(f"a length {max(lengths)} exceeds max_len={max_len}")
    used = sum(lengths)
    pages = sum(math.ceil(n / page_size) for n in lengths)
    return dict(used=used * bytes_per_position,
                contiguous=len(lengths) * max_len * bytes_per_position,
                paged=pages * page_size * bytes_per_position, pages=pages)
