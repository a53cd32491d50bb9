"""Synthetic recall tasks: MQAR, selective copying and induction (lecture 13).

Every function returns one batch ``(inputs, targets, mask)`` in the format of
:func:`attn_course.training.train_masked_next_token`: inputs (B, T) token ids, targets
(B, T) the next token at every position, mask (B, T) bool, True where the target counts
(the positions where the answer is determined by the context). Token 0 is a filler
token in every task. A ``torch.Generator`` makes a batch reproducible.

- :func:`mqar_batch`, multi-query associative recall (Arora et al., "Zoology: Measuring
  and Improving Recall in Efficient Language Models", 2023, section 3): P key-value
  pairs, then the P keys asked again in random order at random places; after each
  asked key the model must produce its value.
- :func:`selective_copy_batch`, selective copying (Gu and Dao, "Mamba", 2023, section
  3.1): a few coloured tokens scattered among fillers must be repeated, in order, after
  a separator.
- :func:`induction_batch`, induction heads (Olsson et al., 2022; Mamba, section 3.1):
  random tokens with one trigger token followed by an answer; at the end the trigger
  comes again and the answer must follow.

Vocabulary layout of MQAR (V = ``vocab_size``): 0 the filler, keys 1 .. V/2 - 1, values
V/2 .. V - 1, so a key and a value are never the same token.
"""

from __future__ import annotations

import numbers

import torch

__all__ = [
    "FILLER",
    "induction_batch",
    "mqar_batch",
    "mqar_layout",
    "selective_copy_batch",
]

FILLER = 0  #: the filler token of every task


def _int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def mqar_layout(vocab_size: int) -> tuple[range, range]:
    """The key tokens and the value tokens of MQAR for a vocabulary of ``vocab_size``."""
    V = _int("vocab_size", vocab_size, 6)
    return range(1, V // 2), range(V // 2, V)


def _shuffled(batch: int, n: int, generator) -> torch.Tensor:
    """(batch, n): a random permutation of 0 .. n-1 in every row."""
    return torch.rand(batch, n, generator=generator).argsort(dim=1)


def mqar_batch(batch_size: int, n_pairs: int, seq_len: int, vocab_size: int,
               generator: torch.Generator | None = None):
    """A batch of multi-query associative recall.

    Each row is a sequence of ``seq_len + 1`` tokens::

        k1 v1 k2 v2 ... kP vP | 0 0 k2 v2 0 0 0 0 k1 v1 0 0 ... kP vP 0

    The first 2P tokens are P pairs with distinct keys (and values drawn freely). The
    rest holds the P keys again, in random order, each followed by its value, at random
    even offsets after the pairs; every other token is the filler 0. inputs are the first
    ``seq_len`` tokens, targets the last ``seq_len`` (the next token); mask is True at the
    P positions whose input is an asked key (the target there is its value).

    Needs ``seq_len >= 4 * n_pairs`` (room for the pairs and the asked keys) and at
    least ``n_pairs`` key tokens (``vocab_size >= 2 * n_pairs + 2``). Returns
    ``(inputs, targets, mask)``, each (B, T) with T = ``seq_len``.
    """
    B = _int("batch_size", batch_size, 1)
    P = _int("n_pairs", n_pairs, 1)
    T = _int("seq_len", seq_len, 4)
    keys_range, values_range = mqar_layout(vocab_size)
    if len(keys_range) < P:
        raise ValueError(
            f"vocab_size={vocab_size} has {len(keys_range)} key tokens, fewer than "
            f"n_pairs={P}: use vocab_size >= {2 * P + 2}"
        )
    if T < 4 * P:
        raise ValueError(f"seq_len must be >= 4 * n_pairs = {4 * P} for n_pairs={P}, got {T}")
    keys = _shuffled(B, len(keys_range), generator)[:, :P] + keys_range.start  # (B, P) distinct
    values = torch.randint(values_range.start, values_range.stop, (B, P), generator=generator)
    seq = torch.full((B, T + 1), FILLER, dtype=torch.long)  # (B, T + 1)
    seq[:, 0:2 * P:2], seq[:, 1:2 * P:2] = keys, values  # the pairs
    slots = (T + 1 - 2 * P) // 2  # places for an asked (key, value) after the pairs
    where = _shuffled(B, slots, generator)[:, :P].sort(dim=1).values  # (B, P) chosen slots
    pos = 2 * P + 2 * where  # (B, P): position of each asked key
    order = _shuffled(B, P, generator)  # (B, P): which pair is asked in each slot
    seq.scatter_(1, pos, keys.gather(1, order))
    seq.scatter_(1, pos + 1, values.gather(1, order))
    inputs, targets = seq[:, :-1], seq[:, 1:]  # (B, T) each
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask.scatter_(1, pos, True)  # the target after an asked key is its value
    return inputs, targets, mask


def selective_copy_batch(batch_size: int, n_tokens: int, seq_len: int, vocab_size: int,
                         generator: torch.Generator | None = None):
    """A batch of selective copying.

    ``seq_len - n_tokens`` positions hold ``n_tokens`` coloured tokens (2 .. V - 1) at
    random places among fillers (0), then the separator 1 and the coloured tokens again,
    in order; a row has ``seq_len + 1`` tokens. mask is True where the target is a
    copied token (from the separator on). Returns ``(inputs, targets, mask)``, (B, T).
    """
    B = _int("batch_size", batch_size, 1)
    n = _int("n_tokens", n_tokens, 1)
    T = _int("seq_len", seq_len, 2 * n)
    V = _int("vocab_size", vocab_size, 3)
    L = T - n  # the scattered part: n coloured tokens and L - n fillers
    tokens = torch.randint(2, V, (B, n), generator=generator)  # (B, n)
    where = _shuffled(B, L, generator)[:, :n].sort(dim=1).values  # (B, n) positions, in order
    seq = torch.full((B, T + 1), FILLER, dtype=torch.long)
    seq.scatter_(1, where, tokens)
    seq[:, L] = 1  # the separator
    seq[:, L + 1:] = tokens
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[:, L:] = True  # from the separator on, each target is the next copied token
    return seq[:, :-1], seq[:, 1:], mask


def induction_batch(batch_size: int, seq_len: int, vocab_size: int,
                    generator: torch.Generator | None = None):
    """A batch of the induction task.

    Random tokens (2 .. V - 1); at a random position the trigger token 1 followed by an
    answer token; the row ends with the trigger again, and the target after it is the
    answer. A row has ``seq_len + 1`` tokens and the trigger appears only twice. mask
    is True at the last position only. Returns ``(inputs, targets, mask)``, (B, T).
    """
    B = _int("batch_size", batch_size, 1)
    T = _int("seq_len", seq_len, 4)
    V = _int("vocab_size", vocab_size, 3)
    seq = torch.randint(2, V, (B, T + 1), generator=generator)  # (B, T + 1)
    at = torch.randint(0, T - 2, (B, 1), generator=generator)  # (B, 1): the first trigger
    seq.scatter_(1, at, 1)
    seq[:, T - 1] = 1  # the trigger again, at the last input position
    seq[:, T] = seq.gather(1, at + 1)[:, 0]  # the answer: the token after the first trigger
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[:, T - 1] = True
    return seq[:, :-1], seq[:, 1:], mask
