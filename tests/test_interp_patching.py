import pytest
import torch

from attn_course.interp.hooks import run_with_cache
from attn_course.interp.model import AttnOnlyLM
from attn_course.interp.patching import (
    ablate,
    ablation_hook,
    logit_diff,
    patch,
    patching_sweep,
    restored_fraction,
)
from attn_course.testing import assert_close
from attn_course.transformer import TinyLM


def attn_only():
    torch.manual_seed(1)
    return AttnOnlyLM(vocab_size=11, max_len=12, embed_dim=16, num_heads=4, num_layers=2).double().eval()


def rope_lm():
    torch.manual_seed(0)
    return TinyLM(vocab_size=11, max_len=12, embed_dim=24, num_heads=3, num_layers=2).double().eval()


MODELS = {"attn-only": attn_only, "tinylm-rope": rope_lm}


def pair(B=3, T=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, 11, (B, T), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2] = (clean[:, 2] + 1 + torch.randint(0, 9, (B,), generator=g)) % 11  # differs at 2
    return clean, corrupted


def last_logit_metric(good, bad):
    return lambda logits: logit_diff(logits[:, -1], good, bad).mean()


def test_logit_diff_matches_indexing():
    logits = torch.randn(2, 3, 7, dtype=torch.float64)
    good, bad = torch.tensor([[1, 2, 3], [4, 5, 6]]), torch.tensor([[0, 0, 0], [1, 1, 1]])
    expected = torch.tensor([[logits[b, t, good[b, t]] - logits[b, t, bad[b, t]] for t in range(3)]
                             for b in range(2)], dtype=torch.float64)
    assert_close(logit_diff(logits, good, bad), expected, "logit_diff")
    with pytest.raises(ValueError, match="good and bad must have shape"):
        logit_diff(logits, good[0], bad)


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
@pytest.mark.parametrize("name", ["blocks.0.attn.hook_z", "blocks.1.attn.hook_probs",
                                  "blocks.1.attn.hook_k"])
def test_patching_a_run_with_its_own_activations_changes_nothing(make, name):
    model = make()
    clean, _ = pair()
    out, cache = run_with_cache(model, clean)
    for head, pos in ((None, None), (1, None), (2, 5)):
        assert torch.equal(patch(model, clean, cache, name, head=head, pos=pos), out)


@pytest.mark.parametrize("name", ["hook_embed", "blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"])
def test_patching_the_whole_residual_stream_restores_100_percent(name):
    model = attn_only()
    clean, corrupted = pair()
    good, bad = clean[:, -1], (clean[:, -1] + 1) % 11
    metric = last_logit_metric(good, bad)
    out, cache = run_with_cache(model, clean)
    with torch.no_grad():
        m_corr = float(metric(model(corrupted)))
    patched = patch(model, corrupted, cache, name)
    assert torch.equal(patched, out)
    assert restored_fraction(float(metric(patched)), float(metric(out)), m_corr) == 1.0


def test_patching_every_head_of_every_layer_restores_100_percent():
    model = attn_only()
    clean, corrupted = pair()
    out, cache = run_with_cache(model, clean)
    from attn_course.interp.hooks import hooks
    from attn_course.interp.patching import patch_hook
    names = ["hook_embed"] + [f"blocks.{i}.attn.hook_z" for i in range(2)]
    with torch.no_grad(), hooks(model, [(n, patch_hook(cache[n], n)) for n in names]):
        patched = model(corrupted)
    assert_close(patched, out, "all heads patched")


def test_patching_one_position_changes_only_that_query_and_later():
    model = attn_only()
    clean, corrupted = pair()
    _, cache = run_with_cache(model, clean)
    with torch.no_grad():
        base = model(corrupted)
    patched = patch(model, corrupted, cache, "blocks.1.attn.hook_z", head=0, pos=5)
    assert torch.equal(patched[:, :5], base[:, :5])  # layer 1 is the last: only position 5 moves
    assert torch.equal(patched[:, 6:], base[:, 6:])
    assert not torch.equal(patched[:, 5], base[:, 5])


def test_zero_ablation_equals_removing_the_heads_out_proj_columns():
    model = attn_only()
    clean, _ = pair()
    ablated = ablate(model, clean, "blocks.0.attn.hook_z", head=2, mode="zero")
    surgery = attn_only()
    D = 16 // 4
    with torch.no_grad():
        surgery.blocks[0].attn.out_proj.weight[:, 2 * D:3 * D] = 0  # (E, H*D): head 2's columns
        expected = surgery(clean)
    assert_close(ablated, expected, "zero-ablated logits")


def test_mean_ablation_over_a_single_reference_is_the_reference_itself():
    model = attn_only()
    clean, corrupted = pair(B=1)
    out, cache = run_with_cache(model, clean)
    name = "blocks.1.attn.hook_z"
    # a batch that is this one input: its mean is itself, so nothing changes
    assert torch.equal(ablate(model, clean, name, 1, "mean", cache[name]), out)
    ref = torch.cat([cache[name], cache[name] * 3])  # its mean is twice the activation
    _, c2 = run_with_cache(model, clean, names=[name],
                           extra_hooks=[(name, ablation_hook(name, 1, "mean", ref))])
    assert_close(c2[name][:, 1], 2 * cache[name][:, 1], "mean-ablated head")
    assert torch.equal(c2[name][:, [0, 2, 3]], cache[name][:, [0, 2, 3]])


def test_patching_sweep_matches_single_patches():
    model = attn_only()
    clean, corrupted = pair()
    metric = last_logit_metric(clean[:, -1], (clean[:, -1] + 3) % 11)
    sweep = patching_sweep(model, clean, corrupted, metric)
    assert sweep.shape == (2, 4)
    out, cache = run_with_cache(model, clean)
    with torch.no_grad():
        m_clean, m_corr = float(metric(out)), float(metric(model(corrupted)))
    one = float(metric(patch(model, corrupted, cache, "blocks.1.attn.hook_z", head=3)))
    assert sweep[1, 3].item() == pytest.approx((one - m_corr) / (m_clean - m_corr), abs=1e-12)
    per_pos = patching_sweep(model, clean, corrupted, metric, positions=range(8))
    assert per_pos.shape == (2, 4, 8)
    assert torch.all(per_pos[1, :, :7] == 0)  # layer 1 at earlier positions cannot reach the last


def test_errors_name_the_problem():
    model = attn_only()
    clean, _ = pair()
    _, cache = run_with_cache(model, clean)
    with pytest.raises(ValueError, match="clean_cache has no"):
        patch(model, clean, {}, "blocks.0.attn.hook_z")
    with pytest.raises(ValueError, match="not split into heads"):
        patch(model, clean, cache, "hook_embed", head=0)
    with pytest.raises(ValueError, match="same shape"):
        patch(model, clean[:, :5], cache, "blocks.0.attn.hook_z", head=0)
    with pytest.raises(ValueError, match="mode must be"):
        ablation_hook("blocks.0.attn.hook_z", 0, "median")
    with pytest.raises(ValueError, match="needs reference"):
        ablation_hook("blocks.0.attn.hook_z", 0, "mean")
    with pytest.raises(ValueError, match="nothing to restore"):
        restored_fraction(1.0, 2.0, 2.0)


def test_one_position_per_example_equals_patching_each_example_alone():
    model = attn_only()
    clean, corrupted = pair()
    _, cache = run_with_cache(model, clean)
    pos = torch.tensor([3, 6, 1])
    both = patch(model, corrupted, cache, "blocks.0.attn.hook_z", head=1, pos=pos)
    for b in range(3):
        one = patch(model, corrupted, cache, "blocks.0.attn.hook_z", head=1, pos=int(pos[b]))
        assert torch.equal(both[b], one[b])
    with pytest.raises(ValueError, match="one position per example"):
        patch(model, corrupted, cache, "blocks.0.attn.hook_z", head=1, pos=pos[:2])
