"""Detect code in a notebook that tampers with the libraries the tests rely on.

A test cell compares a learner's answer with a reference computed by numpy, torch or
``attn_course``, in the same Python process as the learner's code. An answer cell can
therefore change what the test sees, for example ``np.allclose = lambda *a, **k: True``,
``attn_course.softmax.softmax = my_softmax`` or an IPython hook that swallows the
errors of later cells. This module takes a snapshot, when it is first imported, of
the objects the checks depend on, and :func:`verify` lists every one that has since
been replaced:

- the public attributes of numpy, numpy.linalg, numpy.random, math, torch,
  torch.nn.functional, torch.linalg, the course's reference modules and the grading
  checks themselves, and the identity of those modules in ``sys.modules``;
- the class dictionaries of ``torch.Tensor``, ``torch.nn.Module``, ``torch.nn.Linear``,
  ``torch.nn.MultiheadAttention`` and the course's ``MultiHeadAttention``;
- a fixed set of builtins (``abs``, ``float``, ``isinstance``, ``__import__``, ...);
- the IPython shell's input and AST transformers, custom exception handlers and the
  methods that run a cell or report its error, the kernel's message sending, and
  ``sys.settrace`` / ``sys.setprofile`` hooks.

The snapshot is taken when ``attn_course.grading.checks`` has finished importing
(:func:`ensure_snapshot`). The grader imports the checks before the first cell of a
submission runs, every check calls :func:`verify` before it trusts a comparison, and
a final cell calls :func:`report`. This stops the patches above; it does not stop a determined learner
who reads this file and, for example, edits the snapshot itself: the kernel runs
arbitrary code. ``docs/instructors.md`` states the full threat model.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import sys

MODULES = (
    "builtins", "math", "numpy", "numpy.linalg", "numpy.random", "torch",
    "torch.nn.functional", "torch.linalg", "torch.testing",
    "attn_course.validation", "attn_course.testing", "attn_course.similarity",
    "attn_course.softmax", "attn_course.attention", "attn_course.multihead",
    "attn_course.grading.checks", "attn_course.grading.integrity",
)
BUILTINS = (
    "__import__", "abs", "all", "any", "bool", "callable", "compile", "dict", "enumerate",
    "eval", "exec", "float", "getattr", "hasattr", "hash", "id", "int", "isinstance",
    "issubclass", "len", "list", "map", "max", "min", "object", "print", "range", "repr",
    "round", "set", "setattr", "sorted", "str", "sum", "super", "tuple", "type", "vars", "zip",
)
SHELL_METHODS = (
    "run_cell", "run_cell_async", "run_code", "run_ast_nodes", "transform_cell",
    "showtraceback", "_showtraceback", "showsyntaxerror", "should_run_async",
)


def _classes():
    import torch

    from attn_course.multihead import MultiHeadAttention

    return (torch.Tensor, torch.nn.Module, torch.nn.Linear, torch.nn.MultiheadAttention,
            MultiHeadAttention)


def _module_items(module) -> dict:
    if module is builtins:
        return {name: getattr(builtins, name) for name in BUILTINS}
    return {k: v for k, v in vars(module).items() if not k.startswith("_")}


def _shell_state() -> dict:
    """What IPython (when running) uses to turn a cell into outputs and errors."""
    try:
        from IPython import get_ipython
    except ImportError:
        return {}
    ip = get_ipython()
    if ip is None:
        return {}
    state = {
        "IPython input_transformers_cleanup": tuple(ip.input_transformers_cleanup),
        "IPython input_transformers_post": tuple(ip.input_transformers_post),
        "IPython ast_transformers": tuple(ip.ast_transformers),
        "IPython custom_exceptions": tuple(ip.custom_exceptions),
        "IPython displayhook": ip.displayhook,
        "IPython display_pub": ip.display_pub,
        "sys.excepthook": sys.excepthook,
        "sys.gettrace()": sys.gettrace(),
        "sys.getprofile()": sys.getprofile(),
    }
    for name in SHELL_METHODS:
        state[f"IPython shell.{name}"] = getattr(ip, name, None)
    kernel = getattr(ip, "kernel", None)
    session = getattr(kernel, "session", None)
    if session is not None:
        state["kernel session.send"] = session.send
        state["kernel session.serialize"] = session.serialize
        state["kernel iopub_socket"] = getattr(kernel, "iopub_socket", None)
    return state


def take_snapshot() -> dict:
    """Record the current objects; import every watched module first."""
    snap: dict = {"modules": {}, "attrs": {}, "classes": {}, "shell": _shell_state()}
    for name in MODULES:
        try:
            module = sys.modules.get(name) or importlib.import_module(name)
        except ImportError:
            continue
        snap["modules"][name] = module
        snap["attrs"][name] = _module_items(module)
    for cls in _classes():
        qual = f"{cls.__module__}.{cls.__qualname__}"
        snap["classes"][qual] = (cls, dict(vars(cls)))
    return snap


def _torch_rewrapped(a, b) -> bool:
    """True when ``b`` is torch's own ``_disable_dynamo`` wrapper around ``a``.

    Importing ``torch._dynamo`` (which torch.compile, torch.profiler and others do
    lazily) rebinds ``torch.manual_seed`` to such a wrapper; that is torch, not the
    learner. The wrapper's code lives in torch's ``_compile.py``.
    """
    code = getattr(b, "__code__", None)
    return (getattr(b, "__wrapped__", None) is a and code is not None
            and code.co_filename == _TORCH_COMPILE_FILE)


def _replaced(old, new) -> bool:
    return new is not old and not _torch_rewrapped(old, new)


def _same(a, b) -> bool:
    if a is b:
        return True
    if type(a) is tuple and type(b) is tuple:  # noqa: E721
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=False))
    # bound methods are recreated on every attribute access
    func_a, func_b = getattr(a, "__func__", None), getattr(b, "__func__", None)
    return (func_a is not None and func_a is func_b
            and getattr(a, "__self__", None) is getattr(b, "__self__", None))


def ensure_snapshot() -> dict:
    """The snapshot this process compares against, taken on the first call."""
    global _SNAPSHOT
    if _SNAPSHOT is None:
        _SNAPSHOT = take_snapshot()
    return _SNAPSHOT


def verify(snapshot: dict | None = None) -> list[str]:
    """Names of the watched objects that differ from ``snapshot`` (default: the one
    from :func:`ensure_snapshot`). An empty list means nothing was replaced."""
    snap = ensure_snapshot() if snapshot is None else snapshot
    changed = []
    for name, module in snap["modules"].items():
        if sys.modules.get(name) is not module:
            changed.append(f"sys.modules[{name!r}]")
        current = vars(module) if module is not builtins else vars(builtins)
        for attr, obj in snap["attrs"][name].items():
            if _replaced(obj, current.get(attr, _MISSING)):
                changed.append(f"{name}.{attr}")
    for qual, (cls, attrs) in snap["classes"].items():
        current = vars(cls)
        for attr, obj in attrs.items():
            if _replaced(obj, current.get(attr, _MISSING)):
                changed.append(f"{qual}.{attr}")
        for attr in current.keys() - attrs.keys():
            # A new attribute matters when it changes behaviour: an operator, or a name
            # that now shadows what a base class defines. A brand-new method (as
            # transformers adds to nn.Module on import) changes nothing the checks use.
            shadows = any(attr in vars(base) for base in cls.__mro__[1:])
            if attr in _OPERATORS or shadows:
                changed.append(f"{qual}.{attr}")
    now = _shell_state()
    for key, value in snap["shell"].items():
        if not _same(now.get(key, _MISSING), value):
            changed.append(key)
    return changed


def describe(changed: list[str], limit: int = 5) -> str:
    """One sentence naming what was replaced, for feedback."""
    shown = ", ".join(changed[:limit]) + (f" and {len(changed) - limit} more"
                                          if len(changed) > limit else "")
    return (f"code in this notebook replaced {shown}; the checks compare your answers "
            f"with numpy, torch and attn_course and cannot trust them after such a "
            f"change. Remove the assignment and restart the kernel")


def report(token: str) -> None:
    """Print ``integrity ok <token>`` or raise listing what was replaced (the grader's
    last cell; the token is new for every run)."""
    changed = verify()
    if changed:
        listed = "; ".join(changed[:50])
        builtins.print(f"integrity: {listed}")  # printed too, in case errors are hidden
        raise RuntimeError(f"integrity: {listed}")
    builtins.print(f"integrity ok {token}")


_MISSING = object()
_OPERATORS = frozenset({
    "__add__", "__sub__", "__mul__", "__truediv__", "__matmul__", "__eq__", "__lt__",
    "__le__", "__gt__", "__ge__", "__ne__", "__abs__", "__neg__", "__getitem__",
    "__array__", "__float__", "__bool__", "__torch_function__",
})
_SNAPSHOT = None  # set by ensure_snapshot()
_TORCH_COMPILE_FILE = importlib.util.find_spec("torch._compile").origin
