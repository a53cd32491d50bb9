import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attn_course.flash.io_model import tiled_io_steps
from attn_course.flash.tiled import flash_backward, flash_forward
from attn_course.testing import assert_close

# (leading dims, T, S, D, Dv, block_q, block_k): non-powers of two, T != S, blocks that
# do not divide the lengths, blocks of 1 and blocks longer than the sequence.
CASES = [
    ((), 1, 1, 4, 4, 1, 1),
    ((), 7, 7, 3, 5, 2, 3),
    ((2,), 17, 17, 8, 8, 4, 5),
    ((2, 3), 13, 29, 16, 6, 8, 7),
    ((1, 2), 33, 12, 8, 8, 64, 64),
    ((3,), 40, 40, 4, 4, 16, 1),
]


def reference(q, k, v, causal, scale=None):
    """PyTorch's SDPA and an explicit log-sum-exp, in float64 with autograd."""
    q, k, v = (torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    s = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if causal:
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        s = s.masked_fill(~keep, float("-inf"))
    return q, k, v, out, torch.logsumexp(s, dim=-1)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_forward_and_backward_match_torch_float64(rng, case, causal):
    lead, T, S, D, Dv, bq, bk = case
    q, k, v = (rng.standard_normal((*lead, n, d)) for n, d in ((T, D), (S, D), (S, Dv)))
    out, lse = flash_forward(q, k, v, causal=causal, block_q=bq, block_k=bk)
    tq, tk, tv, t_out, t_lse = reference(q, k, v, causal)
    assert_close(out, t_out.detach().numpy(), "out")
    assert_close(lse, t_lse.detach().numpy(), "lse")
    dout = rng.standard_normal(out.shape)
    t_out.backward(torch.from_numpy(dout))
    grads = flash_backward(q, k, v, out, lse, dout, causal=causal, block_q=bk, block_k=bq)
    for name, g, t in zip(("dq", "dk", "dv"), grads, (tq, tk, tv), strict=True):
        assert_close(g, t.grad.numpy(), name)


def test_custom_scale_and_float32_and_float16(rng):
    q, k, v = (rng.standard_normal((2, 20, 8)) for _ in range(3))
    _, _, _, t_out, t_lse = reference(q, k, v, causal=True, scale=0.3)
    out32, lse32 = flash_forward(*(x.astype(np.float32) for x in (q, k, v)), causal=True,
                                 scale=0.3, block_q=6, block_k=4)
    assert out32.dtype == np.float32
    assert_close(out32, t_out.detach().numpy(), "float32 out")
    assert_close(lse32, t_lse.detach().numpy(), "float32 lse")
    out16, _ = flash_forward(*(x.astype(np.float16) for x in (q, k, v)), scale=0.3)
    assert out16.dtype == np.float16
    expected = F.scaled_dot_product_attention(*(torch.tensor(x.astype(np.float16)).double()
                                                for x in (q, k, v)), scale=0.3)
    assert_close(out16, expected.numpy(), "float16 out")


def test_leading_dimensions_broadcast(rng):
    q = rng.standard_normal((2, 3, 5, 4))
    k, v = rng.standard_normal((1, 3, 6, 4)), rng.standard_normal((2, 1, 6, 4))
    out, _ = flash_forward(q, k, v, block_q=2, block_k=4)
    kb, vb = np.broadcast_to(k, (2, 3, 6, 4)), np.broadcast_to(v, (2, 3, 6, 4))
    assert_close(out, reference(q, kb, vb, False)[3].detach().numpy(), "broadcast")


def test_extra_memory_is_far_below_the_score_matrix(rng):
    """The tiled pass never holds the T x S matrix (1024 x 1024 float64 = 8 MiB)."""
    q, k, v = (rng.standard_normal((1024, 16)) for _ in range(3))
    tracemalloc.start()
    flash_forward(q, k, v, block_q=64, block_k=64)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1024 * 1024 * 8 / 8, f"peak {peak} bytes"


@pytest.mark.parametrize("causal", [False, True])
def test_callback_visits_tiles_in_the_io_model_order(rng, causal):
    q, k, v = (rng.standard_normal((10, 3)) for _ in range(3))
    seen = []
    flash_forward(q, k, v, causal=causal, block_q=4, block_k=3,
                  callback=lambda i0, i1, j0, j1, m, l, acc: seen.append((i0 // 4, j0 // 3)))
    assert seen == [(i, j) for i, j, _, _ in tiled_io_steps(10, 3, 4, 3, causal)]
    # causal: a tile is visited iff some of its keys are visible (j0 <= last query)
    assert all(j * 3 <= min(10, 4 * (i + 1)) - 1 for i, j in seen) or not causal


def test_errors_name_the_argument(rng):
    q = rng.standard_normal((4, 3))
    with pytest.raises(ValueError, match="block_q must be a positive integer"):
        flash_forward(q, q, q, block_q=0)
    with pytest.raises(TypeError, match="k must be a numpy array"):
        flash_forward(q, torch.zeros(4, 3), q)
    with pytest.raises(ValueError, match="same last dimension D"):
        flash_forward(q, rng.standard_normal((4, 2)), q)
    out, lse = flash_forward(q, q, q)
    with pytest.raises(ValueError, match="dout must be a numpy array of shape"):
        flash_backward(q, q, q, out, lse, out[:2])
    b = np.broadcast_to(q, (2, 4, 3))
    out_b, lse_b = flash_forward(b, q, q)
    with pytest.raises(ValueError, match="equal leading dimensions"):
        flash_backward(b, q, q, out_b, lse_b, np.ones((2, 4, 3)))
