"""Associative recall without training: what can each attention still retrieve? (lecture 10)

The task (after the associative-recall probes of Ba et al. 2016 and Arora et al.,
"Zoology", 2023, here with fixed random vectors instead of a trained model). A sequence
holds S (key, value) pairs, then one query token whose query vector is one of the S
keys. Attention should return that key's value:

    positions 0 .. S-1:  key k_j (a random unit vector in R^D), value v_j (Gaussian)
    position S:          query q = k_i, with a zero key and a zero value
    read out:            the output at position S; correct when its nearest stored
                         value (by cosine) is v_i

Random unit keys are nearly orthogonal, q . k_i = 1 while q . k_j ~ N(0, 1/D), so exact
softmax attention with a sharp ``scale`` puts almost all its weight on pair i and
recalls perfectly far beyond S = D. The alternatives give something up:

- linear attention compresses all pairs into a D x D state (a sum of outer products),
  which holds about D pairs before they blur into each other;
- Performer estimates the sharp softmax kernel with R random features; its variance
  grows like exp(2 * scale), so sharp recall needs very many features;
- a sliding window sees only the last w positions: pairs further back are gone;
- Linformer mixes the S positions into P summaries with a random projection.

Caveats. No method here was trained for the task (trained models learn keys that suit
their method; see Arora et al. for trained comparisons). Accuracy is measured on a
seeded subset of ``n_queries`` of the S pairs. All methods run without a causal mask:
only the last position is read, and it may see every earlier one.
"""

from __future__ import annotations

import torch

from attn_course.efficient.compare import attention_method

__all__ = ["make_pairs", "recall_accuracy", "recall_curve"]


def make_pairs(n_pairs: int, dim: int, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32):
    """keys (S, D), unit vectors in random directions, and values (S, D), Gaussian."""
    for name, val in (("n_pairs", n_pairs), ("dim", dim)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive integer, got {val!r}")
    keys = torch.randn(n_pairs, dim, generator=generator, dtype=torch.float64)
    keys = keys / keys.norm(dim=-1, keepdim=True)  # (S, D)
    values = torch.randn(n_pairs, dim, generator=generator, dtype=torch.float64)  # (S, D)
    return keys.to(dtype), values.to(dtype)


def recall_accuracy(name: str, n_pairs: int, dim: int = 64, n_queries: int = 64, seed: int = 0,
                    query_batch: int = 16, **options) -> float:
    """Fraction of queried pairs whose value method ``name`` retrieves.

    name and ``options`` (scale, window, num_features, proj_len, ...) as in
    :func:`~attn_course.efficient.compare.attention_method`. n_queries: how many of the
    S pairs are queried (all when S is smaller). query_batch: queries per call of the
    sliding-window attention, which runs on the whole sequence once per query.
    """
    g = torch.Generator().manual_seed(seed)
    keys, values = make_pairs(n_pairs, dim, g)
    asked = torch.randperm(n_pairs, generator=g)[:n_queries]  # (Q,) which pairs are queried
    f = attention_method(name, seed=seed, **options)
    k_seq = torch.cat([keys, keys.new_zeros(1, dim)])  # (S + 1, D): the query token's key is 0
    v_seq = torch.cat([values, values.new_zeros(1, dim)])  # (S + 1, D)
    if name == "sliding_window":
        outs = []
        for part in asked.split(query_batch):
            Qb = len(part)
            q_seq = keys.new_zeros(Qb, n_pairs + 1, dim)  # (Qb, S + 1, D)
            q_seq[:, -1] = keys[part]  # only the last position asks
            out = f(q_seq, k_seq.expand(Qb, -1, -1), v_seq.expand(Qb, -1, -1))  # (Qb, S + 1, D)
            outs.append(out[:, -1])  # (Qb, D)
        out = torch.cat(outs)  # (Q, D)
    else:
        # Only the last position is read, and it sees every key: ask all queries at once.
        out = f(keys[asked], k_seq, v_seq)  # (Q, D)
    cos = torch.nn.functional.normalize(out, dim=-1) @ torch.nn.functional.normalize(values, dim=-1).T
    return (cos.argmax(dim=-1) == asked).float().mean().item()  # cos: (Q, S)


def recall_curve(names, ns, dim: int = 64, n_queries: int = 64, seed: int = 0,
                 options: dict[str, dict] | None = None) -> dict[str, list[float]]:
    """{name: [accuracy at each S in ns]}; options[name] holds that method's settings."""
    options = options or {}
    return {name: [recall_accuracy(name, n, dim=dim, n_queries=n_queries, seed=seed,
                                   **options.get(name, {})) for n in ns]
            for name in names}
