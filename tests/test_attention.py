import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attn_course.attention import (
    causal_mask,
    fully_masked_rows_by_backend,
    key_padding_mask,
    scaled_dot_product_attention,
    sdpa_numpy,
    sdpa_torch,
)
from attn_course.testing import assert_close, assert_error_within
from tests.reference import attention_loop

# (leading dims of q, leading dims of k and v, T, S, D, Dv): non-powers of two, T != S,
# batch and head dimensions, and leading dimensions that broadcast.
SHAPES = [
    ((), (), 1, 1, 1, 1),
    ((), (), 5, 7, 3, 2),
    ((2,), (2,), 6, 6, 8, 8),
    ((2, 3), (2, 3), 5, 9, 16, 12),
    ((3, 1), (1, 4), 4, 3, 5, 7),
    ((1, 2, 2), (1, 2, 2), 17, 13, 24, 24),
]


def make_qkv(rng, lead_q, lead_kv, T, S, D, Dv):
    q = rng.standard_normal((*lead_q, T, D))
    k = rng.standard_normal((*lead_kv, S, D))
    v = rng.standard_normal((*lead_kv, S, Dv))
    return q, k, v


def torch_sdpa(q, k, v, mask=None, scale=None):
    """PyTorch's own SDPA on broadcast float64 tensors (the independent reference)."""
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    q = torch.as_tensor(q).expand(*lead, *q.shape[-2:])
    k = torch.as_tensor(k).expand(*lead, *k.shape[-2:])
    v = torch.as_tensor(v).expand(*lead, *v.shape[-2:])
    mask = None if mask is None else torch.as_tensor(mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale).numpy()


@pytest.mark.parametrize("shape", SHAPES)
def test_numpy_and_torch_match_torch_sdpa_and_loops(rng, shape):
    q, k, v = make_qkv(rng, *shape)
    expected = torch_sdpa(q, k, v)
    loop_out, loop_probs = attention_loop(q, k, v)
    out, probs = sdpa_numpy(q, k, v, return_probs=True)
    assert_close(out, expected, "numpy vs torch SDPA")
    assert_close(out, loop_out, "numpy vs loop")
    assert_close(probs, loop_probs, "numpy probs vs loop")
    t_out, t_probs = sdpa_torch(*map(torch.from_numpy, (q, k, v)), return_probs=True)
    assert_close(t_out, expected, "torch vs torch SDPA")
    assert_close(t_probs, loop_probs, "torch probs vs loop")


@pytest.mark.parametrize("shape", SHAPES[1:4])
def test_masks_and_scale_against_references(rng, shape):
    q, k, v = make_qkv(rng, *shape)
    T, S = q.shape[-2], k.shape[-2]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    keep = rng.random((*lead, T, S)) > 0.3
    keep[..., 0] = True  # fully masked rows have a test of their own below
    bias = rng.standard_normal((T, S))
    scale = 0.37
    for mask, loop_kw in ((keep, {"keep": keep}), (bias, {"bias": bias})):
        expected = torch_sdpa(q, k, v, mask=mask, scale=scale)
        loop_out, _ = attention_loop(q, k, v, scale=scale, **loop_kw)
        for impl, args in ((sdpa_numpy, (q, k, v)), (sdpa_torch, tuple(map(torch.from_numpy, (q, k, v))))):
            out = impl(*args, mask=mask, scale=scale)
            assert_close(out, expected, f"{impl.__name__} with {mask.dtype} mask vs SDPA")
            assert_close(out, loop_out, f"{impl.__name__} with {mask.dtype} mask vs loop")


@pytest.mark.parametrize(("T", "S"), [(5, 5), (3, 7), (7, 3)])
def test_causal_flag_equals_causal_mask_and_torch_is_causal(rng, T, S):
    q, k, v = make_qkv(rng, (2,), (2,), T, S, 4, 4)
    expected = F.scaled_dot_product_attention(
        *map(torch.from_numpy, (q, k, v)), attn_mask=torch.ones(T, S, dtype=torch.bool).tril()
    ).numpy()
    assert_close(sdpa_numpy(q, k, v, causal=True), expected, "numpy causal")
    assert_close(sdpa_numpy(q, k, v, mask=causal_mask(T, S)), expected, "numpy causal_mask")
    assert_close(sdpa_torch(*map(torch.from_numpy, (q, k, v)), causal=True), expected, "torch causal")
    if T == S:
        is_causal = F.scaled_dot_product_attention(*map(torch.from_numpy, (q, k, v)), is_causal=True)
        assert_close(sdpa_numpy(q, k, v, causal=True), is_causal, "numpy vs SDPA is_causal")


def test_causal_mask_offset_and_padding_mask():
    assert np.array_equal(causal_mask(3, 5, offset=2), np.tril(np.ones((3, 5), bool), k=2))
    assert np.array_equal(causal_mask(4), np.tril(np.ones((4, 4), bool)))
    pad = key_padding_mask([2, 0, 3], 3)
    assert np.array_equal(pad, [[False, False, True], [True, True, True], [False, False, False]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_torch_low_precision_error_within_2x_of_torch_sdpa(rng, dtype):
    q, k, v = (torch.from_numpy(x) for x in make_qkv(rng, (2, 3), (2, 3), 33, 47, 64, 64))
    exact = F.scaled_dot_product_attention(q, k, v)  # float64
    lo = [x.to(dtype) for x in (q, k, v)]
    ref = F.scaled_dot_product_attention(*lo)
    ours = sdpa_torch(*lo)
    assert ours.dtype == dtype
    assert_error_within(ours, ref, exact, f"sdpa_torch {dtype}")
    assert_close(ours, exact, f"sdpa_torch {dtype} vs float64")


def test_numpy_float32_and_float16(rng):
    q, k, v = make_qkv(rng, (2,), (2,), 9, 11, 16, 8)
    exact = torch_sdpa(q, k, v)
    for dtype in (np.float32, np.float16):
        out = sdpa_numpy(q.astype(dtype), k.astype(dtype), v.astype(dtype))
        assert out.dtype == dtype
        assert_close(out, exact, f"sdpa_numpy {np.dtype(dtype).name}")


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_probabilities_are_distributions(T, S, D, seed):
    rng = np.random.default_rng(seed)
    q, k, v = make_qkv(rng, (2,), (2,), T, S, D, D)
    _, probs = sdpa_numpy(q, k, v, return_probs=True)
    assert (probs >= 0).all()
    assert_close(probs.sum(-1), np.ones((2, T)), "row sums")


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 8), st.integers(0, 2**31 - 1))
def test_causality_later_tokens_never_change_earlier_outputs(T, seed):
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((T, 4)))
    t = int(rng.integers(0, T - 1))  # change position t+1 onward
    y = x.clone()
    y[t + 1:] = torch.from_numpy(rng.standard_normal((T - t - 1, 4)))
    out_x = sdpa_torch(x, x, x, causal=True)
    out_y = sdpa_torch(y, y, y, causal=True)
    assert torch.equal(out_x[: t + 1], out_y[: t + 1])
    assert not torch.equal(out_x[t + 1:], out_y[t + 1:])


@pytest.mark.parametrize("impl", ["numpy", "torch"])
def test_huge_logits_in_float32_give_no_nan_or_inf(rng, impl):
    q = (rng.standard_normal((2, 5, 4)) * 100).astype(np.float32)
    k = (rng.standard_normal((2, 6, 4)) * 100).astype(np.float32)  # scores up to ~1e4 or more
    v = rng.standard_normal((2, 6, 3)).astype(np.float32)
    args = (q, k, v) if impl == "numpy" else tuple(map(torch.from_numpy, (q, k, v)))
    out, probs = scaled_dot_product_attention(*args, return_probs=True)
    scores = np.abs(q @ k.swapaxes(-1, -2))
    assert scores.max() > 1e4
    assert np.isfinite(np.asarray(out)).all()
    assert np.isfinite(np.asarray(probs)).all()
    assert_close(np.asarray(probs).sum(-1), np.ones((2, 5), np.float32), "row sums")


def test_fully_masked_rows_give_zero_probabilities_and_output(rng):
    q, k, v = make_qkv(rng, (2,), (2,), 4, 5, 3, 3)
    keep = np.ones((2, 4, 5), bool)
    keep[0, 1] = False
    bias = np.where(keep, 0.0, -np.inf)
    for mask in (keep, bias):
        out, probs = sdpa_numpy(q, k, v, mask=mask, return_probs=True)
        assert (probs[0, 1] == 0).all()
        assert (out[0, 1] == 0).all()
        assert_close(probs[1].sum(-1), np.ones(4), "other rows still sum to 1")
    # PyTorch's SDPA (boolean mask) documents the same convention.
    sdpa = F.scaled_dot_product_attention(*map(torch.from_numpy, (q, k, v)), attn_mask=torch.from_numpy(keep))
    assert_close(sdpa_numpy(q, k, v, mask=keep), sdpa, "numpy vs SDPA with a fully masked row")
    # torch version: zeros forward, finite (zero) gradients backward.
    qt, kt, vt = (torch.from_numpy(x).requires_grad_() for x in (q, k, v))
    out = sdpa_torch(qt, kt, vt, mask=keep)
    assert (out[0, 1] == 0).all()
    out.sum().backward()
    for g in (qt.grad, kt.grad, vt.grad):
        assert torch.isfinite(g).all()
    assert (qt.grad[0, 1] == 0).all()


def test_finite_large_negative_bias_on_a_whole_row_is_not_masking(rng):
    q, k, v = make_qkv(rng, (), (), 2, 3, 4, 4)
    bias = np.array([[-1e9, -1e9, -1e9], [0.0, 0.0, 0.0]])
    out, probs = sdpa_numpy(q, k, v, mask=bias, return_probs=True)
    plain_out, plain_probs = sdpa_numpy(q, k, v, return_probs=True)
    assert (probs[0] > 0).all()
    assert_close(probs, plain_probs, "a constant bias changes nothing", atol=1e-6)
    assert_close(out, plain_out, "outputs", atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_whole_row_of_minus_1e9_depends_on_the_precision(rng, dtype):
    """The docstring's claim: float64 ~ unmasked, float32 uniform (spacing 64 near 1e9)."""
    q, k, v = (x.astype(dtype) for x in make_qkv(rng, (), (), 3, 6, 4, 5))
    bias = np.zeros((3, 6), dtype)
    bias[0] = -1e9
    unmasked_loop = attention_loop(q, k, v)[1][0]
    for probs in (sdpa_numpy(q, k, v, mask=bias, return_probs=True)[1][0],
                  sdpa_torch(*map(torch.from_numpy, (q, k, v)), mask=torch.from_numpy(bias),
                             return_probs=True)[1][0].numpy()):
        assert np.abs(np.asarray(q @ k.T / 2)).max() < 32  # every score within 32 of 0
        if dtype == np.float64:
            assert_close(probs, unmasked_loop, "float64 row of -1e9 vs unmasked", atol=1e-6)
        else:
            assert np.array_equal(probs, np.full(6, 1 / 6, np.float32)), probs
            assert np.abs(probs - unmasked_loop).max() > 1e-2  # not the unmasked weights


def test_a_float16_mask_of_minus_1e9_is_minus_inf_and_masks_the_row(rng):
    q, k, v = (torch.from_numpy(x.astype(np.float16)) for x in make_qkv(rng, (), (), 3, 6, 4, 5))
    bias = torch.zeros(3, 6, dtype=torch.float16)
    bias[0] = -1e9
    assert torch.isinf(bias[0]).all()  # float16 cannot hold -1e9
    out, probs = sdpa_torch(q, k, v, mask=bias, return_probs=True)
    assert (probs[0] == 0).all()
    assert (out[0] == 0).all()
    assert_close(probs[1:].float().sum(-1), np.ones(2, np.float32), "other rows", atol=1e-3)


@pytest.mark.parametrize("impl", [sdpa_numpy, sdpa_torch])
@pytest.mark.parametrize(("q_lead", "mask_shape"), [((1,), (3, 4, 5)), ((2,), (1, 2, 4, 5)),
                                                   ((2, 1), (2, 3, 4, 5)), ((), (2, 4, 5))])
def test_a_mask_that_would_enlarge_the_output_is_refused(rng, impl, q_lead, mask_shape):
    q, k, v = make_qkv(rng, q_lead, q_lead, 4, 5, 3, 2)
    mask = np.ones(mask_shape, bool)
    with pytest.raises(RuntimeError):  # PyTorch's SDPA refuses it too
        F.scaled_dot_product_attention(*map(torch.from_numpy, (q, k, v)), attn_mask=torch.from_numpy(mask))
    if impl is sdpa_torch:
        q, k, v = map(torch.from_numpy, (q, k, v))
    with pytest.raises(ValueError) as info:
        impl(q, k, v, mask=mask)
    message = str(info.value)
    for words in ("mask of shape", str(mask_shape), str((*q_lead, 4, 5))):
        assert words in message, message


def test_a_mask_that_only_repeats_is_accepted(rng):
    q, k, v = make_qkv(rng, (3,), (3,), 4, 5, 3, 2)
    keep = rng.random((1, 4, 5)) < 0.7
    keep[..., 0] = True
    expected = torch_sdpa(q, k, v, mask=keep)
    assert_close(sdpa_numpy(q, k, v, mask=keep), expected, "numpy, (1, T, S) mask")
    assert_close(sdpa_torch(*map(torch.from_numpy, (q, k, v)), mask=keep), expected, "torch")


def test_torch_gradients_match_sdpa(rng):
    q, k, v = make_qkv(rng, (2,), (2,), 5, 7, 4, 3)
    mask = torch.from_numpy(causal_mask(5, 7, offset=2))
    grads = []
    for fn in (lambda a, b, c: sdpa_torch(a, b, c, mask=mask),
               lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=mask)):
        ts = [torch.from_numpy(x).requires_grad_() for x in (q, k, v)]
        (fn(*ts) ** 2).sum().backward()
        grads.append([t.grad for t in ts])
    for name, ours, ref in zip("qkv", *grads, strict=False):
        assert_close(ours, ref, f"d{name}")


def _err(call):
    try:
        call()
    except (TypeError, ValueError) as e:
        return type(e), str(e)
    raise AssertionError("no error raised")


Q, K, V = np.ones((2, 3, 4)), np.ones((2, 5, 4)), np.ones((2, 5, 6))


@pytest.mark.parametrize(
    ("call", "exc", "words"),
    [
        (lambda: sdpa_numpy(np.ones(4), K, V), ValueError, ["q must have at least 2", "(4,)"]),
        (lambda: sdpa_numpy(Q, np.ones((2, 5, 3)), V), ValueError, ["q and k", "D", "(2, 5, 3)"]),
        (lambda: sdpa_numpy(Q, K, np.ones((2, 4, 6))), ValueError, ["k and v", "(2, 4, 6)"]),
        (lambda: sdpa_numpy(Q, np.ones((3, 5, 4)), np.ones((3, 5, 6))), ValueError, ["k of shape", "(3,)"]),
        (lambda: sdpa_numpy(Q, K, V, mask=np.ones((4, 5), bool)), ValueError, ["mask of shape (4, 5)", "(2, 3, 5)"]),
        (lambda: sdpa_numpy(Q, K, V, mask=np.ones((1, 1, 3, 5), bool)), ValueError, ["mask of shape", "more dimensions"]),
        (lambda: sdpa_numpy(Q, K, V, mask=np.ones((3, 5), int)), TypeError, ["mask must be boolean", "int"]),
        (lambda: sdpa_numpy(Q, K, V, mask=[[True]]), TypeError, ["mask must be", "list"]),
        (lambda: sdpa_numpy(Q.astype(int), K, V), TypeError, ["q must have a floating", "int"]),
        (lambda: sdpa_numpy(Q, K, V, scale=0.0), ValueError, ["scale", "0.0"]),
        (lambda: sdpa_numpy(torch.ones(2, 3, 4), K, V), TypeError, ["q must be a numpy array", "Tensor"]),
        (lambda: sdpa_torch(torch.ones(2, 3, 4), torch.ones(2, 5, 4, dtype=torch.float64), torch.ones(2, 5, 6)),
         TypeError, ["share one dtype", "float64"]),
        (lambda: sdpa_torch(torch.ones(2, 3, 4, dtype=torch.int64), torch.ones(2, 5, 4), torch.ones(2, 5, 6)),
         TypeError, ["q must have a floating", "int64"]),
        (lambda: causal_mask(0), ValueError, ["T must be a positive integer", "0"]),
        (lambda: key_padding_mask([1, 4], 3), ValueError, ["lengths", "S=3", "[1, 4]"]),
        (lambda: key_padding_mask([1.0], 3), ValueError, ["lengths", "float64"]),
    ],
)
def test_bad_input_names_the_argument(call, exc, words):
    kind, message = _err(call)
    assert kind is exc, message
    for w in words:
        assert w in message, message


def _check_backends(device, dtype):
    results = fully_masked_rows_by_backend(device, dtype)
    ran = {name: r for name, r in results.items() if not r.startswith("does not run")}
    assert ran, results
    assert all(r == "zero output" for r in ran.values()), results
    return ran


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_cpu_sdpa_backend_gives_a_fully_masked_row_zero_output(dtype):
    ran = _check_backends("cpu", dtype)
    assert "MATH" in ran


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_every_cuda_sdpa_backend_gives_a_fully_masked_row_zero_output(dtype):
    _check_backends("cuda", dtype)
