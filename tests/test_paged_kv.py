"""The paged KV cache against a contiguous cache: attention, generation, memory."""

import math

import pytest
import torch

from attn_course.attention import causal_mask, sdpa_torch
from attn_course.kv_cache import kv_cache_bytes
from attn_course.paged_kv import BlockTable, PagePool, cache_memory, generate_paged, paged_attention
from attn_course.testing import assert_close
from attn_course.transformer import POSITIONAL, TinyLM, generate


def _filled_pool(H, S, D, page_size, num_pages, seed=0):
    g = torch.Generator().manual_seed(seed)
    k, v = (torch.randn(H, S, D, generator=g, dtype=torch.float64) for _ in range(2))
    pool = PagePool(num_pages, page_size, num_layers=1, num_heads=H, head_dim=D, dtype=torch.float64)
    other = BlockTable()  # another sequence interleaves its pages with ours
    table = BlockTable()
    for start in range(0, S, 5):  # written in uneven chunks, as prefill + decode would
        n = min(5, S - start)
        pool.reserve(table, n)
        pool.write(0, table, start, k[:, start:start + n], v[:, start:start + n])
        table.length = start + n
        pool.reserve(other, 2)
        other.length += 2
    return pool, table, k, v


@pytest.mark.parametrize("page_size", [1, 3, 4, 16, 64])
@pytest.mark.parametrize("T", [1, 4, 23])
def test_paged_attention_equals_contiguous_attention(page_size, T):
    H, S, D = 3, 23, 8
    pool, table, k, v = _filled_pool(H, S, D, page_size, num_pages=200)
    assert len(table.pages) == math.ceil(S / page_size)
    gk, gv = pool.gather(0, table)
    assert torch.equal(gk, k)
    assert torch.equal(gv, v)
    q = torch.randn(H, T, D, dtype=torch.float64)
    mask = torch.from_numpy(causal_mask(T, S, offset=S - T))  # the last T of S positions
    assert_close(paged_attention(q, pool, 0, table, S), sdpa_torch(q, k, v, mask=mask),
                 f"paged attention, page_size={page_size}, T={T}")


@pytest.mark.parametrize("positional", POSITIONAL)
def test_generation_with_pages_equals_the_contiguous_cache(positional):
    torch.manual_seed(1)
    model = TinyLM(17, 48, embed_dim=32, num_heads=4, num_layers=2, positional=positional).double().eval()
    prompts = [torch.randint(0, 17, (n,)) for n in (2, 9, 5)]
    new = [12, 3, 20]
    pool = PagePool.for_model(model, num_pages=40, page_size=4)
    tokens, logits, tables = generate_paged(model, prompts, new, pool)
    for b, (p, n) in enumerate(zip(prompts, new, strict=True)):
        ref_tokens, ref_logits = generate(model, p[None], n, use_cache=True)
        assert torch.equal(tokens[b], ref_tokens[0])
        assert_close(logits[b], ref_logits[0], f"{positional} logits of sequence {b}")
        assert tables[b].length == len(p) + n - 1  # the last token is never fed back
    assert pool.pages_in_use == sum(len(t.pages) for t in tables)
    assert len({p for t in tables for p in t.pages}) == pool.pages_in_use  # no page shared


def test_float32_generation_matches_too():
    torch.manual_seed(2)
    model = TinyLM(11, 32, embed_dim=16, num_heads=2, num_layers=1).eval()
    pool = PagePool.for_model(model, num_pages=8, page_size=8)
    tokens, logits, _ = generate_paged(model, [[1, 2, 3]], 10, pool)
    ref_tokens, ref_logits = generate(model, torch.tensor([[1, 2, 3]]), 10)
    assert torch.equal(tokens[0], ref_tokens[0])
    assert_close(logits[0], ref_logits[0], "float32 logits")


def test_pages_are_given_back_and_reused_and_running_out_is_an_error():
    pool = PagePool(num_pages=3, page_size=4, num_layers=1, num_heads=1, head_dim=2)
    a, b = BlockTable(), BlockTable()
    pool.reserve(a, 9)  # 3 pages
    assert a.pages == [0, 1, 2]
    with pytest.raises(RuntimeError, match="out of pages: 1 more needed for 1 new positions, 0 of 3"):
        pool.reserve(b, 1)
    pool.release(a)
    assert pool.pages_in_use == 0
    assert a.pages == []
    pool.reserve(b, 1)
    assert b.pages == [0]
    with pytest.raises(ValueError, match=r"k and v must have shape \(H, T, D\) = \(1, T, 2\)"):
        pool.write(0, b, 0, torch.zeros(2, 1, 2), torch.zeros(2, 1, 2))
    with pytest.raises(ValueError, match="position 4 is past the 1 pages"):
        pool.write(0, b, 4, torch.zeros(1, 1, 2), torch.zeros(1, 1, 2))
    with pytest.raises(ValueError, match="page_size must be an integer >= 1, got 0"):
        PagePool(3, 0, 1, 1, 2)


def test_bad_generation_arguments():
    model = TinyLM(5, 8, embed_dim=8, num_heads=2, num_layers=1)
    pool = PagePool.for_model(model, 4, 4)
    with pytest.raises(ValueError, match=r"one per prompt \(2\), got 3"):
        generate_paged(model, [[1], [2]], [1, 2, 3], pool)
    with pytest.raises(ValueError, match="non-empty"):
        generate_paged(model, [[]], 1, pool)
    with pytest.raises(ValueError, match="exceed max_len=8"):
        generate_paged(model, [[1] * 8], 2, pool)


def test_memory_of_contiguous_and_paged_caches():
    L, H, D = 2, 4, 8
    per_position = kv_cache_bytes(L, 1, H, 1, D)  # keys and values of one position, every layer
    mem = cache_memory([1, 16, 17, 100], max_len=128, page_size=16, bytes_per_position=per_position)
    assert mem["used"] == 134 * per_position
    assert mem["contiguous"] == kv_cache_bytes(L, 4, H, 128, D)
    assert mem["pages"] == 1 + 1 + 2 + 7
    assert mem["paged"] == 11 * 16 * per_position
    assert mem["paged"] - mem["used"] < 4 * 16 * per_position  # < one page per sequence wasted
    pool = PagePool(11, 16, L, H, D)
    assert pool.page_bytes == 16 * per_position
    assert pool.k.nbytes + pool.v.nbytes == mem["paged"]
    with pytest.raises(ValueError, match="exceeds max_len=128"):
        cache_memory([129], 128, 16, per_position)
