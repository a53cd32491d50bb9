"""FlashAttention's tiling in numpy: exact attention without the T x S matrix (lecture 09).

Dao et al., "FlashAttention: Fast and Memory-Efficient Exact Attention with
IO-Awareness" (NeurIPS 2022), Algorithms 1-2 (forward) and 4 (backward), in the loop
order of Dao, "FlashAttention-2" (2023), Algorithm 1: the outer loop runs over blocks
of ``block_q`` queries, the inner loop over blocks of ``block_k`` keys and values.

Forward, for one block of queries Q_i (Br rows) and the key blocks K_j, V_j (Bc rows):

    S_ij = scale * Q_i K_j^T                    (Br, Bc)  one tile of the scores
    m, l, alpha, P_ij = online_update(m, l, S_ij)         running max and sum per row
    acc  = alpha * acc + P_ij V_j               (Br, Dv)  partial output, same rescaling
    O_i  = acc / l,   lse_i = m + log(l)                  after the last key block

Only one (Br, Bc) tile of scores exists at a time, so the extra memory is
O(Br * Bc + T) instead of O(T * S), and the result is *exact*: every rescaling is by
exp(m_old - m_new) and cancels in the final division (up to floating-point rounding).

Backward by recomputation (nothing of size T x S was saved): with the saved
``lse`` each tile's probabilities are P_ij = exp(S_ij - lse_i) again, and with
delta_i = rowsum(dO_i * O_i),

    dV_j += P_ij^T dO_i,   dP_ij = dO_i V_j^T,   dS_ij = P_ij * (dP_ij - delta_i),
    dQ_i += scale * dS_ij K_j,   dK_j += scale * dS_ij^T Q_i.

``flash_forward_keys_outer`` is FlashAttention-1's loop order (key blocks outside), which
reads and writes O, l and m in HBM once per key block; it is here to count that traffic
(``attn_course.flash.io_model.tiled_io_keys_outer``) and to compare.

Caveats: this is the algorithm, written for clarity and for the CPU; numpy cannot keep a
tile "on chip", so it saves memory but not memory traffic (the Triton kernel in
``attn_course.flash.triton.kernel`` does both). ``causal`` uses the top-left aligned
mask of ``attn_course.attention.causal_mask`` (key j visible to query i iff j <= i);
with it, key blocks entirely above the diagonal are skipped. float16 inputs are computed
in float32 and the results cast back.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from attn_course.attention import _check_qkv, causal_mask
from attn_course.flash.online_softmax import online_update

__all__ = ["flash_backward", "flash_forward", "flash_forward_keys_outer"]


def _check_block(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer (rows per tile), got {value!r}")
    return int(value)


def _prepare(q, k, v, scale):
    """Validate, broadcast the leading dimensions and pick the compute dtype."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    T, S, _, scale = _check_qkv(q, k, v, None, scale)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    out_dtype = np.result_type(q, k, v)
    compute = np.dtype(np.float32) if out_dtype == np.float16 else out_dtype
    q = np.broadcast_to(q, (*lead, *q.shape[-2:])).astype(compute, copy=False)  # (..., T, D)
    k = np.broadcast_to(k, (*lead, *k.shape[-2:])).astype(compute, copy=False)  # (..., S, D)
    v = np.broadcast_to(v, (*lead, *v.shape[-2:])).astype(compute, copy=False)  # (..., S, Dv)
    return q, k, v, T, S, scale, out_dtype, compute


def _diagonal_keep(i0: int, i1: int, j0: int, j1: int, causal: bool):
    """Boolean (Br, Bc) mask for tile (i, j) when it straddles the causal diagonal, else None."""
    if not causal or j1 - 1 <= i0:  # every key of this tile is at or before every query
        return None
    return causal_mask(i1 - i0, j1 - j0, offset=i0 - j0)  # (Br, Bc): key j0+c visible iff <= i0+r


def flash_forward(q, k, v, causal: bool = False, scale=None, block_q: int = 64,
                  block_k: int = 64,
                  callback: Callable[..., None] | None = None):
    """Tiled exact attention; returns ``(out, lse)``.

    q: (..., T, D), k: (..., S, D), v: (..., S, Dv) numpy arrays (leading dimensions
    broadcast); causal: top-left aligned causal mask; scale: default 1/sqrt(D);
    block_q, block_k: tile sizes Br and Bc. Returns out (..., T, Dv) and the
    log-sum-exp of each row of scaled scores, lse (..., T).

    ``callback(i0, i1, j0, j1, m, l, acc)``, if given, is called after every tile with
    the query rows [i0, i1), the key rows [j0, j1) and the running state of those rows:
    m, l (..., Br) and acc (..., Br, Dv) (the widget uses it; do not modify them).
    """
    q, k, v, T, S, scale, out_dtype, compute = _prepare(q, k, v, scale)
    block_q, block_k = _check_block("block_q", block_q), _check_block("block_k", block_k)
    lead, Dv = q.shape[:-2], v.shape[-1]
    out = np.empty((*lead, T, Dv), dtype=compute)  # (..., T, Dv)
    lse = np.empty((*lead, T), dtype=compute)  # (..., T)
    k_t = np.swapaxes(k, -1, -2)  # (..., D, S) a view: K^T, sliced by columns below
    for i0 in range(0, T, block_q):
        i1 = min(i0 + block_q, T)
        q_i = q[..., i0:i1, :] * compute.type(scale)  # (..., Br, D) the scale folded into Q once
        m = np.full((*lead, i1 - i0), -np.inf, dtype=compute)  # (..., Br) running max
        l = np.zeros((*lead, i1 - i0), dtype=compute)  # (..., Br) running sum
        acc = np.zeros((*lead, i1 - i0, Dv), dtype=compute)  # (..., Br, Dv) partial output
        # Causal: key blocks that start after the last query of this block are all masked.
        j_end = min(S, i1) if causal else S
        for j0 in range(0, j_end, block_k):
            j1 = min(j0 + block_k, S)
            s = q_i @ k_t[..., j0:j1]  # (..., Br, Bc) one tile of the scaled scores
            keep = _diagonal_keep(i0, i1, j0, j1, causal)
            if keep is not None:
                np.putmask(s, np.broadcast_to(~keep, s.shape), -np.inf)
            m, l, alpha, p = online_update(m, l, s)  # p = exp(s - m_new), (..., Br, Bc)
            acc *= alpha[..., None]  # rescale what was accumulated against the old max
            acc += p @ v[..., j0:j1, :]  # (..., Br, Dv)
            if callback is not None:
                callback(i0, i1, j0, j1, m, l, acc)
        seen = l > 0  # False only for a row with no visible key (then out = 0, lse = -inf)
        out[..., i0:i1, :] = np.divide(acc, l[..., None], out=np.zeros_like(acc),
                                       where=seen[..., None])
        with np.errstate(divide="ignore"):
            lse[..., i0:i1] = np.where(seen, m + np.log(np.where(seen, l, 1)), -np.inf)
    return out.astype(out_dtype, copy=False), lse.astype(out_dtype, copy=False)


def flash_backward(q, k, v, out, lse, dout, causal: bool = False, scale=None,
                   block_q: int = 64, block_k: int = 64):
    """Gradients (dq, dk, dv) of tiled attention by recomputation from ``lse``.

    q, k, v as in :func:`flash_forward` (with equal leading dimensions); out (..., T, Dv)
    and lse (..., T) from the forward pass; dout (..., T, Dv) the gradient of the loss
    with respect to out. The outer loop is over key blocks (each dK_j, dV_j is finished
    in one go), the inner over query blocks; dQ is accumulated across key blocks.
    """
    shapes = [x.shape[:-2] for x in (q, k, v)]
    q, k, v, T, S, scale, out_dtype, compute = _prepare(q, k, v, scale)
    block_q, block_k = _check_block("block_q", block_q), _check_block("block_k", block_k)
    lead, Dv = q.shape[:-2], v.shape[-1]
    if not shapes[0] == shapes[1] == shapes[2]:
        raise ValueError(
            f"flash_backward needs q, k and v with equal leading dimensions (one gradient "
            f"per input element), got {shapes[0]}, {shapes[1]} and {shapes[2]}"
        )
    for name, x, shape in (("out", out, (*lead, T, Dv)), ("dout", dout, (*lead, T, Dv)),
                           ("lse", lse, (*lead, T))):
        if not isinstance(x, np.ndarray) or x.shape != shape:
            raise ValueError(f"{name} must be a numpy array of shape {shape}, got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
    out, dout, lse = (x.astype(compute, copy=False) for x in (out, dout, lse))
    delta = np.sum(dout * out, axis=-1)  # (..., T) rowsum(dO * O) = sum_j P_ij dP_ij
    lse = np.where(np.isfinite(lse), lse, np.inf)  # a row with no key: exp(s - inf) = 0
    dq = np.zeros_like(q)  # (..., T, D)
    dk = np.zeros_like(k)  # (..., S, D)
    dv = np.zeros_like(v)  # (..., S, Dv)
    for j0 in range(0, S, block_k):
        j1 = min(j0 + block_k, S)
        k_j, v_j = k[..., j0:j1, :], v[..., j0:j1, :]  # (..., Bc, D), (..., Bc, Dv)
        # Causal: query blocks that end before key j0 see none of these keys.
        i_start = (j0 // block_q) * block_q if causal else 0
        for i0 in range(i_start, T, block_q):
            i1 = min(i0 + block_q, T)
            q_i, do_i = q[..., i0:i1, :], dout[..., i0:i1, :]  # (..., Br, D), (..., Br, Dv)
            s = (q_i @ np.swapaxes(k_j, -1, -2)) * compute.type(scale)  # (..., Br, Bc)
            p = np.exp(s - lse[..., i0:i1, None])  # (..., Br, Bc) recomputed probabilities
            keep = _diagonal_keep(i0, i1, j0, j1, causal)
            if keep is not None:
                p = np.where(keep, p, 0)
            dv[..., j0:j1, :] += np.swapaxes(p, -1, -2) @ do_i  # (..., Bc, Dv)
            dp = do_i @ np.swapaxes(v_j, -1, -2)  # (..., Br, Bc)
            ds = p * (dp - delta[..., i0:i1, None])  # (..., Br, Bc) softmax backward
            dq[..., i0:i1, :] += (ds @ k_j) * compute.type(scale)  # (..., Br, D)
            dk[..., j0:j1, :] += (np.swapaxes(ds, -1, -2) @ q_i) * compute.type(scale)  # (..., Bc, D)
    return tuple(g.astype(out_dtype, copy=False) for g in (dq, dk, dv))


def flash_forward_keys_outer(q, k, v, causal: bool = False, scale=None, block_q: int = 64,
                             block_k: int = 64, io: dict | None = None):
    """Tiled exact attention in FlashAttention-1's loop order; returns ``(out, lse)``.

    Dao et al. (2022), Algorithm 1: the outer loop runs over blocks of ``block_k`` keys
    and values, the inner loop over blocks of ``block_q`` queries. O, l and m live in
    "HBM" (full-length arrays): each inner step loads Q_i, O_i, l_i, m_i, folds the tile
    in and stores O_i (kept normalised, O_i = acc / l), l_i and m_i back. Same arguments
    and results as :func:`flash_forward` (q (..., T, D), k (..., S, D), v (..., S, Dv);
    out (..., T, Dv), lse (..., T)).

    io: a dict to which the element counts of these loads and stores are added under
    "reads" and "writes" (per call, all leading dimensions included); for one head with
    T = S and D = Dv they equal :func:`attn_course.flash.io_model.tiled_io_keys_outer`.
    Caveat: written to show the loop order and its memory traffic, not for speed.
    """
    q, k, v, T, S, scale, out_dtype, compute = _prepare(q, k, v, scale)
    block_q, block_k = _check_block("block_q", block_q), _check_block("block_k", block_k)
    lead, Dv = q.shape[:-2], v.shape[-1]
    io = {} if io is None else io
    io.setdefault("reads", 0)
    io.setdefault("writes", 0)
    out = np.zeros((*lead, T, Dv), dtype=compute)  # (..., T, Dv) O in HBM
    l_hbm = np.zeros((*lead, T), dtype=compute)  # (..., T) running sums in HBM
    m_hbm = np.full((*lead, T), -np.inf, dtype=compute)  # (..., T) running maxima in HBM
    io["writes"] += out.size + l_hbm.size + m_hbm.size  # the initialisation
    for j0 in range(0, S, block_k):
        j1 = min(j0 + block_k, S)
        k_j, v_j = k[..., j0:j1, :], v[..., j0:j1, :]  # (..., Bc, D), (..., Bc, Dv) loaded once
        io["reads"] += k_j.size + v_j.size
        # Causal: query blocks that end before key j0 see none of these keys.
        i_start = (j0 // block_q) * block_q if causal else 0
        for i0 in range(i_start, T, block_q):
            i1 = min(i0 + block_q, T)
            q_i = q[..., i0:i1, :]  # (..., Br, D)
            o_i, l_i, m_i = out[..., i0:i1, :], l_hbm[..., i0:i1], m_hbm[..., i0:i1]
            io["reads"] += q_i.size + o_i.size + l_i.size + m_i.size
            s = (q_i @ np.swapaxes(k_j, -1, -2)) * compute.type(scale)  # (..., Br, Bc)
            keep = _diagonal_keep(i0, i1, j0, j1, causal)
            if keep is not None:
                np.putmask(s, np.broadcast_to(~keep, s.shape), -np.inf)
            m_new, l_new, alpha, p = online_update(m_i, l_i, s)  # p: (..., Br, Bc)
            acc = (alpha * l_i)[..., None] * o_i + p @ v_j  # (..., Br, Dv) unnormalised
            seen = (l_new > 0)[..., None]  # (..., Br, 1)
            out[..., i0:i1, :] = np.divide(acc, l_new[..., None], out=np.zeros_like(acc),
                                           where=seen)
            l_hbm[..., i0:i1], m_hbm[..., i0:i1] = l_new, m_new
            io["writes"] += o_i.size + l_i.size + m_i.size
    with np.errstate(divide="ignore"):
        lse = np.where(l_hbm > 0, m_hbm + np.log(np.where(l_hbm > 0, l_hbm, 1)), -np.inf)
    return out.astype(out_dtype, copy=False), lse.astype(out_dtype, copy=False)
