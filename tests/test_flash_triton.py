"""The Triton kernels against float64 PyTorch.

Without CUDA they run under Triton's CPU interpreter (``TRITON_INTERPRET=1``, set by
``attn_course.flash.triton.mode`` before it imports triton) at small sizes; with CUDA
the same tests run compiled, and the ``gpu`` tests add realistic sizes.
"""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

if importlib.util.find_spec("triton") is None:  # not importorskip: see tests/conftest.py
    pytest.skip("triton is not installed", allow_module_level=True)

from attn_course import doctor  # noqa: E402
from attn_course.flash.api import IMPLS, attention, resolve_impl  # noqa: E402
from attn_course.flash.triton import kernel as tk  # noqa: E402
from attn_course.testing import assert_close, assert_error_within  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
F16, BF16, F32 = torch.float16, torch.bfloat16, torch.float32

# (B, H, T, S, D, causal, dtype, tiles): lengths of 1, lengths that are not multiples of
# the blocks, T != S both ways, a padded head dim (40 -> 64), the largest head dim, and
# tiles of 16 and unequal tiles.
CASES = [
    (1, 1, 1, 1, 16, False, F32, None),
    (1, 1, 1, 1, 16, True, F32, None),
    (1, 2, 17, 17, 16, True, F16, tk.Tiles(16, 16)),
    (2, 1, 17, 17, 32, False, BF16, tk.Tiles(32, 16)),
    (1, 2, 64, 64, 64, False, F16, None),
    (1, 2, 64, 64, 64, True, BF16, None),
    (1, 1, 100, 100, 32, False, F32, tk.Tiles(64, 16)),
    (1, 1, 100, 100, 32, True, F32, tk.Tiles(32, 32)),
    (1, 1, 100, 100, 64, True, F16, None),
    (1, 1, 100, 64, 16, True, F16, tk.Tiles(32, 16)),
    (1, 1, 64, 100, 16, True, BF16, tk.Tiles(16, 16)),
    (1, 1, 64, 100, 40, False, F32, None),
    (1, 1, 17, 17, 128, True, F32, None),
]


def case_id(case):
    B, H, T, S, D, causal, dtype, tiles = case
    t = f"-tiles{tiles.block_m}x{tiles.block_n}" if tiles else ""
    return f"{B}x{H}-T{T}-S{S}-D{D}-{'causal' if causal else 'full'}-{str(dtype)[6:]}{t}"


def make_inputs(B, H, T, S, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, n, D, generator=g).to(DEVICE, dtype) for n in (T, S, S))
    dout = torch.randn(B, H, T, D, generator=g).to(DEVICE, dtype)
    return q, k, v, dout


def grads_of(fn, q, k, v, dout):
    """Output and (dq, dk, dv) of fn on leaf copies of q, k, v."""
    q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    out = fn(q, k, v)
    out.backward(dout)
    return out.detach(), q.grad, k.grad, v.grad


def check_against_reference(q, k, v, dout, causal, scale=None, tiles=None):
    """Our kernel vs float64 SDPA; low precision within 2x of the same-dtype SDPA error."""
    ours_lse = {}

    def ours(q, k, v):
        out, lse = tk.flash_attention(q, k, v, causal=causal, scale=scale, return_lse=True,
                                      tiles=tiles)
        ours_lse["lse"] = lse
        return out

    def sdpa(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)

    got = grads_of(ours, q, k, v, dout)
    exact = grads_of(sdpa, *(x.double() for x in (q, k, v, dout)))
    q64, k64 = q.double(), k.double()
    s = (q64 @ k64.transpose(-1, -2)) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if causal:
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        s = s.masked_fill(~keep, float("-inf"))
    assert ours_lse["lse"].dtype == torch.float32
    assert_close(ours_lse["lse"], torch.logsumexp(s, dim=-1), "lse", atol=1e-4, rtol=1e-5)
    names = ("out", "dq", "dk", "dv")
    if q.dtype == torch.float32:
        for name, a, e in zip(names, got, exact, strict=True):
            assert a.dtype == torch.float32
            assert_close(a, e, name)
    else:
        same = grads_of(sdpa, q, k, v, dout)
        for name, a, r, e in zip(names, got, same, exact, strict=True):
            assert a.dtype == q.dtype
            assert_error_within(a, r, e, name)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_kernel_matches_float64_sdpa(case):
    B, H, T, S, D, causal, dtype, tiles = case
    q, k, v, dout = make_inputs(B, H, T, S, D, dtype)
    check_against_reference(q, k, v, dout, causal, tiles=tiles)


def test_custom_scale_and_three_dimensional_inputs():
    q, k, v, dout = make_inputs(1, 3, 33, 33, 16, F32, seed=1)
    q, k, v, dout = (x[0] for x in (q, k, v, dout))  # (H, T, D): any leading dims
    check_against_reference(q, k, v, dout, causal=True, scale=0.05)


@pytest.mark.parametrize("impl", IMPLS)
def test_attention_entry_point_agrees_across_impls(impl):
    q, k, v, _ = make_inputs(2, 2, 19, 19, 16, F32, seed=2)
    expected = F.scaled_dot_product_attention(q.double(), k.double(), v.double(),
                                              is_causal=True)
    assert_close(attention(q, k, v, causal=True, impl=impl), expected, impl)


def test_auto_picks_triton_only_for_cuda_tensors():
    assert resolve_impl("auto", torch.zeros(1)) == "sdpa"
    assert resolve_impl("reference", torch.zeros(1)) == "reference"
    with pytest.raises(ValueError, match="impl must be one of"):
        attention(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2, 4), impl="flash")


def test_errors_name_the_argument():
    q = torch.zeros(1, 4, 16, device=DEVICE)
    with pytest.raises(TypeError, match="q must be float16, bfloat16 or float32"):
        tk.flash_attention(q.double(), q, q)
    with pytest.raises(TypeError, match="share one dtype"):
        tk.flash_attention(q, q.half(), q)
    with pytest.raises(ValueError, match="k and v must have shapes"):
        tk.flash_attention(q, torch.zeros(1, 4, 8, device=DEVICE), q)
    with pytest.raises(ValueError, match="leading dimensions of q, k and v must broadcast"):
        tk.flash_attention(q.expand(2, 4, 16), torch.zeros(3, 4, 16, device=DEVICE), q)
    big = torch.zeros(1, 4, 256, device=DEVICE)
    with pytest.raises(ValueError, match="1 <= D, Dv <= 128"):
        tk.flash_attention(big, big, big)
    with pytest.raises(ValueError, match="block_m must be a multiple of block_n"):
        tk.Tiles(16, 32)
    with pytest.raises(ValueError, match="block_n must be a power of two >= 16"):
        tk.Tiles(64, 8)


@pytest.mark.parametrize("env", [None, "1", "0", "true"])
@pytest.mark.parametrize("has_cuda", [False, True])
def test_doctor_reports_the_mode_the_kernel_uses(monkeypatch, env, has_cuda):
    monkeypatch.setattr(doctor, "version", lambda name: "3.0")
    if env is None:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    else:
        monkeypatch.setenv("TRITON_INTERPRET", env)
    interpreted = tk.interpreter_wanted(env, has_cuda)
    mode = doctor.triton_mode(has_cuda)
    assert mode.startswith("CPU interpreter") == interpreted, mode
    assert (mode == "compiled for the GPU") == (has_cuda and not interpreted), mode


def test_mode_matches_this_machine():
    assert tk.INTERPRET == tk.interpreter_wanted(os.environ.get("TRITON_INTERPRET"),
                                                 torch.cuda.is_available())
    if not torch.cuda.is_available():
        assert tk.INTERPRET


def test_import_sets_the_interpreter_before_triton_without_cuda():
    code = ("import sys, os; import attn_course.flash as f; assert 'triton' not in sys.modules; "
            "import attn_course.flash.triton.kernel as tk; "
            "print(tk.INTERPRET, os.environ.get('TRITON_INTERPRET'))")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    expected = "False None" if torch.cuda.is_available() else "True 1"
    assert res.stdout.split() == expected.split()


# A compile-only check for NVIDIA Hopper (sm_90), which needs no GPU: the interpreter
# accepts code that the compiler rejects (for example non-constexpr globals), and the
# compiled kernels' register spills and pipelining are only visible here. Every
# autotuning configuration is compiled, for both head-dim classes, causal and not.
COMPILE_SM90 = r"""
import itertools, os, re, subprocess, sys
os.environ["TRITON_INTERPRET"] = "0"
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from attn_course.flash.triton import kernel as tk

def source(kernel, const):
    const = dict(const)
    sig = {}
    for name in kernel.arg_names:
        if name.startswith("stride") and name.endswith("d"):
            const[name] = 1  # triton specialises unit strides like this at run time
        if name in const:
            sig[name] = "constexpr"
        elif name.startswith("stride") or name in ("N_Q", "N_KV"):
            sig[name] = "i32"
        elif name in ("qk_scale", "sm_scale"):
            sig[name] = "fp32"
        else:
            sig[name] = "*fp32" if name in ("LSE", "DELTA") else "*fp16"
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(kernel.arg_names)
             if sig[n] == "i32" and n.startswith("stride") or sig[n].startswith("*")}
    return ASTSource(kernel, sig, constexprs=const, attrs=attrs)

cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
kernel, table = {"fwd": (tk._fwd_kernel, tk._FWD), "dkdv": (tk._bwd_dkdv_kernel, tk._DKDV),
                 "dq": (tk._bwd_dq_kernel, tk._DQ)}[sys.argv[1]]
for head_dim, causal in itertools.product((64, 128), (False, True)):
    for bm, bn, warps, stages in table[head_dim]:
        const = {"HEAD_DIM": head_dim, "CAUSAL": causal, "DOT_FP32": False,
                 "BLOCK_M": bm, "BLOCK_N": bn}
        c = triton.compile(source(kernel, const), target=GPUTarget("cuda", 90, 32),
                           options={"num_warps": warps, "num_stages": stages})
        path = "/tmp/attn_course_sm90_%d.cubin" % os.getpid()
        with open(path, "wb") as f:
            f.write(c.asm["cubin"])
        usage = subprocess.run([cuobjdump, "-res-usage", path], capture_output=True,
                               text=True).stdout
        os.remove(path)
        stack = int(re.search(r"STACK:(\d+)", usage).group(1))
        pipelined = c.asm["ttgir"].count("async_copy_global_to_local")
        print(f"D={head_dim},causal={causal},tiles={bm}x{bn},warps={warps},stages={stages}",
              stack, pipelined)
"""


@pytest.mark.parametrize("kernel", ["fwd", "dkdv", "dq"])
def test_every_config_compiles_for_hopper_without_spills(kernel):
    pytest.importorskip("triton.backends.nvidia")
    env = {**os.environ, "TRITON_DEFAULT_FP_FUSION": "1"}
    res = subprocess.run([sys.executable, "-c", COMPILE_SM90, kernel], capture_output=True,
                         text=True, env=env, timeout=600)
    if res.returncode != 0 and ("ptxas" in res.stderr.lower() and "not found" in res.stderr):
        pytest.skip("Triton's bundled ptxas is missing")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [line.split() for line in res.stdout.strip().splitlines()]
    table = {"fwd": tk._FWD, "dkdv": tk._DKDV, "dq": tk._DQ}[kernel]
    assert len(rows) == 2 * (len(table[64]) + len(table[128])), rows  # every config compiled
    for config, stack, pipelined in rows:
        assert int(stack) == 0, f"{kernel} {config} spills {stack} bytes of registers"
        assert int(pipelined) > 0, f"{kernel} {config}: loads are not pipelined"


# ----------------------------------------------------------------------------------------
# GPU only: realistic sizes, autotuned tiles
# ----------------------------------------------------------------------------------------

GPU_CASES = [(2, 4, 1024, 64), (1, 4, 4096, 128), (1, 2, 4000, 64), (1, 2, 2048, 128)]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [F16, BF16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", GPU_CASES, ids=lambda s: "x".join(map(str, s)))
def test_gpu_kernel_within_twice_sdpa_error(shape, causal, dtype):
    B, H, N, D = shape
    q, k, v, dout = make_inputs(B, H, N, N, D, dtype, seed=N)
    check_against_reference(q, k, v, dout, causal)


@pytest.mark.gpu
def test_gpu_float32_and_auto_dispatch():
    q, k, v, dout = make_inputs(1, 2, 1000, 1000, 64, F32)
    check_against_reference(q, k, v, dout, causal=True)
    assert resolve_impl("auto", q) == "triton"


@pytest.mark.gpu
def test_gpu_reports_the_autotuned_tiles():
    q, k, v, dout = make_inputs(1, 2, 512, 512, 64, F16)
    q.requires_grad_(True)
    tk.flash_attention(q, k, v, causal=False).backward(dout)
    used = tk.tiles_used()
    for name in ("fwd", "dkdv", "dq"):
        assert "BLOCK_M=" in used[name], used
        assert "warps=" in used[name], used


def test_tiles_used_is_empty_under_the_interpreter():
    if not tk.INTERPRET:
        pytest.skip("compiled mode: covered by test_gpu_reports_the_autotuned_tiles")
    assert tk.tiles_used() == {"fwd": "", "dkdv": "", "dq": ""}


def test_tiles_used_formats_the_autotuners_choice(monkeypatch):
    class FakeTuned:
        def __init__(self, cfg):
            self.best_config = cfg

    cfg = tk._cfg(128, 64, 8, 3)
    monkeypatch.setattr(tk, "INTERPRET", False)
    monkeypatch.setattr(tk, "_fwd_tuned", FakeTuned(cfg), raising=False)
    monkeypatch.setattr(tk, "_dkdv_tuned", FakeTuned(None), raising=False)
    monkeypatch.setattr(tk, "_dq_tuned", FakeTuned(tk._cfg(64, 32, 4, 2)), raising=False)
    assert tk.tiles_used() == {"fwd": "BLOCK_M=128 BLOCK_N=64 warps=8 stages=3", "dkdv": "",
                               "dq": "BLOCK_M=64 BLOCK_N=32 warps=4 stages=2"}
