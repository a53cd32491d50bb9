import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attn_course.data.tiny_lm import LENGTH, SEP, accuracy, load_tiny_lm, make_batch, train
from attn_course.kv_cache import KVCache, LayerKV, kv_cache_bytes
from attn_course.testing import assert_close
from attn_course.transformer import (
    POSITIONAL,
    TinyLM,
    TransformerBlock,
    causal_self_attention,
    generate,
)
from tests.reference import sampling_distribution_loop

DT = torch.float64


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial values for every parameter, LayerNorm gains and all biases included."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            is_gain = name.endswith("weight") and p.ndim == 1  # LayerNorm's weight
            p.copy_(1.0 + 0.3 * noise if is_gain else 0.3 * noise)
    return module


def torch_block(block: TransformerBlock):
    """The same pre-norm block composed from torch's own layers, weights copied over."""
    E, H = block.attn.embed_dim, block.attn.num_heads
    ln1, ln2 = nn.LayerNorm(E, dtype=DT), nn.LayerNorm(E, dtype=DT)
    ln1.load_state_dict(block.ln1.state_dict())
    ln2.load_state_dict(block.ln2.state_dict())
    mha = nn.MultiheadAttention(E, H, batch_first=True, dtype=DT)
    fc1 = nn.Linear(E, block.mlp.fc1.out_features, dtype=DT)
    fc2 = nn.Linear(block.mlp.fc1.out_features, E, dtype=DT)
    a = block.attn
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
        mha.in_proj_bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
        mha.out_proj.weight.copy_(a.out_proj.weight)
        mha.out_proj.bias.copy_(a.out_proj.bias)
    fc1.load_state_dict(block.mlp.fc1.state_dict())
    fc2.load_state_dict(block.mlp.fc2.state_dict())

    def forward(x):
        T = x.shape[1]
        future = torch.ones(T, T, dtype=torch.bool).triu(1)  # nn.MultiheadAttention: True = hidden
        h = ln1(x)
        att, w = mha(h, h, h, attn_mask=future, average_attn_weights=False)
        x = x + att
        return x + fc2(F.gelu(fc1(ln2(x)))), w

    return forward


def rope_llama(x, base=10000.0):
    """RoPE the way Meta's LLaMA reference code writes it: complex numbers via view_as_complex."""
    B, H, T, D = x.shape
    freqs = 1.0 / base ** (torch.arange(0, D, 2, dtype=DT) / D)  # (D/2,)
    cis = torch.polar(torch.ones(T, D // 2, dtype=DT), torch.outer(torch.arange(T, dtype=DT), freqs))
    z = torch.view_as_complex(x.reshape(B, H, T, D // 2, 2).contiguous())  # pairs (2i, 2i+1)
    return torch.view_as_real(z * cis).flatten(-2)  # (B, H, T, D)


def rope_block_reference(block: TransformerBlock, x):
    """A RoPE block by hand: F.layer_norm, F.linear, LLaMA's RoPE, torch SDPA (is_causal)."""
    a, (B, T, E), H = block.attn, x.shape, block.attn.num_heads
    h = F.layer_norm(x, (E,), block.ln1.weight, block.ln1.bias)

    def heads(lin):
        return F.linear(h, lin.weight, lin.bias).view(B, T, H, E // H).transpose(1, 2)

    q, k, v = rope_llama(heads(a.q_proj)), rope_llama(heads(a.k_proj)), heads(a.v_proj)
    att = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, E)
    x = x + F.linear(att, a.out_proj.weight, a.out_proj.bias)
    m = block.mlp
    h2 = F.layer_norm(x, (E,), block.ln2.weight, block.ln2.bias)
    return x + F.linear(F.gelu(F.linear(h2, m.fc1.weight, m.fc1.bias)), m.fc2.weight, m.fc2.bias)


@pytest.mark.parametrize(("B", "T", "E", "H"), [(1, 1, 4, 1), (2, 5, 12, 3), (3, 17, 24, 4), (2, 9, 40, 5)])
def test_block_matches_torch_layers(B, T, E, H):
    torch.manual_seed(0)
    block = randomize(TransformerBlock(E, H).to(DT))
    x = torch.randn(B, T, E, dtype=DT)
    expected, expected_w = torch_block(block)(x)
    out, probs = block(x, need_weights=True)
    assert_close(out, expected, "block vs torch layers")
    assert_close(probs, expected_w, "per-head attention")
    assert_close(block(x), expected, "block without need_weights")


@pytest.mark.parametrize(("B", "T", "E", "H"), [(2, 6, 12, 3), (1, 13, 20, 4)])
def test_block_matches_torch_transformer_encoder_layer(B, T, E, H):
    block = randomize(TransformerBlock(E, H, mlp_ratio=3).to(DT), seed=7)
    layer = nn.TransformerEncoderLayer(E, H, dim_feedforward=3 * E, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True, dtype=DT)
    a = block.attn
    with torch.no_grad():
        layer.self_attn.in_proj_weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
        layer.self_attn.in_proj_bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
    layer.self_attn.out_proj.load_state_dict(a.out_proj.state_dict())
    layer.norm1.load_state_dict(block.ln1.state_dict())
    layer.norm2.load_state_dict(block.ln2.state_dict())
    layer.linear1.load_state_dict(block.mlp.fc1.state_dict())
    layer.linear2.load_state_dict(block.mlp.fc2.state_dict())
    x = torch.randn(B, T, E, dtype=DT)
    mask = nn.Transformer.generate_square_subsequent_mask(T, dtype=DT)  # float, -inf above the diagonal
    expected = layer.eval()(x, src_mask=mask, is_causal=True)
    assert_close(block(x), expected, "block vs nn.TransformerEncoderLayer(norm_first=True)")


@pytest.mark.parametrize(("B", "T", "E", "H"), [(1, 1, 4, 1), (2, 7, 12, 3), (2, 10, 32, 4)])
def test_rope_block_matches_hand_composed_reference(B, T, E, H):
    block = randomize(TransformerBlock(E, H, mlp_ratio=2, rope_base=10000.0).to(DT), seed=1)
    x = torch.randn(B, T, E, dtype=DT)
    assert_close(block(x), rope_block_reference(block, x), "RoPE block vs reference")


def test_tiny_lm_matches_torch_composition():
    torch.manual_seed(0)
    model = randomize(TinyLM(13, 20, embed_dim=16, num_heads=2, num_layers=3,
                             positional="learned").to(DT), seed=2)
    idx = torch.randint(0, 13, (2, 11))
    x = model.tok_emb.weight[idx] + model.pos_emb.weight[:11]  # (B, T, E)
    for block in model.blocks:
        x = torch_block(block)(x)[0]
    x = F.layer_norm(x, (16,), model.ln_f.weight, model.ln_f.bias)
    assert_close(model(idx), x @ model.head.weight.T, "TinyLM logits vs torch layers")


def small_model(positional, seed=0):
    torch.manual_seed(seed)
    return randomize(TinyLM(17, 24, embed_dim=24, num_heads=3, num_layers=2,
                            positional=positional).to(DT), seed=seed).eval()


@pytest.mark.parametrize("positional", POSITIONAL)
def test_kv_cache_generation_equals_full_recomputation(positional):
    model = small_model(positional)
    prompt = torch.randint(0, 17, (3, 5))
    cached, cached_logits = generate(model, prompt, 9, use_cache=True)
    full, full_logits = generate(model, prompt, 9, use_cache=False)
    assert torch.equal(cached, full), "cached and recomputed generation chose different tokens"
    assert cached.shape == (3, 14)
    assert cached_logits.shape == (3, 9, 17)
    assert_close(cached_logits, full_logits, f"logits at every step ({positional})")
    # and one forward pass over the final sequence predicts the same at every position
    with torch.no_grad():
        once = model(cached[:, :-1])[:, 4:]  # (B, 9, V): the positions that chose a new token
    assert_close(cached_logits, once, "cached steps vs one full pass")


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(0.8, 5, None), (1.5, None, 0.9), (1.0, None, None)])
def test_sampled_generation_draws_from_the_filtered_next_token_distribution(temperature, top_k, top_p):
    model = small_model("rope", seed=1)
    prompt = torch.randint(0, 17, (2, 3), generator=torch.Generator().manual_seed(0))
    kw = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
    cached, _ = generate(model, prompt, 8, generator=torch.Generator().manual_seed(5), **kw)
    full, _ = generate(model, prompt, 8, use_cache=False, generator=torch.Generator().manual_seed(5), **kw)
    assert torch.equal(cached, full)
    tokens, g = prompt, torch.Generator().manual_seed(5)  # the same draws, from the loop reference
    for _ in range(8):
        with torch.no_grad():
            logits = model(tokens)[:, -1]  # (B, V)
        probs = torch.tensor([sampling_distribution_loop(row, **kw) for row in logits.tolist()])
        tokens = torch.cat([tokens, torch.multinomial(probs, 1, generator=g)], dim=1)
    assert torch.equal(cached, tokens)
    assert not torch.equal(cached, generate(model, prompt, 8)[0])  # not greedy


@pytest.mark.parametrize("positional", ["rope", "learned"])
def test_chunked_prefill_uses_the_bottom_right_mask(positional):
    model = small_model(positional, seed=3)
    idx = torch.randint(0, 17, (2, 13))
    with torch.no_grad():
        full = model(idx)
        cache, parts, start = model.new_cache(), [], 0
        for n in (3, 1, 5, 4):  # chunks of T > 1 new tokens against S > T keys
            parts.append(model(idx[:, start:start + n], cache=cache))
            start += n
    assert cache.length == 13
    assert_close(torch.cat(parts, dim=1), full, "chunked logits vs one pass")


def test_causality_of_the_model():
    model = small_model("rope", seed=4)
    idx = torch.randint(0, 17, (1, 10))
    changed = idx.clone()
    changed[0, 6] = (idx[0, 6] + 1) % 17
    with torch.no_grad():
        a, b = model(idx), model(changed)
    assert torch.equal(a[:, :6], b[:, :6])
    assert (a[:, 6:] - b[:, 6:]).abs().max() > 1e-6


def test_attention_maps_are_causal_distributions():
    model = small_model("sinusoidal", seed=5)
    logits, maps = model(torch.randint(0, 17, (2, 7)), need_weights=True)
    assert logits.shape == (2, 7, 17)
    assert len(maps) == 2
    for p in maps:
        assert p.shape == (2, 3, 7, 7)
        assert_close(p.sum(-1), torch.ones(2, 3, 7, dtype=DT), "rows sum to 1")
        assert (p.triu(1) == 0).all()


def test_cache_holds_the_predicted_number_of_bytes():
    model = small_model("rope")
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.randint(0, 17, (2, 6)), cache=cache)
        model(torch.randint(0, 17, (2, 1)), cache=cache)
    assert cache.length == 7
    assert repr(cache) == "KVCache(num_layers=2, length=7)"
    assert cache.nbytes() == kv_cache_bytes(2, B=2, H=3, S=7, D=8, bytes_per_number=8)


def test_cached_attention_step_equals_the_modules_forward():
    block = randomize(TransformerBlock(12, 3).to(DT))
    x = torch.randn(2, 6, 12, dtype=DT)
    kv = LayerKV()
    first = causal_self_attention(block.attn, x[:, :4], kv=kv)[0]
    step = causal_self_attention(block.attn, x[:, 4:], kv=kv)[0]
    assert_close(torch.cat([first, step], dim=1), block.attn(x, causal=True)[0], "cached steps")


def test_reversal_batches_have_the_stated_format():
    inputs, targets, mask = make_batch(4, torch.Generator().manual_seed(0))
    assert inputs.shape == targets.shape == mask.shape == (4, 2 * LENGTH)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    assert (inputs[:, LENGTH] == SEP).all()
    assert torch.equal(targets[:, LENGTH:], inputs[:, :LENGTH].flip(1))
    assert mask.sum() == 4 * LENGTH
    assert mask[:, LENGTH:].all()


def test_a_few_training_steps_lower_the_loss():
    threads = torch.get_num_threads()
    model, losses = train(steps=25, batch_size=32, progress=False)  # on one thread
    assert len(losses) == 25
    assert torch.get_num_threads() == threads
    assert sum(losses[-5:]) / 5 < losses[0] - 0.15, losses


def test_shipped_model_reverses_digits():
    model = load_tiny_lm()
    acc = accuracy(model, n=1000, seed=2024)  # sequences never used in training
    assert acc["digits"] >= 0.99, acc
    assert acc["sequences"] >= 0.95, acc
    prompt = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6, SEP]])
    assert generate(model, prompt, LENGTH)[0][0, LENGTH + 1:].tolist() == [6, 2, 9, 5, 1, 4, 1, 3]


@pytest.mark.parametrize(
    ("call", "exc", "words"),
    [
        (lambda: TinyLM(5, 8, positional="alibi"), ValueError, ["positional", "alibi", "rope"]),
        (lambda: TinyLM(5, 4, embed_dim=8, num_heads=2)(torch.zeros(1, 5, dtype=torch.long)),
         ValueError, ["max_len=4", "0..4"]),
        (lambda: TinyLM(5, 8, embed_dim=8, num_heads=2)(torch.zeros(1, 3)), ValueError,
         ["idx", "integer", "float32"]),
        (lambda: TinyLM(5, 8, embed_dim=8, num_heads=2)(torch.zeros(1, 3, dtype=torch.long), cache=KVCache(3)),
         ValueError, ["cache", "2 layers"]),
        (lambda: TransformerBlock(10, 3), ValueError, ["embed_dim=10", "num_heads=3"]),
        (lambda: KVCache(0), ValueError, ["num_layers", "0"]),
        (lambda: LayerKV().append(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 4, 4)), ValueError,
         ["k and v", "(1, 2, 3, 4)", "(1, 2, 4, 4)"]),
        (lambda: generate(TinyLM(5, 8, embed_dim=8, num_heads=2), torch.zeros(3, dtype=torch.long), 2),
         ValueError, ["prompt", "(B, T0)", "(3,)"]),
        (lambda: causal_self_attention(nn.Linear(2, 2), torch.zeros(1, 2, 2)), TypeError, ["mha", "Linear"]),
    ],
)
def test_bad_input_names_the_argument(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for w in words:
        assert w in str(info.value), str(info.value)
