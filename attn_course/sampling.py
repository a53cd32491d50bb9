"""Choosing the next token: greedy, temperature, top-k and top-p (nucleus) sampling (lecture 07).

A language model gives logits (..., V) for the next token. Decoding turns them into a
choice, in this order (the order of Hugging Face's ``generate``):

1. temperature tau: logits / tau. tau < 1 sharpens the distribution, tau > 1 flattens
   it; tau -> 0 is greedy decoding (argmax), which is what ``temperature=0`` means here.
2. top-k (Fan et al., "Hierarchical Neural Story Generation", 2018): keep the tokens
   whose logit is at least the ``top_k``-th largest. Tokens tied with the ``top_k``-th
   are all kept, so ties can keep more than ``top_k`` tokens.
3. top-p, nucleus (Holtzman et al., "The Curious Case of Neural Text Degeneration",
   2020): sort the remaining probabilities in decreasing order (equal ones by token
   index) and keep the shortest prefix whose total is at least ``top_p``; the most
   likely token is always kept.

The kept probabilities are renormalised to sum to 1 (:func:`sampling_distribution`) and
one token is drawn from them (:func:`sample`).

Caveats: these filters change the distribution the model was trained to predict. Low
temperature and small top_k or top_p make text more repetitive; high temperature makes
it incoherent. Which settings are best depends on the model and the task.
"""

from __future__ import annotations

import numbers

import torch

__all__ = ["sample", "sampling_distribution"]


def _check(logits, temperature, top_k, top_p) -> float:
    if not isinstance(logits, torch.Tensor) or logits.ndim < 1 or not logits.is_floating_point():
        raise TypeError(
            f"logits must be a floating-point torch tensor of shape (..., V), got "
            f"{type(logits).__name__}"
            + (f" of shape {tuple(logits.shape)} and dtype {logits.dtype}"
               if isinstance(logits, torch.Tensor) else "")
        )
    if logits.shape[-1] < 1:
        raise ValueError(f"logits must have at least one token (V >= 1), got shape {tuple(logits.shape)}")
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not (
            0 <= float(temperature) < float("inf")):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral)
                              or top_k < 1):
        raise ValueError(f"top_k must be None or an integer >= 1, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, numbers.Real)
                              or not 0 < float(top_p) <= 1):
        raise ValueError(f"top_p must be None or a number in (0, 1], got {top_p!r}")
    return float(temperature)


def sampling_distribution(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                          top_p: float | None = None) -> torch.Tensor:
    """The distribution (..., V) that :func:`sample` draws from, each row summing to 1.

    logits: (..., V); temperature: >= 0 (0 puts all mass on the first argmax); top_k:
    None or >= 1; top_p: None or in (0, 1]. Computed in float32 at least.
    """
    temperature = _check(logits, temperature, top_k, top_p)
    x = logits.to(torch.promote_types(logits.dtype, torch.float32))
    V = x.shape[-1]
    if temperature == 0:
        return torch.nn.functional.one_hot(x.argmax(dim=-1), V).to(x.dtype)  # (..., V)
    x = x / temperature
    if top_k is not None and top_k < V:
        kth = x.topk(top_k, dim=-1).values[..., -1:]  # (..., 1): the top_k-th largest logit
        x = x.masked_fill(x < kth, float("-inf"))  # ties with the k-th are kept
    probs = torch.softmax(x, dim=-1)  # (..., V)
    if top_p is not None and top_p < 1:
        sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)  # (..., V)
        before = sorted_p.cumsum(dim=-1) - sorted_p  # mass of the more likely tokens
        keep_sorted = before < top_p  # the first token always has before = 0
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        probs = probs * keep
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token id per row of logits (..., V); returns a long tensor of shape (...).

    temperature=0 is greedy (argmax, no randomness). generator: a ``torch.Generator`` for
    reproducible draws.
    """
    probs = sampling_distribution(logits, temperature, top_k, top_p)  # (..., V)
    if float(temperature) == 0:
        return probs.argmax(dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])  # (rows, V)
    ids = torch.multinomial(flat, 1, generator=generator)  # (rows, 1)
    return ids.reshape(probs.shape[:-1])
