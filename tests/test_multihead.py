import pytest
import torch
from torch import nn

from attn_course.multihead import MultiHeadAttention, merge_heads, split_heads
from attn_course.testing import assert_close, assert_error_within


def pair(E, H, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(E, H, batch_first=True, dtype=dtype, **kw)
    with torch.no_grad():  # non-zero biases so that copying them is tested too
        for p in ref.parameters():
            if p.ndim == 1:
                p.normal_()
    return ref, MultiHeadAttention.from_torch(ref)


@pytest.mark.parametrize(("B", "T", "E", "H"), [(1, 1, 4, 1), (2, 5, 12, 3), (3, 17, 24, 4), (2, 9, 64, 8)])
def test_self_attention_matches_torch(B, T, E, H):
    ref, ours = pair(E, H)
    x = torch.randn(B, T, E, dtype=torch.float64)
    expected, expected_w = ref(x, x, x, average_attn_weights=False)
    out, probs = ours(x, need_weights=True)
    assert_close(out, expected, "output")
    assert_close(probs, expected_w, "per-head probabilities")
    assert probs.shape == (B, H, T, T)


def test_cross_attention_with_kdim_vdim_and_padding_matches_torch():
    ref, ours = pair(16, 4, kdim=6, vdim=10)
    q = torch.randn(2, 3, 16, dtype=torch.float64)
    k = torch.randn(2, 7, 6, dtype=torch.float64)
    v = torch.randn(2, 7, 10, dtype=torch.float64)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[0, 5:] = True
    expected, expected_w = ref(q, k, v, key_padding_mask=pad, average_attn_weights=False)
    out, probs = ours(q, k, v, key_padding_mask=pad, need_weights=True)
    assert_close(out, expected, "cross-attention output")
    assert_close(probs, expected_w, "cross-attention probabilities")
    assert (probs[0, :, :, 5:] == 0).all()


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
def test_causal_and_float_mask_match_torch():
    ref, ours = pair(12, 3)
    x = torch.randn(2, 6, 12, dtype=torch.float64)
    # nn.MultiheadAttention's boolean attn_mask means True = *not* allowed.
    future = torch.ones(6, 6, dtype=torch.bool).triu(1)
    expected, _ = ref(x, x, x, attn_mask=future)
    assert_close(ours(x, causal=True)[0], expected, "causal flag")
    assert_close(ours(x, attn_mask=~future)[0], expected, "boolean attn_mask (True = attend)")
    bias = torch.randn(6, 6, dtype=torch.float64)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[1, 4:] = True
    expected, _ = ref(x, x, x, attn_mask=bias, key_padding_mask=pad)
    assert_close(ours(x, attn_mask=bias, key_padding_mask=pad)[0], expected, "float mask + padding")


@pytest.mark.parametrize(("B", "H"), [(2, 2), (3, 2), (1, 4)])
def test_per_batch_and_head_3d_mask_matches_torch(B, H):
    ref, ours = pair(4 * H, H)
    T, S = 5, 6
    x = torch.randn(B, T, 4 * H, dtype=torch.float64)
    y = torch.randn(B, S, 4 * H, dtype=torch.float64)
    bias = torch.randn(B * H, T, S, dtype=torch.float64)  # PyTorch's (B * H, T, S) layout
    expected, expected_w = ref(x, y, y, attn_mask=bias, average_attn_weights=False)
    out, probs = ours(x, y, attn_mask=bias, need_weights=True)
    assert_close(out, expected, "float (B * H, T, S) mask")
    assert_close(probs, expected_w, "probabilities with a (B * H, T, S) mask")
    blocked = torch.rand(B * H, T, S) < 0.4  # torch: True = not allowed
    blocked[..., 0] = False
    expected, _ = ref(x, y, y, attn_mask=blocked)
    assert_close(ours(x, y, attn_mask=~blocked)[0], expected, "boolean (B * H, T, S) mask")


@pytest.mark.parametrize(("B", "H"), [(2, 2), (3, 3)])
def test_per_batch_mask_is_never_applied_per_head(B, H):
    ref, ours = pair(4 * H, H)
    T = 5
    x = torch.randn(B, T, 4 * H, dtype=torch.float64)
    keep = torch.rand(B, T, T) < 0.6  # one mask per batch element, B == H
    keep[..., 0] = True
    with pytest.raises(ValueError) as info:
        ours(x, attn_mask=keep)
    for words in ("attn_mask of shape", str((B, T, T)), str((B * H, T, T)), str((B, 1, T, T))):
        assert words in str(info.value), str(info.value)
    # the accepted spelling: (B, 1, T, S), equal to torch given the mask repeated per head
    expected, _ = ref(x, x, x, attn_mask=~keep.repeat_interleave(H, dim=0))
    assert_close(ours(x, attn_mask=keep[:, None])[0], expected, "(B, 1, T, S) mask")


def test_value_defaults_to_key_and_key_to_query():
    _, ours = pair(8, 2)
    x, y = torch.randn(2, 3, 8, dtype=torch.float64), torch.randn(2, 4, 8, dtype=torch.float64)
    assert_close(ours(x, y)[0], ours(x, y, y)[0], "value defaults to key")
    assert (ours(x, y)[0] - ours(x, y, x[:, :1].expand(2, 4, 8))[0]).abs().max() > 1e-3
    assert_close(ours(x)[0], ours(x, x, x)[0], "key and value default to query")


def test_fully_padded_sequence_gives_zero_attention_not_nan():
    _, ours = pair(8, 2)
    x = torch.randn(2, 4, 8, dtype=torch.float64)
    pad = torch.zeros(2, 4, dtype=torch.bool)
    pad[1] = True
    out, probs = ours(x, key_padding_mask=pad, need_weights=True)
    assert (probs[1] == 0).all()
    # zero attention output, so only the output projection's bias is left
    assert_close(out[1], ours.out_proj.bias.expand(4, 8), "fully padded element")
    assert_close(out[0], ours(x[:1])[0][0], "the other element is unaffected")


def test_no_bias_and_gradients_match_torch():
    ref, ours = pair(8, 2, bias=False)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    ref(x, x, x)[0].pow(2).sum().backward()
    ours(x)[0].pow(2).sum().backward()
    assert_close(ours.q_proj.weight.grad, ref.in_proj_weight.grad[:8], "dW_q")
    assert_close(ours.out_proj.weight.grad, ref.out_proj.weight.grad, "dW_o")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_within_2x_of_torch(dtype):
    ref64, _ = pair(32, 4)
    x = torch.randn(2, 33, 32, dtype=torch.float64)
    exact = ref64(x, x, x)[0]
    ref_lo = ref64.to(dtype)
    ours_lo = MultiHeadAttention.from_torch(ref_lo)
    xl = x.to(dtype)
    with torch.no_grad():
        assert_error_within(ours_lo(xl)[0], ref_lo(xl, xl, xl)[0], exact, f"MHA {dtype}")


def test_split_merge_roundtrip_and_shapes():
    x = torch.randn(2, 5, 12)
    heads = split_heads(x, 3)
    assert heads.shape == (2, 3, 5, 4)
    assert torch.equal(heads[:, 1], x[..., 4:8])  # head 1 owns features 4..7
    assert torch.equal(merge_heads(heads), x)


@pytest.mark.parametrize(
    ("call", "exc", "words"),
    [
        (lambda: MultiHeadAttention(10, 3), ValueError, ["embed_dim=10", "num_heads=3"]),
        (lambda: MultiHeadAttention(0, 1), ValueError, ["embed_dim", "0"]),
        (lambda: MultiHeadAttention(8, 2)(torch.randn(2, 5, 7)), ValueError, ["query", "(2, 5, 7)", "8"]),
        (lambda: MultiHeadAttention(8, 2)(torch.randn(5, 8)), ValueError, ["query", "(5, 8)"]),
        (lambda: MultiHeadAttention(8, 2)(torch.randn(2, 5, 8), torch.randn(3, 4, 8)), ValueError,
         ["key has batch size 3", "2"]),
        (lambda: MultiHeadAttention(8, 2)(torch.randn(2, 5, 8), key_padding_mask=torch.zeros(2, 4, dtype=torch.bool)),
         ValueError, ["key_padding_mask", "(2, 5)", "(2, 4)"]),
        (lambda: MultiHeadAttention(8, 2)([[1.0]]), TypeError, ["query must be a torch tensor", "list"]),
        (lambda: MultiHeadAttention(8, 2).load_from_torch(nn.MultiheadAttention(8, 4)), ValueError,
         ["num_heads", "(8, 4, 8, 8)"]),
        (lambda: MultiHeadAttention.from_torch(nn.Linear(2, 2)), TypeError, ["mha", "Linear"]),
        (lambda: split_heads(torch.randn(2, 5, 7), 2), ValueError, ["E=7", "num_heads=2"]),
        (lambda: MultiHeadAttention(8, 2)(torch.randn(2, 5, 8), attn_mask=torch.ones(3, 2, 5, 5)), ValueError,
         ["attn_mask of shape (3, 2, 5, 5)", "(2, 2, 5, 5)", "(4, 5, 5)"]),
        (lambda: MultiHeadAttention(8, 2)(torch.randn(2, 5, 8), attn_mask=torch.ones(5,)), ValueError,
         ["attn_mask of shape (5,)", "(T, S) = (5, 5)"]),
        (lambda: MultiHeadAttention(8, 2)(torch.randn(2, 5, 8), attn_mask=torch.ones(6, 5, 5)), ValueError,
         ["attn_mask of shape (6, 5, 5)", "(B * H, T, S) = (4, 5, 5)"]),
    ],
)
def test_bad_input_names_the_argument(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for w in words:
        assert w in str(info.value), str(info.value)
