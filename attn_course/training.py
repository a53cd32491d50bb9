"""Training the course's small models: one loop for every next-token task.

AdamW (weight decay 0.01) with a one-cycle learning-rate schedule (10% warm-up), and a
cross-entropy loss over the target positions a batch's mask selects, so that only the
predictable tokens count (the reversed half of lecture 07's task, the repeated half of
lecture 12's). Deterministic for a given model, batch stream and thread count.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # inputs (B, T), targets (B, T), mask (B, T)


def train_masked_next_token(model: nn.Module, next_batch: Callable[[], Batch], steps: int,
                            lr: float, max_seconds: float | None = None, progress: bool = True,
                            log_every: int = 25) -> list[float]:
    """Train ``model`` in place for ``steps`` steps (or until ``max_seconds``).

    next_batch: returns (inputs, targets, mask); the loss is the cross-entropy of
    ``model(inputs)[mask]`` against ``targets[mask]``. Returns one loss per step taken,
    with a tqdm progress bar showing the latest loss. Leaves the model in eval mode.
    """
    from tqdm.auto import tqdm

    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    loss_fn = nn.CrossEntropyLoss()
    losses: list[float] = []
    start = time.perf_counter()
    model.train()
    bar = tqdm(range(steps), desc="training", disable=not progress)
    for step in bar:
        inputs, targets, mask = next_batch()
        logits = model(inputs)  # (B, T, V)
        loss = loss_fn(logits[mask], targets[mask])  # only the masked-in targets count
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % log_every == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    bar.close()
    model.eval()
    return losses
