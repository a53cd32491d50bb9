"""Independent references for the tests: plain loops in float64, written for clarity.

They share no code with attn_course: each query row is handled on its own with
Python's math module, so a bug in a vectorised implementation cannot hide here too.
"""

from __future__ import annotations

import math

import numpy as np


def softmax_loop(row) -> list[float]:
    """Softmax of one row of Python floats; an all -inf row gives zeros."""
    finite = [x for x in row if x != -math.inf]
    if not finite:
        return [0.0] * len(row)
    m = max(finite)
    exps = [math.exp(x - m) if x != -math.inf else 0.0 for x in row]
    total = math.fsum(exps)
    return [e / total for e in exps]


def attention_loop(q, k, v, keep=None, bias=None, scale=None):
    """q (..., T, D), k (..., S, D), v (..., S, Dv) float64 arrays of equal leading dims.

    keep: bool (..., T, S) already broadcast, True = attend; bias: float (..., T, S)
    added to the scores. Returns out (..., T, Dv) and probs (..., T, S).
    """
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    T, D = q.shape[-2:]
    S, Dv = v.shape[-2:]
    q = np.broadcast_to(q, (*lead, T, D))
    k = np.broadcast_to(k, (*lead, S, D))
    v = np.broadcast_to(v, (*lead, S, Dv))
    keep = np.ones((*lead, T, S), bool) if keep is None else np.broadcast_to(keep, (*lead, T, S))
    bias = np.zeros((*lead, T, S)) if bias is None else np.broadcast_to(bias, (*lead, T, S))
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    out = np.zeros((*lead, T, Dv))
    probs = np.zeros((*lead, T, S))
    for idx in np.ndindex(*lead):
        for i in range(T):
            row = []
            for j in range(S):
                s = math.fsum(float(a) * float(b) for a, b in zip(q[idx][i], k[idx][j], strict=False))
                s = s * scale + float(bias[idx][i, j])
                row.append(s if keep[idx][i, j] else -math.inf)
            p = softmax_loop(row)
            probs[idx][i] = p
            for c in range(Dv):
                out[idx][i, c] = math.fsum(p[j] * float(v[idx][j, c]) for j in range(S))
    return out, probs


def sampling_distribution_loop(logits, temperature=1.0, top_k=None, top_p=None) -> list[float]:
    """Temperature, then top-k (ties with the k-th kept), then top-p, on one row of floats.

    Written from the definitions: top-k keeps logits >= the k-th largest; top-p walks the
    tokens from most to least likely (equal ones by index) and stops once the mass of those
    already kept reaches top_p. Returns the renormalised probabilities.
    """
    row = [float(x) for x in logits]
    if temperature == 0:
        best = max(range(len(row)), key=lambda i: (row[i], -i))
        return [1.0 if i == best else 0.0 for i in range(len(row))]
    row = [x / temperature for x in row]
    if top_k is not None and top_k < len(row):
        kth = sorted(row, reverse=True)[top_k - 1]
        row = [x if x >= kth else -math.inf for x in row]
    p = softmax_loop(row)
    if top_p is not None and top_p < 1:
        kept, mass = set(), 0.0
        for i in sorted(range(len(p)), key=lambda i: (-p[i], i)):
            if mass >= top_p:
                break
            kept.add(i)
            mass += p[i]
        p = [p[i] if i in kept else 0.0 for i in range(len(p))]
        total = math.fsum(p)
        p = [x / total for x in p]
    return p
