import pytest
import torch
import torch.nn.functional as F

from attn_course.interp.hooks import hook_names, hook_points, hooks, run_with_cache
from attn_course.interp.model import AttnOnlyLM
from attn_course.multihead import MultiHeadAttention, merge_heads, split_heads
from attn_course.positional import apply_rope
from attn_course.testing import assert_close
from attn_course.transformer import TinyLM, generate


def tiny_lm(positional):
    torch.manual_seed(0)
    return TinyLM(vocab_size=13, max_len=16, embed_dim=24, num_heads=3, num_layers=2,
                  positional=positional).eval()


def attn_only():
    torch.manual_seed(1)
    return AttnOnlyLM(vocab_size=11, max_len=12, embed_dim=16, num_heads=4, num_layers=2).eval()


MODELS = {
    "tinylm-rope": lambda: tiny_lm("rope"),  # the causal_self_attention path
    "tinylm-learned": lambda: tiny_lm("learned"),  # MultiHeadAttention.forward path
    "attn-only": attn_only,
}


def tokens(vocab, B=2, T=9, seed=0):
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def noop(t, name):
    return None


def identity(t, name):
    return t


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
@pytest.mark.parametrize("fn", [noop, identity])
def test_hooks_that_do_nothing_leave_outputs_exactly_unchanged(make, fn):
    model = make()
    idx = tokens(model.config["vocab_size"])
    with torch.no_grad():
        before = model(idx)
        with hooks(model, [(n, fn) for n in hook_names(model)]):
            during = model(idx)
    assert torch.equal(before, during)


def test_hooks_do_not_change_cached_generation():
    model = tiny_lm("rope")
    prompt = tokens(13, T=4)
    plain = generate(model, prompt, 6)[0]
    seen = []
    with hooks(model, [("blocks.1.attn.hook_k", lambda t, n: seen.append(t.shape[2]))]):
        hooked = generate(model, prompt, 6)[0]
    assert torch.equal(plain, hooked)
    assert seen == [4, 5, 6, 7, 8, 9]  # the KV-cache path reaches the hook: S grows by one


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_cached_probs_equal_the_maps_the_model_returns(make):
    model = make()
    idx = tokens(model.config["vocab_size"])
    with torch.no_grad():
        _, maps = model(idx, need_weights=True)
    _, cache = run_with_cache(model, idx)
    for i, probs in enumerate(maps):
        assert torch.equal(cache[f"blocks.{i}.attn.hook_probs"], probs)


def test_cache_matches_an_independent_recomputation_with_rope():
    """q, k after RoPE, scores, probs and z, recomputed from the weights with torch's ops."""
    model = tiny_lm("rope").double()
    idx = tokens(13, T=7)
    _, cache = run_with_cache(model, idx)
    block, attn = model.blocks[0], model.blocks[0].attn
    x = block.ln1(model.tok_emb(idx))  # (B, T, E)
    q = apply_rope(split_heads(attn.q_proj(x), 3), range(7), 10000.0)  # (B, H, T, D)
    k = apply_rope(split_heads(attn.k_proj(x), 3), range(7), 10000.0)  # (B, H, T, D)
    v = split_heads(attn.v_proj(x), 3)  # (B, H, T, D)
    z = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
    scores = (q @ k.transpose(-1, -2)) / (q.shape[-1] ** 0.5)
    scores = scores.masked_fill(torch.ones(7, 7, dtype=torch.bool).triu(1), float("-inf"))
    hidden = torch.isinf(scores)
    assert torch.equal(torch.isinf(cache["blocks.0.attn.hook_scores"]), hidden)
    for name, expected in (("q", q), ("k", k), ("v", v), ("probs", scores.softmax(-1)), ("z", z)):
        assert_close(cache[f"blocks.0.attn.hook_{name}"], expected, name)
    assert_close(cache["blocks.0.attn.hook_scores"][~hidden], scores[~hidden], "scores")


def test_names_cover_every_attention_layer():
    model = attn_only()
    names = hook_names(model)
    assert names[0] == "hook_embed"
    for i in range(2):
        for p in ("q", "k", "v", "scores", "probs", "z"):
            assert f"blocks.{i}.attn.hook_{p}" in names
        assert f"blocks.{i}.hook_resid_pre" in names


def test_replacing_a_head_output_equals_recomputing_out_proj_by_hand():
    torch.manual_seed(0)
    mha = MultiHeadAttention(12, 3).double()
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    _, cache = run_with_cache(mha, x)
    z = cache["hook_z"].clone()
    z[:, 1] = 0.5
    expected = F.linear(merge_heads(z), mha.out_proj.weight, mha.out_proj.bias)
    with hooks(mha, [("hook_z", lambda t, n: z)]):
        out, _ = mha(x)
    assert_close(out, expected, "out with head 1 replaced")


def test_hooks_are_removed_when_the_block_raises():
    model = attn_only()
    added = []

    def body():
        with hooks(model, [("blocks.0.attn.hook_q", noop)]):
            added.append(len(hook_points(model)["blocks.0.attn.hook_q"]._forward_hooks))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        body()
    assert added == [1]
    assert all(not p._forward_hooks for p in hook_points(model).values())


def test_hooks_are_removed_when_a_hook_raises():
    model = attn_only()

    def bad(t, name):
        raise KeyError("inside the hook")

    with pytest.raises(KeyError, match="inside the hook"), hooks(model, [("blocks.1.attn.hook_z", bad)]):
        model(tokens(11))
    assert all(not p._forward_hooks for p in hook_points(model).values())


def test_a_bad_name_adds_no_hook_and_names_the_choices():
    model = attn_only()
    with pytest.raises(ValueError, match="no hook point named 'blocks.0.attn.hook_zz'"):
        with hooks(model, [("blocks.0.attn.hook_q", noop), ("blocks.0.attn.hook_zz", noop)]):
            pass
    assert all(not p._forward_hooks for p in hook_points(model).values())


def test_a_hook_returning_the_wrong_shape_is_refused():
    model = attn_only()
    with pytest.raises(ValueError, match="must return None or a tensor of shape"):
        with hooks(model, [("blocks.0.attn.hook_z", lambda t, n: t[:, :1])]):
            model(tokens(11))


def test_hooks_rejects_non_pairs():
    with pytest.raises(TypeError, match="pairs"):
        with hooks(attn_only(), ["blocks.0.attn.hook_z"]):
            pass
