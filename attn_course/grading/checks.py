"""The checks that the exercise notebooks' test cells call.

Each check prints ``PASS <what was checked>`` or raises :class:`CheckFailed`, an
``AssertionError`` (so nbgrader counts the test cell as failed) whose message is
``FAIL <what>: <what is wrong>`` and a hint that points at the fix without giving the
answer. In Jupyter the failure shows as that message alone, not as a traceback of
this module (IPython's ``_render_traceback_`` protocol).

Answers are always compared with an independent reference passed in by the test
(float64 numpy, ``attn_course``'s implementations, torch's own functions), never
with the learner's code. Before comparing, every check asks
:mod:`attn_course.grading.integrity` whether code in the notebook has replaced a
numpy, torch or course function since the checks were imported, and fails if so;
the numpy functions used here are also bound when this module is imported.
"""

from __future__ import annotations

import contextlib
import dis
import inspect
import traceback
import types

import numpy as np
import torch

from attn_course.grading import integrity

__all__ = [
    "CheckFailed", "call", "check", "check_close", "check_equal", "check_no_shortcut",
    "check_raises", "check_shape", "check_sums_to_one", "check_type", "python_loop_in",
    "replaced", "to_float64",
]

# Bound now, before any learner code runs (see the module docstring).
_asarray, _float64, _isnan, _isinf, _fabs = np.asarray, np.float64, np.isnan, np.isinf, np.fabs
_argwhere, _logical_or, _print = np.argwhere, np.logical_or, print
_Tensor, _TensorBase = torch.Tensor, torch._C.TensorBase


class CheckFailed(AssertionError):
    """A failed check: ``str()`` is the readable ``FAIL ...`` message with its hint."""

    def __init__(self, name: str, detail: str, hint: str = ""):
        self.name, self.detail, self.hint = name, detail, hint
        text = f"FAIL {name}: {detail}"
        if hint:
            text += f"\n  hint: {hint}"
        super().__init__(text)

    def _render_traceback_(self) -> list[str]:
        return str(self).splitlines()


def _guard(name: str) -> None:
    changed = integrity.verify()
    if changed:
        raise CheckFailed(name, integrity.describe(changed))


def _where(exc: BaseException) -> str:
    """' (line N: `code`)' for the innermost frame of notebook code, if any."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "site-packages" not in f.filename and "attn_course" not in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    line = (f.line or "").strip()
    return f" (line {f.lineno}: `{line}`)" if line else f" (line {f.lineno})"


def call(fn, *args, hint: str = "", copy_args: bool = True, **kwargs):
    """Call the learner's ``fn``; turn a missing or crashing answer into a readable FAIL.

    ``hint`` is shown when the answer raises. With ``copy_args`` (the default) the numpy
    arrays and torch tensors among the arguments are snapshot first, and an answer that
    changed one in place fails with a message naming the argument, rather than with a
    misleading comparison against a reference computed from the changed values.
    """
    name = getattr(fn, "__name__", repr(fn))
    _guard(name)
    if not callable(fn):
        raise CheckFailed(name, f"expected a function, found {type(fn).__name__}",
                          "run the answer cell that defines it (def ...) first")
    given = _copies(args, kwargs) if copy_args else None
    try:
        result = fn(*args, **kwargs)
    except NotImplementedError:
        raise CheckFailed(name, "not written yet: the answer cell still raises "
                          "NotImplementedError",
                          "replace `raise NotImplementedError()` with your code") from None
    except CheckFailed:
        raise
    except Exception as exc:  # the learner's bug, reported in one line
        raise CheckFailed(name, f"raised {type(exc).__name__}: {exc}{_where(exc)}",
                          hint) from None
    if given is not None:
        _check_unchanged(name, fn, args, kwargs, given)
    return result


def _array_like(x) -> bool:
    return isinstance(x, (np.ndarray, _Tensor))


def _snapshot(x):
    if isinstance(x, _Tensor):
        return _TensorBase.clone(_TensorBase.detach(x))
    return x.copy()


def _copies(args, kwargs) -> dict:
    """Snapshots of the array arguments, by position or keyword."""
    snap = {i: _snapshot(a) for i, a in enumerate(args) if _array_like(a)}
    snap.update({k: _snapshot(v) for k, v in kwargs.items() if _array_like(v)})
    return snap


def _same(a, b) -> bool:
    """Same shape, dtype and values (NaN equal to NaN)."""
    if isinstance(a, _Tensor):
        a = _TensorBase.detach(a)
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        equal = a == b
        if a.is_floating_point() or a.is_complex():
            equal = equal | (a.isnan() & b.isnan())
        return bool(equal.all())
    return a.shape == b.shape and a.dtype == b.dtype and bool(
        np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def _check_unchanged(name: str, fn, args, kwargs, given: dict) -> None:
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        params = []
    for key, before in given.items():
        now = args[key] if isinstance(key, int) else kwargs[key]
        if not _same(now, before):
            arg = key if isinstance(key, str) else (
                params[key] if key < len(params) else f"argument {key + 1}")
            raise CheckFailed(name, f"changed its argument `{arg}` in place",
                              "compute into a new array (x = x - m, not x -= m; "
                              "no out=, no in-place methods such as mul_): the caller's "
                              "values must stay as they were")


def to_float64(x):
    """``x`` (numpy array, torch tensor, number or nested list) as a float64 array, or
    None when it is not numeric."""
    if isinstance(x, _Tensor):
        t = _TensorBase.detach(x)
        return _TensorBase.numpy(_TensorBase.double(_TensorBase.cpu(t)))
    try:
        a = _asarray(x)
        return a.astype(_float64) if a.dtype.kind in "biuf" else None
    except (TypeError, ValueError):
        return None


def _is_complex(x) -> bool:
    if isinstance(x, _Tensor):
        return bool(_TensorBase.is_complex(x))
    try:
        return _asarray(x).dtype.kind == "c"
    except (TypeError, ValueError):
        return False


def _require_numeric(name: str, actual, hint: str):
    if _is_complex(actual):
        raise CheckFailed(name, f"your output is complex ({getattr(actual, 'dtype', '')}); "
                          f"expected real numbers",
                          hint or "the answer is real: take the real part (.real) of the "
                          "complex result at the end")
    a = to_float64(actual)
    if a is None:
        extra = " (did the function forget to return?)" if actual is None else ""
        raise CheckFailed(name, f"expected an array, got {type(actual).__name__}{extra}", hint)
    return a


def _shape(x) -> tuple:
    return tuple(int(n) for n in x.shape)


def check(name: str, condition, hint: str = "", detail: str = "the condition is False") -> None:
    """Pass when ``condition`` is true."""
    _guard(name)
    if condition is not True and not (isinstance(condition, np.bool_) and bool(condition)):
        raise CheckFailed(name, detail, hint)
    _print(f"PASS {name}")


def check_shape(name: str, actual, shape, hint: str = "") -> None:
    """Pass when ``actual`` is an array of exactly ``shape``."""
    _guard(name)
    a = _require_numeric(name, actual, hint)
    if _shape(a) != tuple(shape):
        raise CheckFailed(name, f"shape {_shape(a)}, expected {tuple(shape)}", hint)
    _print(f"PASS {name}")


def check_close(name: str, actual, expected, hint: str = "", atol: float = 1e-6,
                rtol: float = 1e-5) -> None:
    """Pass when ``actual`` matches ``expected`` elementwise within ``atol + rtol*|expected|``
    (same shape; NaN matches nothing; infinities must match exactly)."""
    _guard(name)
    a = _require_numeric(name, actual, hint)
    e = to_float64(expected)
    if _shape(a) != _shape(e):
        raise CheckFailed(name, f"shape {_shape(a)}, expected {_shape(e)}", hint)
    bad_nan = _isnan(a)
    if bad_nan.any():
        idx = tuple(int(i) for i in _argwhere(bad_nan)[0])
        raise CheckFailed(name, f"your output has NaN ({int(bad_nan.sum())} of {a.size} "
                          f"entries, first at index {idx})", hint)
    with np.errstate(invalid="ignore"):
        err = _fabs(a - e)
        ok = (err <= atol + rtol * _fabs(e)) | (a == e)
    if not ok.all():
        idx = tuple(int(i) for i in _argwhere(~ok)[0])
        raise CheckFailed(name, f"{int((~ok).sum())} of {a.size} entries differ; first at "
                          f"index {idx}: yours {a[idx]:.6g}, expected {e[idx]:.6g}", hint)
    _print(f"PASS {name}")


def check_equal(name: str, actual, expected, hint: str = "", dtype: str | None = None) -> None:
    """Pass when ``actual`` equals ``expected`` exactly (and has ``dtype``'s kind, e.g.
    ``"bool"``, when given)."""
    _guard(name)
    if dtype is not None:
        got = str(getattr(actual, "dtype", type(actual).__name__)).replace("torch.", "")
        if got != dtype:
            raise CheckFailed(name, f"dtype {got}, expected {dtype}", hint)
    a = _require_numeric(name, actual, hint)
    e = to_float64(expected)
    if _shape(a) != _shape(e):
        raise CheckFailed(name, f"shape {_shape(a)}, expected {_shape(e)}", hint)
    diff = a != e
    if diff.any():
        idx = tuple(int(i) for i in _argwhere(diff)[0])
        raise CheckFailed(name, f"{int(diff.sum())} of {a.size} entries differ; first at "
                          f"index {idx}: yours {a[idx]:g}, expected {e[idx]:g}", hint)
    _print(f"PASS {name}")


def check_type(name: str, actual, kind: str, hint: str = "") -> None:
    """Pass when ``actual`` is a numpy array (``kind="numpy"``) or a torch tensor
    (``kind="torch"``), as the task asks."""
    _guard(name)
    wanted = {"numpy": np.ndarray, "torch": _Tensor}
    if kind not in wanted:
        raise ValueError(f"kind must be 'numpy' or 'torch', got {kind!r}")
    if not isinstance(actual, wanted[kind]):
        what = "a numpy array" if kind == "numpy" else "a torch tensor"
        got = type(actual).__module__.split(".")[0] + "." + type(actual).__name__
        raise CheckFailed(name, f"returned {got}, expected {what}",
                          hint or ("the task works in numpy: build the result with np.*"
                                   if kind == "numpy" else
                                   "the task works in torch: build the result with torch.*"))
    _print(f"PASS {name}")


def check_sums_to_one(name: str, probs, axis: int = -1, hint: str = "") -> None:
    """Pass when ``probs`` is non-negative and sums to 1 along ``axis``."""
    _guard(name)
    p = _require_numeric(name, probs, hint)
    if _isnan(p).any() or _isinf(p).any():
        raise CheckFailed(name, "your output has NaN or inf entries", hint)
    if (p < 0).any():
        raise CheckFailed(name, f"{int((p < 0).sum())} negative probabilities", hint)
    total = p.sum(axis=axis)
    worst = float(_fabs(total - 1.0).max()) if total.size else 0.0
    if worst > 1e-6:
        raise CheckFailed(name, f"sums along axis {axis} are off from 1 by up to {worst:.3g}",
                          hint)
    _print(f"PASS {name}")


def check_raises(name: str, fn, *args, exception=ValueError, hint: str = "", **kwargs) -> None:
    """Pass when ``fn(*args, **kwargs)`` raises ``exception`` (a bad argument is rejected)."""
    _guard(name)
    try:
        fn(*args, **kwargs)
    except exception:
        _print(f"PASS {name}")
        return
    except NotImplementedError:
        raise CheckFailed(name, "not written yet: the answer cell still raises "
                          "NotImplementedError", hint) from None
    except Exception as exc:
        raise CheckFailed(name, f"raised {type(exc).__name__} instead of "
                          f"{exception.__name__}: {exc}", hint) from None
    raise CheckFailed(name, f"returned normally; expected {exception.__name__}", hint)


def check_no_shortcut(name: str, fn, forbidden=(), hint: str = "",
                      modules=("attn_course", "scipy", "sklearn")) -> None:
    """Pass unless ``fn`` uses a ready-made answer: a library object named in ``forbidden``
    (e.g. ``softmax``: ``torch.softmax``, ``F.softmax``, ``x.softmax(...)`` or an imported
    ``softmax``), or anything from one of ``modules``.

    Names are read from the bytecode. A function that the learner defined in the notebook
    may carry a forbidden name (a hand-written ``def softmax``); it is checked in turn, so
    a helper cannot hide a shortcut either.
    """
    _guard(name)
    code = getattr(fn, "__code__", None)
    if code is None:
        raise CheckFailed(name, f"expected a Python function, found {type(fn).__name__}", hint)
    forbidden = set(forbidden)
    seen: set[int] = set()

    def visit(f, where: str) -> None:
        if id(f) in seen:
            return
        seen.add(id(f))
        scope = dict(f.__globals__)
        for var, cell in zip(f.__code__.co_freevars, f.__closure__ or (), strict=False):
            try:
                scope[var] = cell.cell_contents
            except ValueError:  # an empty closure cell
                pass
        for kind, n in sorted(_code_loads(f.__code__)):
            if kind == "import":
                if n.split(".")[0] in modules or set(n.split(".")) & forbidden:
                    raise CheckFailed(name, f"imports {n}{where}", hint)
                continue
            if kind == "attr":
                if n in forbidden:
                    raise CheckFailed(name, f"uses {n}{where}", hint)
                continue
            obj = scope.get(n)
            if _learner_defined(obj, fn):
                visit(obj, f" (in your {n})")
                continue
            real = _library_name(obj)
            if n in forbidden or real in forbidden:
                shown = n if n in forbidden or not real else f"{real} (as {n})"
                raise CheckFailed(name, f"uses {shown}{where}", hint)
            origin = getattr(obj, "__name__", "") if isinstance(obj, types.ModuleType) \
                else getattr(obj, "__module__", "") or ""
            if obj is not None and origin.split(".")[0] in modules:
                raise CheckFailed(name, f"calls {n} from {origin}{where}", hint)

    visit(fn, "")
    _print(f"PASS {name}")


@contextlib.contextmanager
def replaced(fn, name: str, value):
    """While the ``with`` block runs, the global ``name`` that ``fn`` sees is ``value``;
    put back after. Tests use it to grade a later task with the course's helper in place
    of the learner's, so that a mistake in an earlier task does not count twice."""
    scope = getattr(fn, "__globals__", {})
    absent = object()
    saved = scope.get(name, absent)
    scope[name] = value
    try:
        yield
    finally:
        if saved is absent:
            scope.pop(name, None)
        else:
            scope[name] = saved


def python_loop_in(fn, calls=()) -> str:
    """Where ``fn``, or a function of the notebook that it calls, loops in Python: "a loop
    (for, while or a comprehension) in f", "map in f" for a name in ``calls`` (functions
    that loop for you, such as ``map`` or ``np.vectorize``), or "" if nowhere.

    Read from the bytecode: a ``FOR_ITER`` or a backward jump is a loop. Tasks that ask for
    vectorised code check that this is "", tasks that ask for a recurrence that it is not.
    """
    calls = set(calls)
    todo, seen = [fn], set()
    while todo:
        f = todo.pop()
        if id(f) in seen or getattr(f, "__code__", None) is None:
            continue
        seen.add(id(f))
        codes = [f.__code__]
        while codes:
            code = codes.pop()
            for ins in dis.get_instructions(code):
                backward = (ins.opcode in dis.hasjrel or ins.opcode in dis.hasjabs) \
                    and isinstance(ins.argval, int) and ins.argval < ins.offset
                if ins.opname == "FOR_ITER" or backward:
                    return f"a loop (for, while or a comprehension) in {f.__name__}"
                if ins.opname.startswith("LOAD_") and ins.argval in calls:
                    return f"{ins.argval} in {f.__name__}"
            codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
            for name in code.co_names:
                g = f.__globals__.get(name)
                if isinstance(g, types.FunctionType) and g.__globals__ is fn.__globals__:
                    todo.append(g)
    return ""


def _library_name(obj) -> str:
    """The name a library object was defined with (``cumsum`` for ``from torch import
    cumsum as total``), looking through ``functools.partial``; "" for other objects."""
    obj = getattr(obj, "func", obj) if type(obj).__name__ == "partial" else obj
    if isinstance(obj, types.ModuleType):
        return ""
    name = getattr(obj, "__name__", "")
    return name if isinstance(name, str) else ""


def _learner_defined(obj, fn) -> bool:
    """Whether ``obj`` is a function defined in ``fn``'s notebook (it shares its globals)."""
    if isinstance(obj, types.FunctionType):
        return obj.__globals__ is fn.__globals__
    return False


def _code_loads(code: types.CodeType) -> set[tuple[str, str]]:
    """{(kind, name)} read by ``code`` and the code nested in it: kind "attr" for
    attribute and ``from ... import`` names, "import" for imported modules, "global" for
    global and closure names (local variables are the function's own)."""
    found = set()
    for ins in dis.get_instructions(code):
        op = ins.opname
        if op in ("LOAD_ATTR", "LOAD_METHOD", "LOAD_SUPER_ATTR", "IMPORT_FROM"):
            found.add(("attr", str(ins.argval)))
        elif op == "IMPORT_NAME":
            found.add(("import", str(ins.argval)))
        elif op in ("LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF", "LOAD_CLASSDEREF",
                    "LOAD_FROM_DICT_OR_DEREF", "LOAD_FROM_DICT_OR_GLOBALS"):
            found.add(("global", str(ins.argval)))
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found |= _code_loads(const)
    return found


integrity.ensure_snapshot()
