"""The lecture 12 model: a 2-layer attention-only transformer trained to continue repeats.

The task (the "repeated random tokens" of Olsson et al., 2022). After a start token
``BOS`` come ``P`` filler tokens, then ``N`` tokens, then the same ``N`` tokens again, then
``Q`` more filler tokens; every token is drawn without replacement from 1..V-1, so no
token occurs twice except through the repeat::

    BOS  f1 .. fP   r1 r2 .. rN   r1 r2 .. rN   g1 .. gQ      (1 + P + 2N + Q = SEQ_LEN + 1)

N (``MIN_REPEAT`` .. ``MAX_REPEAT``) and P (0 .. SEQ_LEN - 2N) vary from example to
example, so no fixed position or offset tells where the copy is; the model has to find the
earlier copy of the current token and predict the token that followed it: the
induction mechanism. The loss counts only the second copy after its first token, the
only predictable targets.

The weights. ``induction_lm.pt`` (a float32 ``state_dict``) is what this script writes::

    python -m attn_course.data.induction_lm            # about a minute on one CPU core
    python -m attn_course.data.induction_lm --check    # retrain and compare, write nothing

Seeded and single-threaded (``torch.set_num_threads(1)`` while training, restored
afterwards): on the same torch version and CPU type the shipped tensors are reproduced
bit for bit; on other CPUs the last bits may differ, the accuracy does not.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from attn_course.cost import torch_threads
from attn_course.data import load_weights, save_or_compare
from attn_course.interp.model import AttnOnlyLM
from attn_course.training import train_masked_next_token

__all__ = [
    "BOS", "CONFIG", "MAX_REPEAT", "MIN_REPEAT", "SEQ_LEN", "VOCAB",
    "accuracy", "corrupt_first_copy", "induction_answers", "load_induction_lm", "make_batch",
    "new_model", "train",
]

VOCAB = 64  #: token 0 is BOS, tokens 1..63 are the random tokens
BOS = 0
SEQ_LEN = 24  #: model input length T (the sequence has SEQ_LEN + 1 tokens)
MIN_REPEAT, MAX_REPEAT = 6, 12  #: the repeated segment's length N
WEIGHTS = "induction_lm.pt"
CONFIG = dict(vocab_size=VOCAB, max_len=SEQ_LEN, embed_dim=64, num_heads=4, num_layers=2)
TRAIN = dict(steps=4000, batch_size=64, lr=3e-3, seed=0)


def make_batch(batch_size: int, generator: torch.Generator | None = None,
               repeat: int | None = None):
    """A batch of the repeat task.

    repeat: N for every example (None: drawn per example from MIN_REPEAT..MAX_REPEAT).
    Returns ``(inputs, targets, mask, starts)``: inputs and targets (B, T) token ids
    (targets are the inputs shifted by one), mask (B, T) bool, True where the target is
    predictable (second copy, after its first token), and starts (B,) the position of
    the first copy's first token (P + 1); the second copy starts N positions later.
    """
    if repeat is not None and not MIN_REPEAT <= repeat <= SEQ_LEN // 2:
        raise ValueError(f"repeat must be in {MIN_REPEAT}..{SEQ_LEN // 2}, got {repeat!r}")
    B, T = batch_size, SEQ_LEN
    if repeat is None:
        n = torch.randint(MIN_REPEAT, MAX_REPEAT + 1, (B,), generator=generator)  # (B,)
    else:
        n = torch.full((B,), repeat)
    order = torch.rand(B, VOCAB - 1, generator=generator).argsort(dim=1) + 1  # (B, V-1) distinct
    before = (torch.rand(B, generator=generator) * (T - 2 * n + 1)).long()  # (B,) filler before
    body = torch.arange(T)[None, :]  # (1, T): index of each token after BOS
    src = body - n[:, None] * (body >= (before + n)[:, None]).long()  # (B, T): 2nd copy repeats
    seq = torch.cat([torch.full((B, 1), BOS), order.gather(1, src)], dim=1)  # (B, T+1)
    inputs, targets = seq[:, :-1], seq[:, 1:]  # (B, T) each
    start = before + 1  # (B,) position of the first copy's first token
    t = torch.arange(T)[None, :]  # (1, T) input positions
    mask = (t >= (start + n)[:, None]) & (t <= (start + 2 * n - 2)[:, None])  # (B, T)
    return inputs, targets, mask, start


def corrupt_first_copy(inputs: torch.Tensor, start: torch.Tensor, repeat: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """The inputs with each first copy shuffled (the corrupted run of activation patching).

    inputs (B, T) from :func:`make_batch` with ``repeat=N``; start (B,) its starts. The
    second copy is untouched, so every token still occurs twice, but what follows each
    token in the first copy (what an induction head copies) has changed.
    """
    out = inputs.clone()
    for b in range(inputs.shape[0]):
        s = int(start[b])
        perm = torch.randperm(repeat, generator=generator)  # (N,)
        out[b, s:s + repeat] = inputs[b, s:s + repeat][perm]
    return out


def induction_answers(inputs: torch.Tensor, start: torch.Tensor, repeat: int) -> torch.Tensor:
    """(B, T): at each second-copy position, the token that followed the current token in the
    first copy (what induction predicts); -1 elsewhere and where there is none."""
    B, T = inputs.shape
    t = torch.arange(T)[None, :]  # (1, T)
    window = start[:, None] + torch.arange(repeat)[None, :]  # (B, N) first-copy positions
    first = inputs.gather(1, window)  # (B, N)
    hit = first[:, :, None] == inputs[:, None, :]  # (B, N, T): which first-copy slot matches
    j = hit.float().argmax(dim=1)  # (B, T)
    nxt = first.gather(1, (j + 1).clamp(max=repeat - 1))  # (B, T)
    second = (t >= (start + repeat)[:, None]) & (t < (start + 2 * repeat)[:, None])  # (B, T)
    ok = second & hit.any(dim=1) & (j < repeat - 1)
    return torch.where(ok, nxt, torch.full_like(nxt, -1))


def new_model(seed: int = 0) -> AttnOnlyLM:
    """An untrained model with the shipped model's sizes (seeded initialisation)."""
    torch.manual_seed(seed)
    return AttnOnlyLM(**CONFIG)


def train(model: AttnOnlyLM | None = None, steps: int = TRAIN["steps"],
          batch_size: int = TRAIN["batch_size"], lr: float = TRAIN["lr"], seed: int = TRAIN["seed"],
          progress: bool = True, num_threads: int | None = 1):
    """Train on the repeat task (AdamW, one-cycle schedule); returns ``(model, losses)``.

    num_threads: torch threads while training, restored afterwards (None: leave as is).
    """
    with torch_threads(num_threads):
        model = new_model(seed) if model is None else model
        generator = torch.Generator().manual_seed(seed)
        losses = train_masked_next_token(model, lambda: make_batch(batch_size, generator)[:3],
                                         steps, lr, progress=progress, log_every=50)
    return model, losses


@torch.no_grad()
def accuracy(model: AttnOnlyLM, n: int = 2000, seed: int = 1234, repeat: int | None = None) -> float:
    """Fraction of the predictable second-half tokens the model's argmax gets right."""
    inputs, targets, mask, _ = make_batch(n, torch.Generator().manual_seed(seed), repeat)
    pred = model(inputs).argmax(dim=-1)  # (n, T)
    return (pred == targets)[mask].float().mean().item()


def load_induction_lm() -> AttnOnlyLM:
    """The trained model, in eval mode, on the CPU, float32."""
    return load_weights(AttnOnlyLM(**CONFIG), WEIGHTS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the induction model and save its weights.")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name(WEIGHTS))
    parser.add_argument("--check", action="store_true",
                        help="train, then compare with the shipped weights instead of writing them")
    args = parser.parse_args(argv)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()
    model, losses = train(**TRAIN)
    elapsed = time.perf_counter() - start
    print(f"trained {len(losses)} steps in {elapsed:.0f} s; final loss {losses[-1]:.4f}; "
          f"second-half accuracy {accuracy(model):.4f}")
    save_or_compare(model, args.out, load_induction_lm(), args.check)


if __name__ == "__main__":
    main()
