"""Rank correlation with its uncertainty: Spearman's rho, a bootstrap interval, an exact
permutation test (lecture 12).

Spearman's rho is the Pearson correlation of the ranks (ties share their average rank).
A correlation over few points, or over points that fall in separate clusters, says
little on its own; these helpers put a number on how little:

- :func:`bootstrap_ci`: the percentile bootstrap (Efron and Tibshirani, "An Introduction
  to the Bootstrap", 1993, chapter 13): resample the (x, y) pairs with replacement,
  recompute rho, and take the central ``level`` of the resampled values;
- :func:`permutation_pvalue`: the fraction of reorderings of y whose |rho| is at least
  the observed one, over all n! orders when n is small (exact), else over random ones.

Caveats: the bootstrap treats the pairs as independent draws; pairs that share a head
(or a position) are not, so the interval is too narrow for them. With n points rho takes
only a few distinct values (for n = 4, the 24 orders give 11), and no p-value below
2 / n! is possible.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = ["bootstrap_ci", "permutation_pvalue", "ranks", "spearman"]


def _pair(x, y):
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2:
        raise ValueError(f"x and y must be 1-D of one length >= 2, got shapes {x.shape} "
                         f"and {y.shape}")
    return x, y


def ranks(a) -> np.ndarray:
    """Ranks 0 .. n-1 of a 1-D sample; ties share their average rank."""
    a = np.asarray(a, dtype=np.float64)
    order = a.argsort(kind="stable")
    r = np.empty_like(a)
    r[order] = np.arange(len(a), dtype=np.float64)
    for v in np.unique(a):  # ties share their average rank
        tie = a == v
        r[tie] = r[tie].mean()
    return r


def spearman(x, y) -> float:
    """Spearman's rho of two 1-D samples of one length; NaN when either is constant."""
    x, y = _pair(x, y)
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def bootstrap_ci(x, y, n_boot: int = 2000, level: float = 0.95, seed: int = 0):
    """(low, high): the percentile bootstrap interval of Spearman's rho over (x, y) pairs.

    Resamples whose x or y is constant (rho undefined) are dropped; the count kept is
    not returned, but with n >= 5 distinct values it is nearly all of them.
    """
    x, y = _pair(x, y)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))  # (n_boot, n) resampled pairs
    rhos = np.array([spearman(x[i], y[i]) for i in idx])  # (n_boot,)
    rhos = rhos[np.isfinite(rhos)]
    if rhos.size == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(rhos, [tail, 100 - tail])
    return float(low), float(high)


def permutation_pvalue(x, y, n_perm: int = 20000, seed: int = 0, exact_up_to: int = 8) -> float:
    """Two-sided p-value of Spearman's rho: P(|rho(x, y reordered)| >= |rho observed|).

    Exact (all n! orders) for n <= ``exact_up_to``, else ``n_perm`` random orders
    (counting the observed one, so the value is never 0).
    """
    x, y = _pair(x, y)
    observed = abs(spearman(x, y))
    if not math.isfinite(observed):
        return math.nan
    n = len(x)
    if n <= exact_up_to:
        rhos = [abs(spearman(x, y[list(p)])) for p in itertools.permutations(range(n))]
        return float(np.mean(np.asarray(rhos) >= observed - 1e-12))
    rng = np.random.default_rng(seed)
    hits = sum(abs(spearman(x, rng.permutation(y))) >= observed - 1e-12 for _ in range(n_perm))
    return (hits + 1) / (n_perm + 1)
