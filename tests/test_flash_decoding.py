"""Flash-Decoding and the keys-outer (FlashAttention-1) loop order against float64 loops."""

import math

import numpy as np
import pytest

from attn_course.flash import (
    decoding_parallelism,
    flash_decode,
    flash_forward,
    flash_forward_keys_outer,
    merge_partials,
    split_partials,
    tiled_io,
    tiled_io_keys_outer,
)
from attn_course.testing import assert_close
from tests.reference import attention_loop


def lse_loop(q, k, causal=False):
    """float64 log-sum-exp of each row of scaled scores, by loops; q (T, D), k (S, D)."""
    T, D = q.shape
    out = np.zeros(T)
    for i in range(T):
        row = [math.fsum(float(a) * float(b) for a, b in zip(q[i], k[j], strict=True))
               / math.sqrt(D) for j in range(k.shape[0]) if not causal or j <= i]
        m = max(row)
        out[i] = m + math.log(math.fsum(math.exp(x - m) for x in row))
    return out


@pytest.mark.parametrize(("S", "num_splits"), [(1, 1), (37, 1), (37, 4), (37, 37), (200, 7)])
def test_flash_decode_equals_attention(rng, S, num_splits):
    q = rng.normal(size=(3, 1, 16))  # (H, T=1, D) one new token per head
    k, v = rng.normal(size=(3, S, 16)), rng.normal(size=(3, S, 5))  # the cache
    out, lse = flash_decode(q, k, v, num_splits, block_k=16)
    out_ref, _ = attention_loop(q, k, v)
    assert_close(out, out_ref, "out")
    for h in range(3):
        assert_close(lse[h], lse_loop(q[h], k[h]), f"lse head {h}")


def test_the_merge_weights_are_each_chunks_share_of_the_softmax_mass(rng):
    q, k, v = rng.normal(size=(1, 8)), rng.normal(size=(10, 8)), rng.normal(size=(10, 2))
    outs, lses = split_partials(q, k, v, 2)
    assert outs.shape == (2, 1, 2)
    assert lses.shape == (2, 1)
    scores = (q @ k.T)[0] / math.sqrt(8)  # (S,)
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    share = math.exp(lses[0, 0] - np.logaddexp(lses[0, 0], lses[1, 0]))
    assert abs(share - probs[:5].sum()) < 1e-12  # chunk 0 holds keys 0..4


def test_merge_gives_zero_weight_to_an_empty_chunk():
    outs = np.array([[[1.0, 2.0]], [[7.0, 7.0]]])  # (G=2, T=1, Dv=2)
    out, lse = merge_partials(outs, np.array([[0.5], [-np.inf]]))
    assert_close(out, np.array([[1.0, 2.0]]), "out")
    assert_close(lse, np.array([0.5]), "lse")
    out, lse = merge_partials(outs, np.full((2, 1), -np.inf))
    assert np.all(out == 0)
    assert np.all(lse == -np.inf)


def test_decoding_errors_name_the_argument(rng):
    q, k = rng.normal(size=(1, 4)), rng.normal(size=(3, 4))
    with pytest.raises(ValueError, match="num_splits must be at most S = 3"):
        flash_decode(q, k, k, 4)
    with pytest.raises(ValueError, match="num_splits must be a positive integer"):
        flash_decode(q, k, k, 0)
    with pytest.raises(ValueError, match="lse_parts"):
        merge_partials(np.zeros((2, 1, 3)), np.zeros((2, 2)))


def test_parallelism_count():
    one = decoding_parallelism(B=1, H=8, S=32768, num_splits=1, processors=132)
    assert one == {"programs": 8, "busy_fraction": 8 / 132, "tile_steps": 512,
                   "merge_reads": 0}
    split = decoding_parallelism(B=1, H=8, S=32768, num_splits=16, processors=132)
    assert split["programs"] == 128
    assert split["tile_steps"] == 32  # one wave of 2048 keys in tiles of 64
    assert decoding_parallelism(1, 8, 32768, 32, 132)["tile_steps"] == 2 * 16  # two waves


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize(("T", "block_q", "block_k"), [(1, 1, 1), (23, 8, 5), (40, 16, 16)])
def test_keys_outer_equals_attention_and_its_io_model(rng, causal, T, block_q, block_k):
    q, k, v = (rng.normal(size=(T, 6)) for _ in range(3))  # one head, T = S, D = Dv
    io = {}
    out, lse = flash_forward_keys_outer(q, k, v, causal=causal, block_q=block_q,
                                        block_k=block_k, io=io)
    keep = np.tril(np.ones((T, T), bool)) if causal else None
    assert_close(out, attention_loop(q, k, v, keep=keep)[0], "out")
    assert_close(lse, lse_loop(q, k, causal), "lse")
    assert (io["reads"], io["writes"]) == tiled_io_keys_outer(T, 6, block_q, block_k, causal)


def test_keys_outer_io_by_hand():
    # T = 8, D = 2, Br = 4, Bc = 2: 4 key blocks, each visiting both query blocks.
    # init writes O, l, m: 16 + 8 + 8; per key block: K_j, V_j (8 reads) and all 8 rows'
    # Q, O, l, m read (8 * 6) and O, l, m written (8 * 4).
    assert tiled_io_keys_outer(8, 2, 4, 2) == (4 * (8 + 48), 32 + 4 * 32)


def test_keys_outer_writes_grow_with_the_key_blocks_queries_outer_do_not():
    T, D = 4096, 64
    w1 = [tiled_io_keys_outer(T, D, 64, bk)[1] for bk in (256, 128, 64)]
    w2 = [tiled_io(T, D, bq, 64)[1] for bq in (256, 128, 64)]
    assert w1[0] < w1[1] < w1[2]
    assert w2[0] == w2[1] == w2[2] == T * D + T


def test_keys_outer_batched_matches_queries_outer(rng):
    q, k = rng.normal(size=(2, 3, 30, 8)), rng.normal(size=(2, 3, 19, 8))
    v = rng.normal(size=(2, 3, 19, 4))
    for causal in (False, True):
        a = flash_forward_keys_outer(q, k, v, causal=causal, block_q=7, block_k=6)
        b = flash_forward(q, k, v, causal=causal, block_q=7, block_k=6)
        for x, y, name in zip(a, b, ("out", "lse"), strict=True):
            assert_close(x, y, name)
