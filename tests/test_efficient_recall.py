import pytest
import torch

from attn_course.efficient.recall import make_pairs, recall_accuracy, recall_curve
from attn_course.testing import assert_close


def test_pairs_are_unit_keys_and_gaussian_values():
    keys, values = make_pairs(50, 16, torch.Generator().manual_seed(0))
    assert keys.shape == values.shape == (50, 16)
    assert_close(keys.norm(dim=-1), torch.ones(50), "unit keys")


def test_sharp_softmax_recalls_everything_and_a_d_by_d_memory_fills_up():
    assert recall_accuracy("softmax", 256, dim=32, scale=16.0) == 1.0
    memory = {"feature_map": "identity", "normalize": False}
    small, large = recall_curve(["linear"], [8, 512], dim=32, options={"linear": memory})["linear"]
    assert small == 1.0
    assert large < 0.5, large


def test_sliding_window_recalls_exactly_the_pairs_inside_its_window():
    w, N, Q = 16, 64, 64
    assert recall_accuracy("sliding_window", 12, dim=32, window=w, scale=16.0) == 1.0
    acc = recall_accuracy("sliding_window", N, dim=32, n_queries=Q, window=w, scale=16.0, seed=5)
    # the query token at position N sees positions N - w + 1 .. N: the last w - 1 pairs
    g = torch.Generator().manual_seed(5)
    make_pairs(N, 32, g)  # same draws as recall_accuracy, to recover which pairs were asked
    asked = torch.randperm(N, generator=g)[:Q]
    inside = (asked > N - w).float().mean().item()
    assert inside == pytest.approx((w - 1) / N)
    assert acc == pytest.approx(inside)
