"""The one entry point ``attn_course.flash.attention`` and the public names of flash/.

Every implementation behind ``attention`` is checked against the float64 loop of
``tests/reference.py`` (output) and a float64 loop over the scores (log-sum-exp), on the
same shapes: T != S, a value head dim Dv != D, broadcast leading dimensions. Every
callable in ``__all__`` of ``attn_course.flash`` and its Triton package is called with
its defaults.
"""

import importlib.util
import inspect
import math

import numpy as np
import pytest
import torch

from attn_course.flash import IMPLS, attention
from attn_course.testing import assert_close
from tests.reference import attention_loop

HAVE_TRITON = importlib.util.find_spec("triton") is not None
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
RUN_IMPLS = [i for i in IMPLS if i != "triton" or HAVE_TRITON]


def lse_loop(q, k, causal, scale=None):
    """log(sum_j exp(scale * q_i . k_j)) per row, float64 loops; q (..., T, D), k (..., S, D)."""
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    q = np.broadcast_to(q, (*lead, *q.shape[-2:]))
    k = np.broadcast_to(k, (*lead, *k.shape[-2:]))
    T, D = q.shape[-2:]
    S = k.shape[-2]
    scale = 1 / math.sqrt(D) if scale is None else scale
    lse = np.zeros((*lead, T))
    for idx in np.ndindex(*lead):
        for i in range(T):
            row = [scale * math.fsum(float(a) * float(b) for a, b in zip(q[idx][i], k[idx][j], strict=False))
                   for j in range(S) if not causal or j <= i]
            m = max(row)
            lse[idx][i] = m + math.log(math.fsum(math.exp(x - m) for x in row))
    return lse


# (q shape, k shape, v shape): Dv < D, Dv > D, T != S both ways, broadcast leading dims.
SHAPES = [
    ((2, 3, 9, 16), (2, 3, 9, 16), (2, 3, 9, 16)),
    ((1, 2, 11, 16), (1, 2, 7, 16), (1, 2, 7, 8)),
    ((2, 5, 24), (2, 13, 24), (2, 13, 40)),
    ((3, 1, 6, 8), (1, 2, 10, 8), (1, 2, 10, 5)),
]


@pytest.mark.parametrize("impl", RUN_IMPLS)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shapes", SHAPES, ids=lambda s: "-".join("x".join(map(str, x)) for x in s))
def test_every_impl_accepts_the_same_shapes_and_returns_lse(impl, causal, shapes):
    g = torch.Generator().manual_seed(sum(sum(s) for s in shapes))
    q, k, v = (torch.randn(*s, generator=g) for s in shapes)
    keep = np.tril(np.ones((q.shape[-2], k.shape[-2]), bool)) if causal else None
    out_ref, _ = attention_loop(q.numpy(), k.numpy(), v.numpy(), keep=keep)
    lse_ref = lse_loop(q.numpy(), k.numpy(), causal)
    out, lse = attention(*(x.to(DEVICE) for x in (q, k, v)), causal=causal, impl=impl,
                         return_lse=True)
    assert out.shape == out_ref.shape
    assert lse.shape == lse_ref.shape
    assert lse.dtype == torch.float32
    assert not lse.requires_grad
    assert_close(out, out_ref, f"{impl} out")
    assert_close(lse, lse_ref, f"{impl} lse", atol=1e-5, rtol=1e-5)
    plain = attention(*(x.to(DEVICE) for x in (q, k, v)), causal=causal, impl=impl)
    assert isinstance(plain, torch.Tensor)
    assert plain.shape == out.shape


@pytest.mark.parametrize("impl", RUN_IMPLS)
def test_gradients_with_a_different_value_head_dim(impl):
    """dq, dk, dv with Dv != D and broadcast k, v against float64 autograd of SDPA."""
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 2, 13, 24, generator=g)
    k = torch.randn(1, 2, 9, 24, generator=g)
    v = torch.randn(1, 2, 9, 12, generator=g)
    dout = torch.randn(2, 2, 13, 12, generator=g)

    def grads(fn, dtype, device):
        leaves = [x.detach().to(device, dtype).clone().requires_grad_() for x in (q, k, v)]
        fn(*leaves).backward(dout.to(device, dtype))
        return [x.grad for x in leaves]

    got = grads(lambda a, b, c: attention(a, b, c, causal=True, impl=impl), torch.float32,
                DEVICE)
    exact = grads(lambda a, b, c: torch.nn.functional.scaled_dot_product_attention(
        a, b.expand(2, 2, 9, 24), c.expand(2, 2, 9, 12), is_causal=True), torch.float64, "cpu")
    for name, a, e in zip(("dq", "dk", "dv"), got, exact, strict=True):
        assert a.shape == e.shape, name
        assert_close(a, e, f"{impl} {name}")


BAD = [
    ((1, 4, 8), (1, 4, 16), (1, 4, 16), "q and k must share the head dim D"),
    ((1, 4, 8), (1, 5, 8), (1, 4, 8), "k and v must share the length S"),
    ((2, 4, 8), (3, 4, 8), (3, 4, 8), "leading dimensions of q, k and v must broadcast"),
    ((1, 0, 8), (1, 4, 8), (1, 4, 8), r"q must have shape \(\.\.\., length, head dim\)"),
]


@pytest.mark.parametrize("bad", BAD, ids=lambda b: b[3][:20])
def test_every_impl_refuses_bad_shapes_with_the_same_message(bad):
    *shapes, pattern = bad
    messages = set()
    for impl in RUN_IMPLS:
        with pytest.raises(ValueError, match=pattern) as err:
            attention(*(torch.zeros(s) for s in shapes), impl=impl)
        messages.add(str(err.value))
    assert len(messages) == 1, messages


def test_lse_is_float64_for_float64_inputs():
    q = torch.randn(3, 5, 4, dtype=torch.float64)
    for impl in ("sdpa", "reference"):
        _, lse = attention(q, q, q, impl=impl, return_lse=True)
        assert lse.dtype == torch.float64
        assert_close(lse, lse_loop(q.numpy(), q.numpy(), False), f"{impl} lse")


# ----------------------------------------------------------------------------------------
# Every public callable works with its defaults
# ----------------------------------------------------------------------------------------

def _np(*shape):
    return np.random.default_rng(0).normal(size=shape)


def _t(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(DEVICE)


# The fewest arguments each public callable needs; every other argument keeps its default.
MINIMAL_CALLS = {
    "attention": lambda f: f(_t(2, 5, 16), _t(2, 7, 16), _t(2, 7, 16)),
    "resolve_impl": lambda f: f("auto", _t(2, 4)),
    "triton_available": lambda f: f(),
    "flash_forward": lambda f: f(_np(5, 8), _np(7, 8), _np(7, 3)),
    "flash_backward": lambda f: f(_np(5, 8), _np(7, 8), _np(7, 3), _np(5, 3), _np(5),
                                  _np(5, 3)),
    "flash_forward_keys_outer": lambda f: f(_np(5, 8), _np(7, 8), _np(7, 3)),
    "flash_decode": lambda f: f(_np(1, 8), _np(9, 8), _np(9, 3), 2),
    "split_partials": lambda f: f(_np(1, 8), _np(9, 8), _np(9, 3), 2),
    "merge_partials": lambda f: f(_np(2, 1, 3), np.zeros((2, 1))),
    "decoding_parallelism": lambda f: f(1, 8, 4096, 4, 132),
    "tiled_io_keys_outer": lambda f: f(1024, 64, 64, 128),
    "flash_block_sizes": lambda f: f(64, 100_000),
    "io_bound": lambda f: f(1024, 64, 100_000),
    "standard_io": lambda f: f(1024, 64),
    "tiled_io": lambda f: f(1024, 64, 128, 64),
    "tiled_io_steps": lambda f: f(100, 16, 32, 16),
    "online_logsumexp": lambda f: f(_np(3, 10)),
    "online_normalizer": lambda f: f(_np(3, 10)),
    "online_softmax": lambda f: f(_np(3, 10)),
    "online_update": lambda f: f(np.full(3, -np.inf), np.zeros(3), _np(3, 4)),
    # attn_course.flash.triton
    "FlashAttentionFunction": lambda f: f.apply(_t(2, 17, 16), _t(2, 17, 16), _t(2, 17, 16)),
    "Tiles": lambda f: f(),
    "flash_attention": lambda f: f(_t(2, 17, 16), _t(2, 9, 16), _t(2, 9, 16)),
    "tiles_used": lambda f: f(),
    "interpreter_wanted": lambda f: f(None, False),
}


def _plot(f):
    import matplotlib

    matplotlib.use("Agg")
    ax = f([256, 1024], 64, [32 * 1024])
    matplotlib.pyplot.close(ax.figure)


MINIMAL_CALLS["plot_io_model"] = _plot
FLASH_MODULES = ["attn_course.flash", "attn_course.flash.api", "attn_course.flash.decoding",
                 "attn_course.flash.io_model", "attn_course.flash.online_softmax",
                 "attn_course.flash.tiled"]
TRITON_MODULES = ["attn_course.flash.triton", "attn_course.flash.triton.kernel",
                  "attn_course.flash.triton.mode"]


def test_the_module_lists_cover_every_module_of_flash():
    import pkgutil

    import attn_course.flash as package

    found = {f"attn_course.flash.{m.name}" for m in pkgutil.walk_packages(package.__path__)
             if not m.name.startswith("triton")}
    assert found <= set(FLASH_MODULES), found - set(FLASH_MODULES)


def _public_callables():
    names = FLASH_MODULES + (TRITON_MODULES if HAVE_TRITON else [])
    for module in map(importlib.import_module, names):
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj) and not inspect.ismodule(obj):
                yield pytest.param(name, obj, id=f"{module.__name__}.{name}")


@pytest.mark.parametrize(("name", "fn"), list(_public_callables()))
def test_every_public_callable_runs_with_its_defaults(name, fn):
    assert name in MINIMAL_CALLS, f"add {name} to MINIMAL_CALLS: every public name is tested"
    MINIMAL_CALLS[name](fn)


def test_the_function_with_default_tiles_matches_the_reference():
    if not HAVE_TRITON:
        pytest.skip("triton is not installed")
    from attn_course.flash.triton import FlashAttentionFunction

    q, k, v = _t(2, 17, 16), _t(2, 9, 16), _t(2, 9, 16)
    out, lse = FlashAttentionFunction.apply(q, k, v)
    assert_close(out, attention_loop(q.cpu().numpy(), k.cpu().numpy(), v.cpu().numpy())[0],
                 "out")
    assert_close(lse, lse_loop(q.cpu().numpy(), k.cpu().numpy(), False), "lse", atol=1e-5,
                 rtol=1e-5)
