"""Training and scoring the recall models on MQAR (lecture 13 and ``benchmarks/recall_study.py``).

One run = a fresh :class:`~attn_course.recall.model.RecallLM` (seeded), ``steps`` steps
of :func:`attn_course.training.train_masked_next_token` on fresh MQAR batches (seeded),
then accuracy on a held-out set of sequences drawn with another seed. Every model gets
the same budget (steps, batch size, learning rate), so the comparison is per training
budget, as in Zoology's sweeps (which also tune the learning rate per model; this
study does not have the time to).
"""

from __future__ import annotations

import time

import torch

from attn_course.cost import torch_threads
from attn_course.recall.data import mqar_batch
from attn_course.recall.model import RecallLM
from attn_course.training import train_masked_next_token

__all__ = ["TASK", "TRAIN", "mqar_accuracy", "new_model", "train_mqar"]

#: the MQAR task of the lecture and of the shipped models
TASK = dict(n_pairs=8, seq_len=64, vocab_size=64)
#: the training budget of one run
TRAIN = dict(steps=400, batch_size=64, lr=1e-2)
EVAL_SEED = 10_000  #: held-out sequences are drawn from this seed (training uses ``seed``)


def new_model(mixer: str, width: int, vocab_size: int = TASK["vocab_size"], seed: int = 0,
              **options) -> RecallLM:
    """An untrained two-layer model with mixer ``mixer`` and width E (seeded)."""
    torch.manual_seed(seed)
    return RecallLM(mixer, vocab_size, width, **options)


def train_mqar(model: RecallLM, n_pairs: int = TASK["n_pairs"], seq_len: int = TASK["seq_len"],
               steps: int = TRAIN["steps"], batch_size: int = TRAIN["batch_size"],
               lr: float = TRAIN["lr"], seed: int = 0, max_seconds: float | None = None,
               progress: bool = True, num_threads: int | None = 1) -> list[float]:
    """Train ``model`` in place on MQAR batches drawn from ``seed``; return the losses.

    The vocabulary is the model's. num_threads: torch threads while training (one is
    fastest for models this small; None leaves torch's setting).
    """
    generator = torch.Generator().manual_seed(seed)
    V = model.vocab_size
    with torch_threads(num_threads):
        return train_masked_next_token(
            model, lambda: mqar_batch(batch_size, n_pairs, seq_len, V, generator), steps, lr,
            max_seconds=max_seconds, progress=progress)


@torch.no_grad()
def mqar_accuracy(model: RecallLM, n_pairs: int = TASK["n_pairs"], seq_len: int = TASK["seq_len"],
                  n: int = 500, seed: int = EVAL_SEED) -> float:
    """Fraction of asked keys whose value is the model's most likely next token.

    Scored on ``n`` sequences drawn from ``seed`` (n * n_pairs answers).
    """
    generator = torch.Generator().manual_seed(seed)
    inputs, targets, mask = mqar_batch(n, n_pairs, seq_len, model.vocab_size, generator)
    was_training = model.training
    model.eval()
    right = []
    for i in range(0, n, 250):  # in parts, to bound memory
        logits = model(inputs[i:i + 250])  # (b, T, V)
        right.append((logits.argmax(dim=-1) == targets[i:i + 250])[mask[i:i + 250]])
    model.train(was_training)
    return torch.cat(right).float().mean().item()


def run(mixer: str, width: int, n_pairs: int, seq_len: int, vocab_size: int, seed: int,
        steps: int = TRAIN["steps"], batch_size: int = TRAIN["batch_size"],
        lr: float = TRAIN["lr"], progress: bool = False, **options) -> dict:
    """One run of the study: build, train, score. Returns a row of results."""
    model = new_model(mixer, width, vocab_size, seed, **options)
    start = time.perf_counter()
    losses = train_mqar(model, n_pairs, seq_len, steps, batch_size, lr, seed, progress=progress)
    seconds = time.perf_counter() - start
    return dict(mixer=mixer, width=width, seq_len=seq_len, n_pairs=n_pairs,
                vocab_size=vocab_size, seed=seed, steps=len(losses), batch_size=batch_size,
                lr=lr, state_size=model.state_size(seq_len),
                params=sum(p.numel() for p in model.parameters()),
                final_loss=sum(losses[-20:]) / len(losses[-20:]),
                accuracy=mqar_accuracy(model, n_pairs, seq_len), train_seconds=seconds)
