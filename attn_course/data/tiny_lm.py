"""The course's tiny trained language model: it reverses a sequence of digits (lecture 07).

The task. A sequence of ``LENGTH`` random digits, a separator, then the same digits in
reverse order::

    3 1 4 1 5 9 2 6 | 6 2 9 5 1 4 1 3          ("|" is token SEP = 10)

The model reads the tokens left to right and is trained to predict each next token, with
the loss counted only on the reversed half (the first half is random and cannot be
predicted). To reverse, the token at output position i must find the input at position
LENGTH - 1 - i: a task that needs positions, and an attention pattern (an anti-diagonal)
that is easy to see.

The weights. ``tiny_lm_reverse.pt`` (a float32 ``state_dict``) is what this script writes::

    python -m attn_course.data.tiny_lm            # under a minute on one CPU core
    python -m attn_course.data.tiny_lm --check    # retrain and compare, write nothing

Everything is seeded and the script runs single-threaded, so on the same torch version
and CPU type it reproduces the shipped tensors bit for bit; on other CPUs the last bits of
the weights may differ (different vector kernels), the accuracy does not.
``load_tiny_lm()`` loads the shipped weights in a fraction of a second.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from attn_course.cost import torch_threads
from attn_course.data import load_weights, save_or_compare
from attn_course.training import train_masked_next_token
from attn_course.transformer import TinyLM, generate

__all__ = [
    "CONFIG",
    "LENGTH",
    "SEP",
    "VOCAB",
    "accuracy",
    "load_tiny_lm",
    "make_batch",
    "new_model",
    "train",
]

LENGTH = 8  #: digits per sequence
SEP = 10  #: the separator token; digits are tokens 0-9
VOCAB = 11
WEIGHTS = "tiny_lm_reverse.pt"
#: the shipped model's sizes
CONFIG = dict(vocab_size=VOCAB, max_len=2 * LENGTH + 1, embed_dim=48, num_heads=4,
              num_layers=2, mlp_ratio=4, positional="rope")
#: the training run that produced the shipped weights
TRAIN = dict(steps=800, batch_size=128, lr=3e-3, seed=0)


def make_batch(batch_size: int, generator: torch.Generator | None = None):
    """A batch of the reversal task.

    Returns ``(inputs, targets, loss_mask)``: inputs (B, 2L) token ids (digits, SEP,
    reversed digits without the last one), targets (B, 2L) the next token at every
    position, loss_mask (B, 2L) bool, True where the target is a reversed digit.
    """
    digits = torch.randint(0, 10, (batch_size, LENGTH), generator=generator)  # (B, L)
    sep = torch.full((batch_size, 1), SEP)
    seq = torch.cat([digits, sep, digits.flip(1)], dim=1)  # (B, 2L + 1)
    inputs, targets = seq[:, :-1], seq[:, 1:]  # (B, 2L) each
    loss_mask = torch.zeros_like(targets, dtype=torch.bool)
    loss_mask[:, LENGTH:] = True  # from SEP on, every target is a reversed digit
    return inputs, targets, loss_mask


def new_model(seed: int = 0) -> TinyLM:
    """An untrained model with the shipped model's sizes (seeded initialisation)."""
    torch.manual_seed(seed)
    return TinyLM(**CONFIG)


def train(model: TinyLM | None = None, steps: int = TRAIN["steps"],
          batch_size: int = TRAIN["batch_size"], lr: float = TRAIN["lr"], seed: int = TRAIN["seed"],
          max_seconds: float | None = None, progress: bool = True, num_threads: int | None = 1):
    """Train on the reversal task with AdamW and a one-cycle learning-rate schedule.

    Stops after ``steps`` steps, or earlier once ``max_seconds`` have passed (for a
    live demonstration). ``num_threads``: torch threads while training (None: leave
    torch's setting); one is fastest for a model this small, see
    :func:`attn_course.cost.torch_threads`. Returns ``(model, losses)`` with one loss
    per step taken.
    """
    with torch_threads(num_threads):
        return _train(model, steps, batch_size, lr, seed, max_seconds, progress)


def _train(model, steps, batch_size, lr, seed, max_seconds, progress):
    model = new_model(seed) if model is None else model
    generator = torch.Generator().manual_seed(seed)
    losses = train_masked_next_token(model, lambda: make_batch(batch_size, generator), steps, lr,
                                     max_seconds=max_seconds, progress=progress)
    return model, losses


@torch.no_grad()
def accuracy(model: TinyLM, n: int = 1000, seed: int = 1234) -> dict[str, float]:
    """Greedy-decode the reversal of ``n`` fresh sequences (seeded).

    Returns the fraction of digits right (``"digits"``) and of whole sequences right
    (``"sequences"``).
    """
    generator = torch.Generator().manual_seed(seed)
    inputs, _, _ = make_batch(n, generator)
    prompt = inputs[:, :LENGTH + 1]  # (n, L + 1): digits and SEP
    tokens, _ = generate(model, prompt, LENGTH)  # (n, 2L + 1)
    expected = prompt[:, :LENGTH].flip(1)  # (n, L)
    right = tokens[:, LENGTH + 1:] == expected  # (n, L)
    return {"digits": right.float().mean().item(), "sequences": right.all(dim=1).float().mean().item()}


def load_tiny_lm() -> TinyLM:
    """The trained reversal model, in eval mode, on the CPU, float32."""
    return load_weights(TinyLM(**CONFIG), WEIGHTS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the tiny reversal model and save its weights.")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name(WEIGHTS))
    parser.add_argument("--check", action="store_true",
                        help="train, then compare with the shipped weights instead of writing them")
    args = parser.parse_args(argv)
    torch.use_deterministic_algorithms(True)  # with one thread (train's default): reproducible
    start = time.perf_counter()
    model, losses = train(**TRAIN)
    elapsed = time.perf_counter() - start
    acc = accuracy(model)
    print(f"trained {len(losses)} steps in {elapsed:.0f} s; final loss {losses[-1]:.4f}; "
          f"digits right {acc['digits']:.4f}, sequences right {acc['sequences']:.4f}")
    save_or_compare(model, args.out, load_tiny_lm(), args.check)


if __name__ == "__main__":
    main()
