import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from attn_course.attention import sdpa_torch
from attn_course.efficient.sliding_window import sliding_window_attention, sliding_window_mask
from attn_course.testing import assert_close

# (leading dims, T, D, Dv, window): T not a multiple of w, w = 1, w >= T, w = T.
CASES = [
    ((), 1, 3, 2, 1),
    ((), 10, 4, 3, 3),
    ((2,), 17, 5, 7, 4),
    ((2, 3), 33, 8, 8, 8),
    ((1, 2), 7, 6, 5, 20),
    ((3,), 12, 4, 4, 12),
    ((2,), 9, 3, 2, 1),
]


def band_loop(T, window, causal):
    """The band mask written out element by element."""
    keep = torch.zeros(T, T, dtype=torch.bool)
    for i in range(T):
        for j in range(T):
            keep[i, j] = (0 <= i - j < window) if causal else (abs(i - j) < window)
    return keep


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(("T", "window"), [(1, 1), (6, 2), (9, 4), (5, 9)])
def test_mask_matches_its_definition(T, window, causal):
    assert torch.equal(sliding_window_mask(T, window, causal), band_loop(T, window, causal))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("impl", [sliding_window_attention])
def test_blocked_equals_band_masked_full_attention(impl, case, causal):
    lead, T, D, Dv, w = case
    g = torch.Generator().manual_seed(T * 31 + w)
    q = torch.randn(*lead, T, D, generator=g, dtype=torch.float64)
    k = torch.randn(*lead, T, D, generator=g, dtype=torch.float64)
    v = torch.randn(*lead, T, Dv, generator=g, dtype=torch.float64)
    keep = band_loop(T, w, causal)
    out = impl(q, k, v, w, causal=causal)
    assert_close(out, sdpa_torch(q, k, v, mask=keep), "blocked vs sdpa_torch with band mask")
    assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=keep),
                 "blocked vs torch SDPA with band mask")


def test_scale_broadcasting_float32_and_gradients():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 1, 11, 4, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 3, 11, 4, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, 11, 6, generator=g, dtype=torch.float64, requires_grad=True)
    keep = band_loop(11, 3, True)
    out = sliding_window_attention(q, k, v, 3, scale=0.7)
    ref = sdpa_torch(q, k, v, mask=keep, scale=0.7)
    assert_close(out, ref, "broadcast leading dims, custom scale")
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for name, a, b in zip("qkv", grads, ref_grads, strict=True):
        assert_close(a, b, f"d{name}")
    out32 = sliding_window_attention(q.float(), k.float(), v.float(), 3, scale=0.7)
    assert out32.dtype == torch.float32
    assert_close(out32, ref, "float32")


def test_half_precision_is_computed_in_float32():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 13, 8, generator=g) for _ in range(3))
    ref = sdpa_torch(q, k, v, mask=band_loop(13, 5, False))
    out = sliding_window_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), 5, causal=False)
    assert out.dtype == torch.bfloat16
    assert_close(out, ref, "bfloat16")


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operation returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("causal", [True, False])
def test_memory_grows_as_n_times_w_not_n_squared(causal):
    """No intermediate holds more than (3w) * T elements per head (full attention: T * T)."""
    T, w, D = 600, 16, 4
    q, k, v = (torch.randn(T, D) for _ in range(3))
    with LargestTensor() as full:
        sdpa_torch(q, k, v, mask=sliding_window_mask(T, w, causal))
    with LargestTensor() as blocked:
        sliding_window_attention(q, k, v, w, causal=causal)
    assert full.largest >= T * T
    span = 2 * w if causal else 3 * w
    assert blocked.largest <= span * (T + w), (blocked.largest, span * (T + w))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"window": 0}, ValueError),
        ({"window": 2.5}, ValueError),
        ({"window": True}, ValueError),
        ({"window": 2, "k": torch.zeros(5, 4)}, ValueError),  # T != S
        ({"window": 2, "q": torch.zeros(6, 3)}, ValueError),  # D mismatch
        ({"window": 2, "q": [[0.0] * 4] * 6}, TypeError),
    ],
)
def test_bad_arguments_are_refused(kwargs, error):
    args = {"q": torch.zeros(6, 4), "k": torch.zeros(6, 4), "v": torch.zeros(6, 2), **kwargs}
    with pytest.raises(error):
        sliding_window_attention(args["q"], args["k"], args["v"], args["window"])
