import pytest
import torch
from torch import nn

from attn_course.training import train_masked_next_token


def test_loss_counts_only_masked_targets_and_falls():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(5, 8), nn.Linear(8, 5))
    inputs = torch.arange(5).repeat(4, 1)  # (B, T): learn "next = (x + 1) % 5"
    targets = (inputs + 1) % 5
    mask = torch.ones_like(inputs, dtype=torch.bool)
    mask[:, 0] = False
    targets[:, 0] = 99  # out of range: any use of an unmasked target would raise
    losses = train_masked_next_token(model, lambda: (inputs, targets, mask), steps=60, lr=0.05,
                                     progress=False)
    assert len(losses) == 60
    assert losses[-1] < 0.1 * losses[0]
    assert not model.training


def test_steps_must_be_positive():
    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        train_masked_next_token(nn.Linear(2, 2), lambda: None, steps=0, lr=0.1)
