"""FlashAttention-2 in Triton: forward and backward kernels (lecture 09).

Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work
Partitioning" (2023), Algorithms 1 (forward) and 2 (backward); the structure follows
Triton's fused-attention tutorial (06-fused-attention.py, Tillet et al.). The kernels
live in ``forward`` and ``backward`` (this folder); this module tunes, launches and
differentiates them. Every step is the numpy algorithm of ``attn_course.flash.tiled``,
one program per tile row:

forward   one program per (block of BLOCK_M queries, batch*head). It keeps Q_i, the
          running max m, the running sum l and the fp32 accumulator on chip, streams the
          K_j, V_j blocks through, and writes O_i and lse_i = m + log(l) once.
backward  (1) delta_i = rowsum(dO_i * O_i); (2) one program per block of keys finishes
          dK_j, dV_j by looping over the query blocks; (3) one program per block of
          queries finishes dQ_i by looping over the key blocks. Both recompute
          P_ij = exp(S_ij - lse_i) from the saved log-sum-exp: no T x S matrix is stored.

Performance choices (each is marked where it happens): exp2 with log2(e) folded into
the softmax scale (one FMA per score instead of a multiply and a natural exp); fp32
accumulators with fp16/bf16 operands for tl.dot (tensor cores); causal attention stops
at the diagonal ("early exit") and masks only the blocks that straddle it; block sizes,
warps and pipeline stages are chosen by ``triton.autotune`` among a few configurations,
re-tuned when the sequence lengths, head dim or causality change.

Running without a GPU. Triton's interpreter (``TRITON_INTERPRET=1``) runs the same
kernels on the CPU with numpy: correct, but thousands of times slower, so only small
sizes are practical. It must be chosen before the kernels are defined, so
``attn_course.flash.triton.mode`` sets ``TRITON_INTERPRET=1`` before importing triton
when CUDA is unavailable and the variable is unset (``attn-course doctor`` reports the
mode). Set ``TRITON_INTERPRET=0`` to opt out. Under
the interpreter the fixed tile sizes of :data:`INTERPRETER_TILES` replace autotuning
(which needs a GPU to time anything), and tensors must be on the CPU.

Caveats: q, k and v have leading dimensions that broadcast (``flash_attention`` expands
them; the autograd Function itself needs them equal), q and k share the head dim D, v
may have its own Dv, 1 <= D, Dv <= 128 (both padded with zeros to the next power of two
>= max(D, Dv), at least 16, inside the Function); the causal mask is top-left aligned, as in
``torch.nn.functional.scaled_dot_product_attention`` (key j visible to query i iff
j <= i); float32 inputs are multiplied as three tf32 products ("tf32x3", close to fp32
accuracy) with small tiles: correct, not fast; no dropout, no attention mask. Checked
without a GPU: every fp16/bf16 configuration below compiles for sm_90 (Hopper) with
pipelined loads and no register spills under triton 3.9 (``tests/test_flash_triton.py``
compiles each); under triton 3.6 the same holds except for 8 bytes spilled by the causal
dK/dV kernel with D <= 64 and 64 x 128 tiles, which autotuning can pass over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from attn_course.flash.triton.backward import _bwd_dkdv_kernel, _bwd_dq_kernel, _bwd_preprocess
from attn_course.flash.triton.forward import LOG2E, _fwd_kernel
from attn_course.flash.triton.mode import INTERPRET, interpreter_wanted, triton

__all__ = ["INTERPRET", "INTERPRETER_TILES", "FlashAttentionFunction", "Tiles",
           "flash_attention", "interpreter_wanted", "tiles_used"]


@dataclass(frozen=True)
class Tiles:
    """Tile sizes for one call: the forward and dQ kernels use (block_m queries, block_n
    keys); the dK/dV kernel swaps the roles (block_m keys, block_n queries), as in the
    FlashAttention-2 backward. Powers of two >= 16 with block_m a multiple of block_n, so
    that the causal diagonal always falls on whole blocks."""

    block_m: int = 64
    block_n: int = 32
    num_warps: int = 4
    num_stages: int = 2

    def __post_init__(self):
        for name in ("block_m", "block_n"):
            val = getattr(self, name)
            if not isinstance(val, int) or val < 16 or val & (val - 1):
                raise ValueError(f"{name} must be a power of two >= 16, got {val!r}")
        if self.block_m % self.block_n:
            raise ValueError(f"block_m must be a multiple of block_n, got block_m="
                             f"{self.block_m} and block_n={self.block_n}")


#: Tiles used under the interpreter (few, large tiles: the interpreter pays per step).
INTERPRETER_TILES = Tiles(block_m=64, block_n=32)


# ----------------------------------------------------------------------------------------
# Autotuning (GPU only): a few configurations per head-dim class, picked per shape
# ----------------------------------------------------------------------------------------

def _cfg(block_m, block_n, warps, stages):
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=warps,
                         num_stages=stages)


# (BLOCK_M, BLOCK_N, num_warps, num_stages) for fp16/bf16 with head dims <= 64 and 128,
# and for fp32 (correct, not fast). In the dK/dV kernel BLOCK_N counts keys (the large
# block) and BLOCK_M queries. Each configuration compiles for sm_90 without register
# spills (fp16/bf16; tested); keeping the lists short keeps tuning quick.
_FWD = {64: [(128, 64, 4, 3), (128, 128, 8, 3), (64, 64, 4, 4)],
        128: [(128, 64, 8, 3), (128, 128, 8, 2), (64, 64, 4, 3)],
        "fp32": [(64, 32, 4, 2)]}
_DKDV = {64: [(64, 128, 8, 3), (32, 128, 8, 3)],
         128: [(32, 128, 8, 3), (32, 64, 8, 3)],
         "fp32": [(32, 64, 4, 2)]}
_DQ = {64: [(128, 64, 8, 3), (128, 32, 4, 3)],
       128: [(128, 32, 8, 3), (64, 64, 4, 2)],
       "fp32": [(64, 32, 4, 2)]}
_KEY = ["N_Q", "N_KV", "HEAD_DIM", "CAUSAL", "DOT_FP32"]  # triton adds the dtypes


def _autotuned(kernel, table):
    """``triton.autotune`` over ``table``, keeping only the class (head dim, fp32) in use."""
    configs = {key: [_cfg(*c) for c in rows] for key, rows in table.items()}

    def prune(all_configs, named_args, **kwargs):
        if named_args["Q"].dtype == torch.float32:
            return configs["fp32"]
        head_dim = kwargs.get("HEAD_DIM", named_args.get("HEAD_DIM"))
        return configs[64 if head_dim <= 64 else 128]

    def quick_bench(fn, quantiles):  # shorter than triton's default 25 ms + 100 ms
        return triton.testing.do_bench(fn, warmup=5, rep=20, quantiles=quantiles)

    return triton.autotune(configs=[c for rows in configs.values() for c in rows], key=_KEY,
                           prune_configs_by={"early_config_prune": prune},
                           do_bench=quick_bench)(kernel)


if not INTERPRET:  # the interpreter cannot time anything: it uses fixed tiles instead
    _fwd_tuned = _autotuned(_fwd_kernel, _FWD)
    _dkdv_tuned = _autotuned(_bwd_dkdv_kernel, _DKDV)
    _dq_tuned = _autotuned(_bwd_dq_kernel, _DQ)


def tiles_used() -> dict[str, str]:
    """The configuration each autotuned kernel ran with at its last call, for reports.

    {"fwd": "BLOCK_M=128 BLOCK_N=64 warps=8 stages=3", "dkdv": ..., "dq": ...}; a kernel
    not run yet, or the interpreter's fixed tiles, gives "" for that kernel.
    """
    if INTERPRET:
        return {"fwd": "", "dkdv": "", "dq": ""}
    used = {}
    for name, tuned in (("fwd", _fwd_tuned), ("dkdv", _dkdv_tuned), ("dq", _dq_tuned)):
        cfg = getattr(tuned, "best_config", None)
        used[name] = "" if cfg is None else (
            " ".join(f"{k}={v}" for k, v in sorted(cfg.kwargs.items()))
            + f" warps={cfg.num_warps} stages={cfg.num_stages}")
    return used


# ----------------------------------------------------------------------------------------
# Launchers and the autograd Function
# ----------------------------------------------------------------------------------------

def _dot_fp32(dtype: torch.dtype) -> bool:
    # fp16 and bf16 operands go to the tensor cores as they are; fp32 ones, and bf16
    # under the interpreter, take the fp32 path of _dot.
    return dtype == torch.float32 or (INTERPRET and dtype == torch.bfloat16)


def _launch(kernel, tuned, tiles: Tiles | None, swap: bool, rows: int, Z: int, args, meta):
    """Run ``kernel`` on a (row blocks, Z) grid, autotuned when ``tiles`` is None."""
    if tiles is None and tuned is None:  # the interpreter cannot autotune: fixed tiles
        tiles = INTERPRETER_TILES
    if tiles is None:
        big = "BLOCK_N" if swap else "BLOCK_M"
        tuned[lambda m: (triton.cdiv(rows, m[big]), Z)](*args, **meta)
        return
    block_m, block_n = (tiles.block_n, tiles.block_m) if swap else (tiles.block_m, tiles.block_n)
    grid = (triton.cdiv(rows, block_n if swap else block_m), Z)
    kernel[grid](*args, **meta, BLOCK_M=block_m, BLOCK_N=block_n,
                 num_warps=tiles.num_warps, num_stages=tiles.num_stages)


def _forward(q, k, v, causal: bool, scale: float, tiles: Tiles | None):
    """q (Z, T, D), k, v (Z, S, D) contiguous -> out (Z, T, D), lse (Z, T) float32.

    Here D is the padded head dim, shared by q, k and v (the wrapper pads Dv too)."""
    Z, N_Q, D = q.shape
    N_KV = k.shape[1]
    out = torch.empty_like(q)  # (Z, T, D)
    lse = torch.empty((Z, N_Q), device=q.device, dtype=torch.float32)  # (Z, T)
    args = (q, k, v, out, lse, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
            N_Q, N_KV, scale * LOG2E.value)  # qk_scale: log2(e) folded into the softmax scale
    meta = {"HEAD_DIM": D, "CAUSAL": causal, "DOT_FP32": _dot_fp32(q.dtype)}
    _launch(_fwd_kernel, None if INTERPRET else _fwd_tuned, tiles, False, N_Q, Z, args, meta)
    return out, lse


def _backward(q, k, v, out, lse, dout, causal: bool, scale: float, tiles: Tiles | None):
    """Gradients (dq, dk, dv), each shaped and strided like its input."""
    Z, N_Q, D = q.shape
    N_KV = k.shape[1]
    dout = dout.contiguous()  # (Z, T, D)
    delta = torch.empty_like(lse)  # (Z, T) rowsum(dO * O)
    pre_block = 64
    _bwd_preprocess[(triton.cdiv(N_Q, pre_block), Z)](
        out, dout, delta, *out.stride(), *dout.stride(), N_Q, HEAD_DIM=D, BLOCK_M=pre_block)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    common = (*q.stride(), *k.stride(), *v.stride(), *dout.stride(), N_Q, N_KV,
              scale * LOG2E.value, scale)
    meta = {"HEAD_DIM": D, "CAUSAL": causal, "DOT_FP32": _dot_fp32(q.dtype)}
    _launch(_bwd_dkdv_kernel, None if INTERPRET else _dkdv_tuned, tiles, True, N_KV, Z,
            (q, k, v, dout, lse, delta, dk, dv, *common), meta)
    _launch(_bwd_dq_kernel, None if INTERPRET else _dq_tuned, tiles, False, N_Q, Z,
            (q, k, v, dout, lse, delta, dq, *common), meta)
    return dq, dk, dv


_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _validate(q, k, v, scale, tiles):
    """Check the Function's arguments; return (lead, T, S, D, Dv, scale as a float).

    q (..., T, D), k (..., S, D), v (..., S, Dv) with equal leading dimensions.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
        if x.dtype not in _DTYPES:
            raise TypeError(f"{name} must be float16, bfloat16 or float32 for the Triton "
                            f"kernel, got {x.dtype}")
        if x.ndim < 2:
            raise ValueError(f"{name} must have shape (..., length, head dim), got "
                             f"{tuple(x.shape)}")
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"q, k and v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not q.device == k.device == v.device:
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device}, "
                         f"{v.device}")
    if q.device.type != "cuda" and not INTERPRET:
        raise ValueError(f"the compiled Triton kernel needs CUDA tensors, got device "
                         f"{q.device}; on the CPU, set TRITON_INTERPRET=1 before importing "
                         f"attn_course.flash.triton")
    lead, T, D = tuple(q.shape[:-2]), q.shape[-2], q.shape[-1]
    S, Dv = k.shape[-2], v.shape[-1]
    if k.shape != (*lead, S, D) or v.shape != (*lead, S, Dv):
        raise ValueError(f"k and v must have shapes (*q.shape[:-2], S, D) = {(*lead, 'S', D)} "
                         f"and (*q.shape[:-2], S, Dv), got k {tuple(k.shape)} and v "
                         f"{tuple(v.shape)}")
    if not (1 <= D <= 128 and 1 <= Dv <= 128) or T < 1 or S < 1:
        raise ValueError(f"the kernel supports head dims 1 <= D, Dv <= 128 and non-empty "
                         f"sequences, got q {tuple(q.shape)}, k {tuple(k.shape)} and v "
                         f"{tuple(v.shape)}")
    if tiles is not None and not isinstance(tiles, Tiles):
        raise TypeError(f"tiles must be a Tiles instance or None, got {type(tiles).__name__}")
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    return lead, T, S, D, Dv, scale


def _padded(x, length: int, d_pad: int):
    """(..., length, d) -> (Z, length, d_pad) contiguous, zero columns appended."""
    x3 = x.reshape(-1, length, x.shape[-1])  # (Z, length, d)
    if d_pad != x.shape[-1]:  # zero columns change no dot product; extra outputs are cut
        x3 = torch.nn.functional.pad(x3, (0, d_pad - x.shape[-1]))
    return x3.contiguous()  # (Z, length, d_pad), unit stride in the head dim


class FlashAttentionFunction(torch.autograd.Function):
    """Autograd wrapper: forward saves (q, k, v, out, lse); backward recomputes P.

    ``FlashAttentionFunction.apply(q, k, v, causal=False, scale=None, tiles=None)`` with
    q (..., T, D), k (..., S, D), v (..., S, Dv) of equal leading dimensions returns
    ``(out, lse)``: out (..., T, Dv) and the log-sum-exp lse (..., T) in float32 (not
    differentiable). ``tiles=None`` means autotuned on a GPU and
    :data:`INTERPRETER_TILES` under the interpreter. :func:`flash_attention` adds
    broadcasting of the leading dimensions and returns lse only on request.
    """

    @staticmethod
    def forward(ctx, q, k, v, causal=False, scale=None, tiles=None):
        lead, T, S, D, Dv, scale = _validate(q, k, v, scale, tiles)
        d_pad = max(16, triton.next_power_of_2(max(D, Dv)))  # tl.arange needs a power of 2
        q3, k3 = _padded(q, T, d_pad), _padded(k, S, d_pad)  # (Z, T, d_pad), (Z, S, d_pad)
        v3 = _padded(v, S, d_pad)  # (Z, S, d_pad)
        causal = bool(causal)
        out3, lse3 = _forward(q3, k3, v3, causal, scale, tiles)  # (Z, T, d_pad), (Z, T)
        ctx.save_for_backward(q3, k3, v3, out3, lse3)
        ctx.causal, ctx.scale, ctx.tiles = causal, scale, tiles
        ctx.shapes = (q.shape, k.shape, v.shape)
        out = out3[..., :Dv].reshape(*lead, T, Dv)  # (..., T, Dv)
        lse = lse3.reshape(*lead, T)  # (..., T)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q3, k3, v3, out3, lse3 = ctx.saved_tensors
        q_shape, k_shape, v_shape = ctx.shapes
        dout3 = _padded(dout, q_shape[-2], q3.shape[-1])  # (Z, T, d_pad)
        dq, dk, dv = _backward(q3, k3, v3, out3, lse3, dout3, ctx.causal, ctx.scale,
                               ctx.tiles)
        dq = dq[..., :q_shape[-1]].reshape(q_shape)  # (..., T, D)
        dk = dk[..., :k_shape[-1]].reshape(k_shape)  # (..., S, D)
        dv = dv[..., :v_shape[-1]].reshape(v_shape)  # (..., S, Dv)
        return dq, dk, dv, None, None, None


def flash_attention(q, k, v, causal: bool = False, scale: float | None = None, *,
                    return_lse: bool = False, tiles: Tiles | None = None):
    """Exact attention with the Triton kernels; differentiable in q, k and v.

    q: (..., T, D), k: (..., S, D), v: (..., S, Dv) torch tensors whose leading
    dimensions broadcast, one dtype among float16, bfloat16 and float32, and
    1 <= D, Dv <= 128. causal: top-left aligned causal mask; scale: default 1/sqrt(D);
    tiles: fixed tile sizes (default: autotuned on a GPU, :data:`INTERPRETER_TILES`
    under the interpreter). Returns out (..., T, Dv), and with ``return_lse`` also the
    log-sum-exp of each row of scaled scores, lse (..., T) in float32 (not
    differentiable).
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
        if x.ndim < 2:
            raise ValueError(f"{name} must have shape (..., length, head dim), got "
                             f"{tuple(x.shape)}")
    try:
        lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(f"the leading dimensions of q, k and v must broadcast, got q "
                         f"{tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)}"
                         ) from None
    q, k, v = (x.expand(*lead, *x.shape[-2:]) for x in (q, k, v))  # autograd sums back
    out, lse = FlashAttentionFunction.apply(q, k, v, bool(causal), scale, tiles)
    return (out, lse) if return_lse else out
