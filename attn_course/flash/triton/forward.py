"""FlashAttention-2 forward kernel in Triton (lecture 09).

Dao, "FlashAttention-2" (2023), Algorithm 1; structure after Triton's fused-attention
tutorial. One program computes O_i and lse_i for BLOCK_M queries of one (batch, head):
the loop over key blocks is ``attn_course.flash.tiled.flash_forward``'s inner loop, with
the online softmax in base 2. Launched by ``attn_course.flash.triton.kernel``, which
also explains the performance choices and caveats.
"""

from __future__ import annotations

from attn_course.flash.triton.mode import tl, triton

# Compile-time constants (kernels may only read globals declared as tl.constexpr).
LOG2E = tl.constexpr(1.4426950408889634)  # log2(e): exp(x) = exp2(x * log2(e))
LN2 = tl.constexpr(0.6931471805599453)  # ln(2): log(x) = log2(x) * ln(2)


@triton.jit
def _dot(a, b, acc, DOT_FP32: tl.constexpr):
    """acc + a @ b accumulated in fp32 (acc=None: just a @ b).

    DOT_FP32 multiplies fp32 operands: on a GPU with three tf32 products ("tf32x3", close
    to fp32 accuracy; plain tf32 keeps only 10 mantissa bits), under the interpreter
    exactly. It is used for float32 inputs, and for bfloat16 under the CPU interpreter,
    which has no bfloat16 arithmetic (Triton's debugging guide) and would otherwise
    multiply the raw bit patterns. P and dS are still rounded to bfloat16 before the
    product, so the numerics match the tensor cores' (exact products of bfloat16
    values, fp32 sums) up to the order of summation.
    """
    if DOT_FP32:
        res = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="tf32x3")
    else:
        res = tl.dot(a, b, acc)
    return res


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
               offs_m, offs_d, lo, hi, N_KV, qk_scale,
               BLOCK_N: tl.constexpr, MASK: tl.constexpr, CAUSAL: tl.constexpr,
               DOT_FP32: tl.constexpr):
    """The inner loop over key blocks [lo, hi) for one block of queries (tiled.py's j loop).

    MASK is a compile-time flag: blocks strictly below the diagonal and inside the
    sequence need no mask at all; only the diagonal and the last, partial block do.
    """
    offs_n = tl.arange(0, BLOCK_N)
    for start_n in tl.range(lo, hi, BLOCK_N):
        cols = start_n + offs_n  # (BLOCK_N,) key positions of this block
        kt_ptrs = k_base + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd
        v_ptrs = v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd
        if MASK:
            kt = tl.load(kt_ptrs, mask=cols[None, :] < N_KV, other=0.0)  # (D, BLOCK_N) K_j^T
        else:
            kt = tl.load(kt_ptrs)
        # S_ij = Q_i K_j^T, fp32 accumulation on the tensor cores.      (BLOCK_M, BLOCK_N)
        qk = _dot(q, kt, None, DOT_FP32)
        if MASK:
            keep = cols[None, :] < N_KV  # keys past the end of the sequence
            if CAUSAL:
                keep = keep & (cols[None, :] <= offs_m[:, None])  # key j visible iff j <= i
            qk = tl.where(keep, qk, float("-inf"))
        # Online softmax in base 2: qk_scale = scale * log2(e), so m is in log2 units and
        # exp(scale * s - m) becomes exp2(qk * qk_scale - m): one FMA and one exp2.
        m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)  # (BLOCK_M,) new running max
        p = tl.math.exp2(qk * qk_scale - m_ij[:, None])  # (BLOCK_M, BLOCK_N) P_ij unnormalised
        alpha = tl.math.exp2(m_i - m_ij)  # (BLOCK_M,) rescaling of the old state
        l_i = l_i * alpha + tl.sum(p, 1)  # running sum
        if MASK:
            v = tl.load(v_ptrs, mask=cols[:, None] < N_KV, other=0.0)  # (BLOCK_N, D)
        else:
            v = tl.load(v_ptrs)
        # acc = alpha * acc + P_ij V_j: P goes back to the input dtype for the tensor cores.
        acc = acc * alpha[:, None]
        acc = _dot(p.to(v.dtype), v, acc, DOT_FP32)
        m_i = m_ij
    return acc, l_i, m_i


@triton.jit
def _fwd_kernel(Q, K, V, O, LSE,
                stride_qz, stride_qm, stride_qd, stride_kz, stride_kn, stride_kd,
                stride_vz, stride_vn, stride_vd, stride_oz, stride_om, stride_od,
                N_Q, N_KV, qk_scale,
                HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, DOT_FP32: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One program computes O_i and lse_i for BLOCK_M queries of one (batch, head)."""
    start_m = tl.program_id(0)  # which block of queries
    off_z = tl.program_id(1).to(tl.int64)  # which (batch, head); int64: no offset overflow
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) query positions
    offs_d = tl.arange(0, HEAD_DIM)
    q_ptrs = Q + off_z * stride_qz + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=offs_m[:, None] < N_Q, other=0.0)  # (BLOCK_M, D) stays on chip
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max (log2 units)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running sum
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)  # partial output, fp32
    k_base = K + off_z * stride_kz
    v_base = V + off_z * stride_vz
    n_full = (N_KV // BLOCK_N) * BLOCK_N  # keys in whole blocks
    if CAUSAL:
        # Causal early exit: keys after this block's last query are never visited.
        hi = tl.minimum((start_m + 1) * BLOCK_M, N_KV)
        # Blocks left of the diagonal need no mask (BLOCK_M is a multiple of BLOCK_N).
        unmasked_hi = tl.minimum(start_m * BLOCK_M, n_full)
    else:
        hi = N_KV
        unmasked_hi = n_full
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd,
                               stride_vn, stride_vd, offs_m, offs_d, 0, unmasked_hi, N_KV,
                               qk_scale, BLOCK_N, False, CAUSAL, DOT_FP32)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd,
                               stride_vn, stride_vd, offs_m, offs_d, unmasked_hi, hi, N_KV,
                               qk_scale, BLOCK_N, True, CAUSAL, DOT_FP32)
    # Epilogue: O_i = acc / l, written once; lse = (m + log2 l) * ln 2 in natural-log units.
    acc = acc / l_i[:, None]
    o_ptrs = O + off_z * stride_oz + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, acc.to(O.dtype.element_ty), mask=offs_m[:, None] < N_Q)
    tl.store(LSE + off_z * N_Q + offs_m, (m_i + tl.math.log2(l_i)) * LN2, mask=offs_m < N_Q)
