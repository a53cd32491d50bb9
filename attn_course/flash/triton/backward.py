"""FlashAttention-2 backward kernels in Triton (lecture 09).

Dao, "FlashAttention-2" (2023), Algorithm 2; structure after Triton's fused-attention
tutorial. Three kernels, each ``attn_course.flash.tiled.flash_backward`` written for one
program per block: the row terms delta_i = rowsum(dO_i * O_i); dK_j and dV_j with one
program per key block looping over query blocks; dQ_i with one program per query block
looping over key blocks. Both recompute P_ij = exp(S_ij - lse_i) from the saved
log-sum-exp, so nothing of size T x S is stored. Launched by
``attn_course.flash.triton.kernel``.
"""

from __future__ import annotations

from attn_course.flash.triton.forward import LOG2E, _dot
from attn_course.flash.triton.mode import tl, triton


@triton.jit
def _bwd_preprocess(O, DO, DELTA, stride_oz, stride_om, stride_od,
                    stride_doz, stride_dom, stride_dod, N_Q,
                    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    """delta_i = rowsum(dO_i * O_i) = sum_j P_ij dP_ij, the softmax backward's row term."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    off_z = tl.program_id(1).to(tl.int64)
    offs_d = tl.arange(0, HEAD_DIM)
    rows = offs_m[:, None] < N_Q
    o = tl.load(O + off_z * stride_oz + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
                mask=rows, other=0.0).to(tl.float32)
    do = tl.load(DO + off_z * stride_doz + offs_m[:, None] * stride_dom
                 + offs_d[None, :] * stride_dod, mask=rows, other=0.0).to(tl.float32)
    tl.store(DELTA + off_z * N_Q + offs_m, tl.sum(o * do, 1), mask=offs_m < N_Q)


@triton.jit
def _dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base,
                stride_qm, stride_qd, stride_dom, stride_dod, offs_n, offs_d, lo, hi,
                N_Q, N_KV, qk_scale,
                BLOCK_M: tl.constexpr, MASK: tl.constexpr, CAUSAL: tl.constexpr,
                DOT_FP32: tl.constexpr):
    """Loop over query blocks [lo, hi) for one block of keys (tiled.py's backward i loop).

    Works with transposed tiles (keys along rows) so that dK_j and dV_j accumulate
    without transposing the accumulators: P^T = exp2(K Q^T * qk_scale - lse2).
    """
    offs_m = tl.arange(0, BLOCK_M)
    for start_m in tl.range(lo, hi, BLOCK_M):
        rows = start_m + offs_m  # (BLOCK_M,) query positions of this block
        qt_ptrs = q_base + rows[None, :] * stride_qm + offs_d[:, None] * stride_qd
        do_ptrs = do_base + rows[:, None] * stride_dom + offs_d[None, :] * stride_dod
        if MASK:
            qt = tl.load(qt_ptrs, mask=rows[None, :] < N_Q, other=0.0)  # (D, BLOCK_M) Q_i^T
            do = tl.load(do_ptrs, mask=rows[:, None] < N_Q, other=0.0)  # (BLOCK_M, D)
            lse2 = tl.load(lse_base + rows, mask=rows < N_Q, other=0.0) * LOG2E
            delta = tl.load(delta_base + rows, mask=rows < N_Q, other=0.0)
        else:
            qt = tl.load(qt_ptrs)
            do = tl.load(do_ptrs)
            lse2 = tl.load(lse_base + rows) * LOG2E  # (BLOCK_M,) lse in log2 units
            delta = tl.load(delta_base + rows)  # (BLOCK_M,)
        # Recompute P_ij^T from the saved lse: no running max needed, the row sum is known.
        qkt = _dot(k, qt, None, DOT_FP32)  # (BLOCK_N, BLOCK_M) S_ij^T
        pt = tl.math.exp2(qkt * qk_scale - lse2[None, :])  # (BLOCK_N, BLOCK_M) P_ij^T
        if MASK:
            keep = (rows[None, :] < N_Q) & (offs_n[:, None] < N_KV)
            if CAUSAL:
                keep = keep & (offs_n[:, None] <= rows[None, :])  # key j visible iff j <= i
            pt = tl.where(keep, pt, 0.0)
        # dV_j += P_ij^T dO_i
        dv = _dot(pt.to(do.dtype), do, dv, DOT_FP32)
        # dP_ij^T = V_j dO_i^T;  dS_ij^T = P_ij^T * (dP_ij^T - delta_i)
        dpt = _dot(v, tl.trans(do), None, DOT_FP32)  # (BLOCK_N, BLOCK_M)
        dst = pt * (dpt - delta[None, :])
        # dK_j += dS_ij^T Q_i  (the softmax scale is applied once, at the end)
        dk = _dot(dst.to(qt.dtype), tl.trans(qt), dk, DOT_FP32)
    return dk, dv


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV,
                     stride_qz, stride_qm, stride_qd, stride_kz, stride_kn, stride_kd,
                     stride_vz, stride_vn, stride_vd, stride_doz, stride_dom, stride_dod,
                     N_Q, N_KV, qk_scale, sm_scale,
                     HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, DOT_FP32: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One program finishes dK_j, dV_j for BLOCK_N keys of one (batch, head).

    Here BLOCK_N (keys) is the large block and BLOCK_M (queries) the small one, and
    BLOCK_N is a multiple of BLOCK_M so the causal diagonal falls on whole query blocks.
    dK and dV are written with the same strides as K and V (they are allocated alike).
    """
    start_n = tl.program_id(0)
    off_z = tl.program_id(1).to(tl.int64)
    offs_n = start_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) key positions
    offs_d = tl.arange(0, HEAD_DIM)
    key_rows = offs_n[:, None] < N_KV
    k_ptrs = K + off_z * stride_kz + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
    v_ptrs = V + off_z * stride_vz + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
    k = tl.load(k_ptrs, mask=key_rows, other=0.0)  # (BLOCK_N, D) stays on chip
    v = tl.load(v_ptrs, mask=key_rows, other=0.0)  # (BLOCK_N, D) stays on chip
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    q_base = Q + off_z * stride_qz
    do_base = DO + off_z * stride_doz
    lse_base = LSE + off_z * N_Q
    delta_base = DELTA + off_z * N_Q
    n_full = (N_Q // BLOCK_M) * BLOCK_M  # queries in whole blocks
    if CAUSAL:
        # Queries before this key block see none of its keys: start at the diagonal.
        diag_lo = start_n * BLOCK_N
        diag_hi = tl.minimum(diag_lo + BLOCK_N, N_Q)
    else:
        diag_lo = 0
        diag_hi = 0
    full_hi = tl.maximum(n_full, diag_hi)
    # (1) query blocks on the diagonal: causal mask
    dk, dv = _dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qm,
                         stride_qd, stride_dom, stride_dod, offs_n, offs_d, diag_lo, diag_hi,
                         N_Q, N_KV, qk_scale, BLOCK_M, True, CAUSAL, DOT_FP32)
    # (2) whole query blocks below the diagonal: no mask
    dk, dv = _dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qm,
                         stride_qd, stride_dom, stride_dod, offs_n, offs_d, diag_hi, full_hi,
                         N_Q, N_KV, qk_scale, BLOCK_M, False, CAUSAL, DOT_FP32)
    # (3) the last, partial query block: bounds mask
    dk, dv = _dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qm,
                         stride_qd, stride_dom, stride_dod, offs_n, offs_d, full_hi, N_Q,
                         N_Q, N_KV, qk_scale, BLOCK_M, True, CAUSAL, DOT_FP32)
    dk_ptrs = DK + off_z * stride_kz + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
    dv_ptrs = DV + off_z * stride_vz + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
    tl.store(dk_ptrs, (dk * sm_scale).to(DK.dtype.element_ty), mask=key_rows)
    tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=key_rows)


@triton.jit
def _dq_inner(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_kd, stride_vn,
              stride_vd, offs_m, offs_d, lo, hi, N_KV, qk_scale,
              BLOCK_N: tl.constexpr, MASK: tl.constexpr, CAUSAL: tl.constexpr,
              DOT_FP32: tl.constexpr):
    """Loop over key blocks [lo, hi) for one block of queries: dQ_i += dS_ij K_j."""
    offs_n = tl.arange(0, BLOCK_N)
    for start_n in tl.range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        kt_ptrs = k_base + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd
        vt_ptrs = v_base + cols[None, :] * stride_vn + offs_d[:, None] * stride_vd
        if MASK:
            kt = tl.load(kt_ptrs, mask=cols[None, :] < N_KV, other=0.0)  # (D, BLOCK_N) K_j^T
            vt = tl.load(vt_ptrs, mask=cols[None, :] < N_KV, other=0.0)  # (D, BLOCK_N) V_j^T
        else:
            kt = tl.load(kt_ptrs)
            vt = tl.load(vt_ptrs)
        qk = _dot(q, kt, None, DOT_FP32)  # (BLOCK_M, BLOCK_N) S_ij
        p = tl.math.exp2(qk * qk_scale - lse2[:, None])  # P_ij recomputed from lse
        if MASK:
            keep = cols[None, :] < N_KV
            if CAUSAL:
                keep = keep & (cols[None, :] <= offs_m[:, None])
            p = tl.where(keep, p, 0.0)
        dp = _dot(do, vt, None, DOT_FP32)  # (BLOCK_M, BLOCK_N) dP_ij
        ds = p * (dp - delta[:, None])  # dS_ij
        dq = _dot(ds.to(kt.dtype), tl.trans(kt), dq, DOT_FP32)
    return dq


@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ,
                   stride_qz, stride_qm, stride_qd, stride_kz, stride_kn, stride_kd,
                   stride_vz, stride_vn, stride_vd, stride_doz, stride_dom, stride_dod,
                   N_Q, N_KV, qk_scale, sm_scale,
                   HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, DOT_FP32: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One program finishes dQ_i for BLOCK_M queries of one (batch, head).

    The same loop structure as the forward kernel; dQ is written with Q's strides.
    """
    start_m = tl.program_id(0)
    off_z = tl.program_id(1).to(tl.int64)
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    rows = offs_m[:, None] < N_Q
    q = tl.load(Q + off_z * stride_qz + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=rows, other=0.0)  # (BLOCK_M, D)
    do = tl.load(DO + off_z * stride_doz + offs_m[:, None] * stride_dom
                 + offs_d[None, :] * stride_dod, mask=rows, other=0.0)  # (BLOCK_M, D)
    lse2 = tl.load(LSE + off_z * N_Q + offs_m, mask=offs_m < N_Q, other=0.0) * LOG2E
    delta = tl.load(DELTA + off_z * N_Q + offs_m, mask=offs_m < N_Q, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    k_base = K + off_z * stride_kz
    v_base = V + off_z * stride_vz
    n_full = (N_KV // BLOCK_N) * BLOCK_N
    if CAUSAL:
        hi = tl.minimum((start_m + 1) * BLOCK_M, N_KV)
        unmasked_hi = tl.minimum(start_m * BLOCK_M, n_full)
    else:
        hi = N_KV
        unmasked_hi = n_full
    dq = _dq_inner(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_kd, stride_vn,
                   stride_vd, offs_m, offs_d, 0, unmasked_hi, N_KV, qk_scale, BLOCK_N, False,
                   CAUSAL, DOT_FP32)
    dq = _dq_inner(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_kd, stride_vn,
                   stride_vd, offs_m, offs_d, unmasked_hi, hi, N_KV, qk_scale, BLOCK_N, True,
                   CAUSAL, DOT_FP32)
    dq_ptrs = DQ + off_z * stride_qz + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    tl.store(dq_ptrs, (dq * sm_scale).to(DQ.dtype.element_ty), mask=rows)
