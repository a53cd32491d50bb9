"""The five trained recall models of lecture 13: one per mixer, same size, same budget.

Each is a two-layer :class:`~attn_course.recall.model.RecallLM` of width E = ``WIDTH``
trained on multi-query associative recall (:func:`~attn_course.recall.data.mqar_batch`)
with the task and budget of :mod:`attn_course.recall.train` (``TASK``: P = 8 pairs,
T = 64, V = 64; ``TRAIN``: 400 steps of 64 sequences, AdamW, one-cycle lr 1e-2), from
seed 0. The weights, ``recall_<mixer>.pt`` (float32 ``state_dict`` files, about
100 KiB each), are what this script writes::

    python -m attn_course.data.recall_models            # about 2 minutes on one CPU core
    python -m attn_course.data.recall_models --check    # retrain and compare, write nothing
    python -m attn_course.data.recall_models --mixers linear --check   # one of them

Everything is seeded and runs single-threaded, so on the same torch version and CPU
type the shipped tensors are reproduced bit for bit; on other CPUs the last bits may
differ (other vector kernels), the accuracy hardly. (Measured: ``--check`` retrained all
five in 126 s, attention 31 s, sliding window 18 s, linear attention 18 s, gated
convolution 15 s, selective SSM 44 s, and found them identical to the shipped files.) The
shipped models are the sweep's seed-0 runs at E = 32 on this task
(``benchmarks/recall_study.py``). ``load_recall_model(mixer)`` loads one in a fraction of
a second.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from attn_course.data import load_weights, save_or_compare
from attn_course.recall.mixers import MIXERS
from attn_course.recall.model import RecallLM
from attn_course.recall.train import TASK, TRAIN, mqar_accuracy, new_model, train_mqar

__all__ = ["SEED", "WIDTH", "load_recall_model", "train"]

WIDTH = 32  #: E of the shipped models
SEED = 0
OPTIONS = {"sliding_window": {"window": 16}}  #: mixer options besides the defaults


def _filename(mixer: str) -> str:
    if mixer not in MIXERS:
        raise ValueError(f"mixer must be one of {sorted(MIXERS)}, got {mixer!r}")
    return f"recall_{mixer}.pt"


def _model(mixer: str, seed: int = SEED) -> RecallLM:
    return new_model(mixer, WIDTH, TASK["vocab_size"], seed, **OPTIONS.get(mixer, {}))


def train(mixer: str, seed: int = SEED, progress: bool = True) -> tuple[RecallLM, list[float]]:
    """Train the shipped model of kind ``mixer`` from scratch; return ``(model, losses)``."""
    model = _model(mixer, seed)
    losses = train_mqar(model, TASK["n_pairs"], TASK["seq_len"], seed=seed, progress=progress,
                        num_threads=1, **TRAIN)
    return model, losses


def load_recall_model(mixer: str) -> RecallLM:
    """The trained model of kind ``mixer`` (a key of ``MIXERS``), in eval mode, CPU, float32."""
    return load_weights(_model(mixer), _filename(mixer))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the five recall models and save their weights.")
    parser.add_argument("--mixers", nargs="+", default=list(MIXERS), choices=list(MIXERS))
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent)
    parser.add_argument("--check", action="store_true",
                        help="train, then compare with the shipped weights instead of writing them")
    args = parser.parse_args(argv)
    torch.use_deterministic_algorithms(True)  # with one thread (train's setting): reproducible
    for mixer in args.mixers:
        start = time.perf_counter()
        model, losses = train(mixer, progress=False)
        elapsed = time.perf_counter() - start
        acc = mqar_accuracy(model, TASK["n_pairs"], TASK["seq_len"])
        print(f"{mixer}: {len(losses)} steps in {elapsed:.0f} s; final loss {losses[-1]:.4f}; "
              f"MQAR accuracy {acc:.4f}")
        shipped = load_recall_model(mixer) if args.check else None
        save_or_compare(model, args.out_dir / _filename(mixer), shipped, args.check)


if __name__ == "__main__":
    main()
