import pytest
import torch
import torch.nn.functional as F

from attn_course.attention import sdpa_torch
from attn_course.efficient.compare import (
    METHODS,
    approximation_errors,
    attention_method,
    crossover,
    measure_methods,
    relative_error,
    tiny_lm_qkv,
)
from attn_course.testing import assert_close


def qkv(T=12, D=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, 3, T, D, generator=g, dtype=dtype) for _ in range(3))


@pytest.mark.parametrize("causal", [False, True])
def test_exact_methods_match_torch_sdpa(causal):
    q, k, v = qkv()
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=0.3)
    for name, kw in (("softmax", {}), ("sdpa", {}), ("sliding_window", {"window": 12})):
        out = attention_method(name, causal=causal, scale=0.3, **kw)(q, k, v)
        assert_close(out, expected, f"{name}, causal={causal}")


def test_random_methods_are_reproducible_and_seeded():
    q, k, v = qkv(seed=1)
    for name in ("performer", "linformer"):
        a = attention_method(name, seed=3, num_features=16, proj_len=5)
        assert torch.equal(a(q, k, v), a(q, k, v)), f"{name}: one draw, reused"
        assert torch.equal(a(q, k, v), attention_method(name, seed=3, num_features=16, proj_len=5)(q, k, v))
        other = attention_method(name, seed=4, num_features=16, proj_len=5)(q, k, v)
        assert not torch.allclose(a(q, k, v), other), f"{name}: another seed, another draw"


def test_options_reach_the_methods():
    q, k, v = qkv(seed=2)
    memory = attention_method("linear", feature_map="identity", normalize=False)(q, k, v)
    assert_close(memory, q @ (k.transpose(-1, -2) @ v), "outer-product memory")
    window = attention_method("sliding_window", window=3, causal=True)(q, k, v)
    band = torch.ones(12, 12, dtype=torch.bool).tril() & ~torch.ones(12, 12, dtype=torch.bool).tril(-3)
    assert_close(window, sdpa_torch(q, k, v, mask=band), "window 3")


def test_bad_method_arguments_are_refused():
    with pytest.raises(ValueError, match="name must be one of"):
        attention_method("reformer")
    with pytest.raises(ValueError, match="linformer cannot be causal"):
        attention_method("linformer", causal=True)
    with pytest.raises(ValueError, match="feature_map"):
        attention_method("linear", feature_map="relu")
    assert set(METHODS) >= {"softmax", "sliding_window", "linear", "linformer", "performer"}


def test_approximation_errors_of_exact_methods_are_zero_and_others_are_not():
    q, k, v = qkv(T=20, dtype=torch.float32, seed=3)
    methods = {name: attention_method(name, window=20, num_features=32, proj_len=8)
               for name in ("softmax", "sliding_window", "performer", "linformer", "linear")}
    errs = approximation_errors(q, k, v, methods)
    assert errs["softmax"] < 1e-6
    assert errs["sliding_window"] < 1e-6
    assert all(errs[name] > 1e-2 for name in ("performer", "linformer", "linear")), errs
    assert relative_error(2 * v, v) == pytest.approx(1.0)


def test_tiny_lm_qkv_reproduce_the_trained_block_attention():
    from attn_course.data.tiny_lm import load_tiny_lm, make_batch
    from attn_course.multihead import merge_heads
    from attn_course.transformer import causal_self_attention

    q, k, v = tiny_lm_qkv(layer=1, n=5, seed=0)
    model = load_tiny_lm()
    block = model.blocks[1]
    assert q.shape == (5, block.attn.num_heads, 16, block.attn.head_dim)
    assert k.shape == v.shape == q.shape
    seen = {}
    hook = block.ln1.register_forward_hook(lambda _m, _i, out: seen.__setitem__("x", out))
    inputs, _, _ = make_batch(5, torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(inputs)
        hook.remove()
        expected, _ = causal_self_attention(block.attn, seen["x"], rope_base=block.rope_base)
        ours = block.attn.out_proj(merge_heads(sdpa_torch(q, k, v, causal=True)))
    assert_close(ours, expected, "attention rebuilt from the captured q, k, v")




def rows_from(times):
    return [dict(name=name, T=T, seconds=s, peak_bytes=None)
            for name, series in times.items() for T, s in series.items()]


def test_crossover_is_interpolated_on_a_log_log_scale():
    # baseline ~ T^2, method ~ 64 T: equal at T = 64 exactly
    Ts = [16, 32, 128, 256]
    rows = rows_from({"base": {T: T**2 for T in Ts}, "fast": {T: 64 * T for T in Ts}})
    T, how = crossover(rows, "fast", "base")
    assert how == "measured"
    assert T == pytest.approx(64.0)
    assert crossover(rows, "base", "fast") == (None, "above")
    rows += rows_from({"cheap": {T: 1.0 for T in Ts}, "other": {1000: 1.0}})
    assert crossover(rows, "cheap", "base") == (16, "below")
    assert crossover(rows, "other", "base") == (None, "none")
    assert crossover(rows, "fast", "base", key="peak_bytes") == (None, "none")


def test_measure_methods_rows_and_length_limits():
    methods = {"softmax": attention_method("softmax"), "linear": attention_method("linear")}
    rows = measure_methods(methods, [8, 16], B=1, H=2, D=4, repeat=3,
                           max_length={"softmax": 8})
    assert [(r["name"], r["T"]) for r in rows] == [("softmax", 8), ("linear", 8), ("linear", 16)]
    assert all(r["seconds"] > 0 and r["peak_bytes"] > 0 for r in rows)
    # seconds is the median of the repeats, between the fastest and the slowest run
    assert all(0 < r["seconds_min"] <= r["seconds"] <= r["seconds_max"] for r in rows)
    # the output alone is (B, H, T, D) float32 = 2 * 16 * 4 * 4 bytes
    assert rows[-1]["peak_bytes"] >= 2 * 16 * 4 * 4
