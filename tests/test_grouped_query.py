import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attn_course.grouped_query import GroupedQueryAttention, grouped_query_attention, repeat_kv
from attn_course.kv_cache import LayerKV, kv_cache_bytes
from attn_course.multihead import MultiHeadAttention
from attn_course.testing import assert_close
from tests.reference import attention_loop


def _has_enable_gqa() -> bool:
    try:
        F.scaled_dot_product_attention(torch.ones(1, 2, 1, 1), torch.ones(1, 1, 1, 1),
                                       torch.ones(1, 1, 1, 1), enable_gqa=True)
    except TypeError:
        return False
    return True


HAS_ENABLE_GQA = _has_enable_gqa()  # torch >= 2.5

# (B, H, H_kv, T, S, D, Dv): multi-query, grouped, multi-head, non-powers of two, T != S
SHAPES = [(1, 1, 1, 1, 1, 1, 1), (2, 6, 1, 5, 7, 3, 4), (2, 6, 2, 5, 5, 8, 8),
          (1, 6, 3, 9, 4, 5, 2), (3, 4, 4, 3, 6, 4, 4), (1, 12, 4, 17, 13, 16, 16)]


def make(B, H, H_kv, T, S, D, Dv, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, H_kv, S, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, H_kv, S, Dv, generator=g, dtype=torch.float64)
    return q, k, v


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_float64_loops_with_each_query_head_reading_its_group(shape):
    q, k, v = make(*shape)
    G = shape[1] // shape[2]
    # the reference repeats each key/value head G times with numpy, head h -> h // G
    k_rep, v_rep = (np.repeat(x.numpy(), G, axis=1) for x in (k, v))
    expected, expected_probs = attention_loop(q.numpy(), k_rep, v_rep)
    out, probs = grouped_query_attention(q, k, v, return_probs=True)
    assert out.shape == (shape[0], shape[1], shape[3], shape[6])
    assert_close(out, expected, "GQA vs float64 loop")
    assert_close(probs, expected_probs, "GQA probabilities vs float64 loop")
    assert_close(repeat_kv(k, G), k_rep, "repeat_kv vs numpy repeat")


@pytest.mark.skipif(not HAS_ENABLE_GQA, reason="this torch's SDPA has no enable_gqa")
@pytest.mark.parametrize(("shape", "masking"), [
    (shape, masking) for shape in SHAPES for masking in ("none", "causal", "bool", "float")
    if not (masking == "causal" and shape[3] > shape[4])])  # SDPA's is_causal: T <= S only
def test_matches_torch_sdpa_enable_gqa(shape, masking):
    q, k, v = make(*shape, seed=1)
    B, H, _, T, S, _, _ = shape
    g = torch.Generator().manual_seed(2)
    mask = None
    if masking == "bool":
        mask = torch.rand(B, 1, T, S, generator=g) < 0.7
        mask[..., 0] = True
    elif masking == "float":
        mask = torch.randn(1, H, T, S, generator=g, dtype=torch.float64)
    causal = masking == "causal"
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True)
    assert_close(grouped_query_attention(q, k, v, mask=mask, causal=causal), expected,
                 f"GQA vs SDPA(enable_gqa=True), mask {masking}")


def _mha_with_repeated_kv(gqa: GroupedQueryAttention) -> MultiHeadAttention:
    """The course's MultiHeadAttention whose key/value heads are copies of gqa's."""
    E, H, H_kv, D = gqa.embed_dim, gqa.num_heads, gqa.num_kv_heads, gqa.head_dim
    G = H // H_kv
    mha = MultiHeadAttention(E, H, bias=gqa.q_proj.bias is not None).to(torch.float64)
    with torch.no_grad():
        for name in ("q_proj", "out_proj"):
            getattr(mha, name).load_state_dict(getattr(gqa, name).state_dict())
        for name in ("k_proj", "v_proj"):
            src = getattr(gqa, name)
            w = src.weight.view(H_kv, D, E).repeat_interleave(G, dim=0).reshape(H * D, E)
            getattr(mha, name).weight.copy_(w)
            if src.bias is not None:
                getattr(mha, name).bias.copy_(src.bias.view(H_kv, D).repeat_interleave(G, 0).reshape(-1))
    return mha


@pytest.mark.parametrize(("E", "H", "H_kv"), [(12, 6, 1), (12, 6, 2), (12, 6, 3), (12, 6, 6), (20, 4, 2)])
@pytest.mark.parametrize("bias", [True, False])
def test_module_equals_multihead_attention_with_repeated_key_value_heads(E, H, H_kv, bias):
    torch.manual_seed(0)
    gqa = GroupedQueryAttention(E, H, H_kv, bias=bias).to(torch.float64)
    if bias:
        with torch.no_grad():
            for p in gqa.parameters():
                if p.ndim == 1:
                    p.normal_()
    mha = _mha_with_repeated_kv(gqa)
    x = torch.randn(2, 7, E, dtype=torch.float64)
    y = torch.randn(2, 5, E, dtype=torch.float64)
    for args, kw in (((x,), {"causal": True}), ((x, y), {})):
        out, probs = gqa(*args, need_weights=True, **kw)
        ref_out, ref_probs = mha(*args, need_weights=True, **kw)
        assert_close(out, ref_out, f"GQA module vs MultiHeadAttention, H_kv={H_kv}")
        assert_close(probs, ref_probs, "probabilities")
    n_kv = sum(p.numel() for n, p in gqa.named_parameters() if n.startswith(("k_proj", "v_proj")))
    assert n_kv == 2 * (E * H_kv * E // H + (H_kv * E // H if bias else 0))


def test_cache_of_grouped_keys_has_the_predicted_size():
    gqa = GroupedQueryAttention(24, 6, 2).to(torch.float64)
    layer = LayerKV()
    x = torch.randn(3, 5, 24, dtype=torch.float64)
    k = gqa.k_proj(x).view(3, 5, 2, 4).transpose(1, 2)  # (B, H_kv, S, D)
    layer.append(k, k.clone())
    assert layer.nbytes() == kv_cache_bytes(1, B=3, H=6, S=5, D=4, bytes_per_number=8, num_kv_heads=2)
    assert layer.nbytes() * 3 == kv_cache_bytes(1, B=3, H=6, S=5, D=4, bytes_per_number=8)
    assert kv_cache_bytes(32, B=1, H=32, S=8192, D=128, bytes_per_number=2, num_kv_heads=8) == 2**30


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: GroupedQueryAttention(12, 6, 4), ["num_kv_heads=4", "num_heads=6"]),
        (lambda: GroupedQueryAttention(12, 5, 1), ["embed_dim=12", "num_heads=5"]),
        (lambda: GroupedQueryAttention(12, 6, 0), ["num_kv_heads", "0"]),
        (lambda: grouped_query_attention(*make(1, 6, 4, 2, 3, 4, 4)), ["H_kv", "H = 6", "(1, 4, 3, 4)"]),
        (lambda: grouped_query_attention(torch.ones(2, 3, 4), *make(1, 1, 1, 2, 3, 4, 4)[1:]),
         ["q must be", "(2, 3, 4)"]),
        (lambda: grouped_query_attention(*make(1, 4, 2, 2, 3, 4, 4), mask=torch.ones(3, 4, 2, 3, dtype=torch.bool)),
         ["mask of shape (3, 4, 2, 3)", "(1, 4, 2, 3)"]),
        (lambda: GroupedQueryAttention(8, 2, 1)(torch.ones(2, 3, 5)), ["query", "(2, 3, 5)", "8"]),
        (lambda: kv_cache_bytes(1, 1, 6, 4, 8, num_kv_heads=4), ["num_kv_heads", "H=6", "4"]),
        (lambda: repeat_kv(torch.ones(2, 3, 4), 2), ["(B, H_kv, S, D)", "(2, 3, 4)"]),
    ],
)
def test_bad_input_names_the_argument(call, words):
    with pytest.raises(ValueError) as info:
        call()
    for w in words:
        assert w in str(info.value), str(info.value)
