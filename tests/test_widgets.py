import math

import numpy as np
import pytest
import torch
from torch import nn

from attn_course.multihead import MultiHeadAttention
from attn_course.softmax import entropy
from attn_course.testing import assert_close
from attn_course.widgets import (
    AttentionExplorer,
    HeadViewer,
    SoftmaxTemperature,
    capture_attention,
    explorer_state,
    temperature_state,
)

PNG = b"\x89PNG"


# --- compute layers, no widgets -------------------------------------------------------

def test_temperature_state_against_direct_formula():
    s = temperature_state(temperature=0.5, d_k=16, scaled=True, n_keys=6, seed=3)
    rng = np.random.default_rng(3)
    q, k = rng.standard_normal(16), rng.standard_normal((6, 16))
    logits = (k @ q) / 4.0 / 0.5
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert_close(s["probs"], expected, "probs")
    assert_close(np.float64(s["entropy"]), entropy(expected), "entropy")


def test_unscaled_scores_saturate_as_d_k_grows_scaled_do_not():
    unscaled = [temperature_state(d_k=d, scaled=False)["max_prob"] for d in (1, 16, 1024)]
    scaled = [temperature_state(d_k=d, scaled=True)["max_prob"] for d in (1, 16, 1024)]
    assert unscaled[-1] > 0.99
    assert max(scaled) < 0.9
    assert temperature_state(temperature=100.0)["entropy"] > 0.99 * math.log(8)


def test_explorer_state_masks_against_manual_softmax():
    scores = np.arange(12, dtype=float).reshape(3, 4) / 3
    st = explorer_state(scores, query=1, causal=True, n_padding=1)
    row = np.exp(scores[1, :2] - scores[1, :2].max())
    assert_close(st["row"], np.r_[row / row.sum(), 0.0, 0.0], "causal row 1")
    st = explorer_state(scores, query=0, causal=False, n_padding=4)
    assert (st["probs"] == 0).all()  # everything padded: fully masked rows are zero


def test_capture_attention_matches_mha_and_leaves_output_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(MultiHeadAttentionBlock(), MultiHeadAttentionBlock())
    x = torch.randn(2, 5, 8)
    plain = model(x)
    probs = capture_attention(model, x)
    assert len(probs) == 2
    assert probs[0].shape == (2, 2, 5, 5)
    assert torch.equal(model(x), plain)
    _, direct = model[0].attn(x, need_weights=True)
    assert_close(probs[0], direct, "captured layer 0")


class MultiHeadAttentionBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = MultiHeadAttention(8, 2)

    def forward(self, x):
        out, none = self.attn(x)
        assert none is None  # the hook must not hand weights to a caller that did not ask
        return x + out


# --- widgets --------------------------------------------------------------------------

def test_softmax_temperature_widget_redraws_on_change():
    w = SoftmaxTemperature()
    first, n = w.image.value, w.redraws
    assert bytes(first).startswith(PNG)
    w.d_k.value = 1024
    w.scaled.value = False
    assert w.redraws == n + 2
    assert w.image.value != first
    assert "saturated" in w.readout.value
    w.temperature.value = 1e6  # beyond the slider's range: clamped to its maximum
    assert w.temperature.value == pytest.approx(100.0)


def test_attention_explorer_widget_selects_and_masks():
    rng = np.random.default_rng(0)
    tokens = ["the", "cat", "sat", "down"]
    w = AttentionExplorer(tokens, rng.standard_normal((4, 4)))
    first = w.image.value
    w.query.value = 2
    assert w.image.value != first
    assert_close(w.state["row"], explorer_state(w.scores, 2)["row"], "row follows the query")
    w.causal.value = True
    assert (w.state["row"][3:] == 0).all()
    w.key.value = 3
    assert "(masked)" in w.readout.value
    w.padding.value = 99  # clamped to the slider's maximum S - 1
    assert w.padding.value == 3
    with pytest.raises(Exception):  # noqa: B017 - traitlets' TraitError for a missing option
        w.query.value = 7


def test_head_viewer_layers_and_heads():
    probs = torch.softmax(torch.randn(2, 4, 5, 5), -1)  # (L, H, T, S)
    w = HeadViewer(probs, list("abcde"))
    grid = w.image.value
    w.head.value = 2
    single = w.image.value
    assert single != grid
    w.layer.value = 1
    assert w.head.value == -1  # back to the grid of the new layer
    assert w.image.value not in (grid, single)


def test_head_viewer_on_the_lecture_07_model_matches_its_own_maps():
    from attn_course.data.tiny_lm import load_tiny_lm

    model = load_tiny_lm()
    idx = torch.tensor([[1, 2, 3, 4, 5]])
    _, maps = model(idx, need_weights=True)
    probs = capture_attention(model, idx)
    assert len(probs) == len(model.blocks) == len(maps)
    for ours, ref in zip(probs, maps, strict=True):
        assert_close(ours, ref, "captured map")
    w = HeadViewer.from_model(model, idx, tokens=list("abcde"))
    assert len(w.layer.options) == len(model.blocks)


def test_capture_attention_refuses_a_model_that_skips_its_layers():
    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = MultiHeadAttention(4, 1)

        def forward(self, x):
            return x

    with pytest.raises(ValueError, match="ran without calling"):
        capture_attention(Skips(), torch.zeros(1, 2, 4))


def test_head_viewer_from_torch_weights_module():
    mha = MultiHeadAttention.from_torch(nn.MultiheadAttention(8, 4, batch_first=True))
    w = HeadViewer.from_model(mha, torch.randn(1, 6, 8), tokens=list("abcdef"))
    assert w.head.options[-1] == ("3", 3)


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: AttentionExplorer(["a", "b"], np.zeros((3, 3))), ["query_tokens has 2", "T=3"]),
        (lambda: AttentionExplorer(["a"], np.full((1, 1), np.nan)), ["scores must be finite", "1 NaN"]),
        (lambda: AttentionExplorer(["a", "b"], np.zeros((2, 2)), ["x"]), ["key_tokens has 1", "S=2"]),
        (lambda: HeadViewer(np.zeros((2, 3, 3)), list("ab")), ["(T, S) = (3, 3)", "2 tokens"]),
        (lambda: HeadViewer([np.full((1, 2, 2), np.nan)], list("ab")), ["layer 0", "NaN"]),
        (lambda: capture_attention(nn.Linear(2, 2), torch.zeros(2)),
         ["no MultiHeadAttention", "Linear"]),
        (lambda: temperature_state(temperature=0), ["temperature", "0"]),
        (lambda: temperature_state(d_k=0), ["d_k", "0"]),
        (lambda: explorer_state(np.zeros((2, 2)), query=5), ["query must be in [0, 2)", "5"]),
    ],
)
def test_bad_input_is_refused_clearly(call, words):
    with pytest.raises(ValueError) as info:
        call()
    for w in words:
        assert w in str(info.value), str(info.value)
