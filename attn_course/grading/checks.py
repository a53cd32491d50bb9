"""The checks that the exercise notebooks' test cells call.

Each check prints ``PASS <what was checked>`` or raises :class:`CheckFailed`, an
``AssertionError`` (so nbgrader counts the test cell as failed) whose message is
``FAIL <what>: <what is wrong>`` and a hint that points at the fix without giving the
answer. In Jupyter the failure shows as that message alone, not as a traceback of
this module (IPython's ``_render_traceback_`` protocol).

Answers are always compared with an independent reference passed in by the test
(float64 numpy, ``attn_course``'s implementations, torch's own functions), never
with the learner's code.

The same test cells run in two places:

- **in the learner's own kernel** (the learner running them in Jupyter, nbval, nbgrader):
  the learner's functions are ordinary Python functions. Before comparing, every
  check asks :mod:`attn_course.grading.integrity` whether code in the notebook has
  replaced a numpy, torch or course function, and fails if so;
- **in the grader's trusted worker** (``attn-course grade`` and ``check``): the test
  cell runs outside the learner's process, and the learner's functions are
  :class:`~attn_course.grading.remote.Remote` objects; :func:`call` sends the
  arguments to the learner's process and gets plain data back, the shortcut and loop
  checks read code compiled on the grader's side, and :func:`share` /
  :func:`in_learner` place an object or run a probe where the learner's code runs.
"""

from __future__ import annotations

import contextlib
import dis
import inspect
import traceback
import types

import numpy as np
import torch

from attn_course.grading import integrity, remote
from attn_course.grading.remote import LearnerError, Remote

__all__ = [
    "CheckFailed", "call", "check", "check_close", "check_equal", "check_no_shortcut",
    "check_raises", "check_shape", "check_sums_to_one", "check_type", "hints", "in_learner",
    "learner_value", "python_loop_in", "replaced", "share", "show_hint", "to_float64",
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


#: The later hints of each task (stage 2, 3, ...), registered by its test cell.
HINTS: dict[str, list[str]] = {}


def hints(task: str, *stages: str) -> None:
    """Register ``task``'s later hints: stage 2, 3, ... (stage 1 is the hint a failing check
    shows). A test cell calls this first, so that :func:`show_hint` (in the notebook) and
    ``attn-course check NOTEBOOK --hint N`` (from the shell) can show them on request.
    Each stage says more than the one before; none gives the solution's code."""
    HINTS[str(task)] = [str(s) for s in stages]


def show_hint(task, stage: int = 2) -> None:
    """Print hint ``stage`` of ``task`` ("Task 2" or 2): run the task's test cell first."""
    key = f"Task {task}" if isinstance(task, int) else str(task)
    later = HINTS.get(key)
    if later is None:
        known = ", ".join(sorted(HINTS)) or "none yet"
        _print(f"no hints registered for {key!r}: run its test cell first (registered: {known})")
        return
    if stage <= 1:
        _print(f"hint 1 for {key} is the one its failing check prints")
    elif stage - 2 < len(later):
        _print(f"hint {stage} for {key}: {later[stage - 2]}")
    else:
        _print(f"{key} has hints 1 to {len(later) + 1}; hint {stage} does not exist")


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
    if isinstance(fn, Remote):
        return _call_remote(fn, name, args, kwargs, hint, copy_args)
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


def _learner_failure(name: str, exc: LearnerError, hint: str) -> CheckFailed:
    """The FAIL for an exception the learner's code raised in its own process."""
    if exc.is_a(NotImplementedError):
        return CheckFailed(name, "not written yet: the answer cell still raises "
                           "NotImplementedError",
                           "replace `raise NotImplementedError()` with your code")
    if exc.ename == "NameError" and f"'{name}'" in exc.evalue:
        return CheckFailed(name, "is not defined in your notebook",
                           "run the answer cell that defines it (def ...) first")
    if not exc.evalue:
        return CheckFailed(name, f"raised {exc.ename} (its message is not shown for hidden "
                           f"tests)", hint)
    return CheckFailed(name, f"raised {exc.ename}: {exc.evalue}{exc.where}", hint)


def _call_remote(fn: Remote, name: str, args, kwargs, hint: str, copy_args: bool):
    session = fn._session
    try:
        result, after = session.call(fn._target, args, kwargs, report_args=copy_args)
    except LearnerError as exc:
        if type(exc).__name__ == "LearnerTimeout":
            raise
        raise _learner_failure(name, exc, hint) from None
    for key, now in after.items():
        before = args[key] if isinstance(key, int) else kwargs[key]
        if _array_like(before) and _array_like(now) and not _same(now, _snapshot(before)):
            code = session.code_of(fn.remote_name or "")
            params = list(code.co_varnames[:code.co_argcount]) if code else []
            arg = key if isinstance(key, str) else (
                params[key] if key < len(params) else f"argument {key + 1}")
            raise CheckFailed(name, f"changed its argument `{arg}` in place", _IN_PLACE_HINT)
    return result


_IN_PLACE_HINT = ("compute into a new array (x = x - m, not x -= m; no out=, no in-place methods "
                  "such as mul_): the caller's values must stay as they were")


def _identity(x):
    return x


def learner_value(x):
    """A variable of the learner's notebook (a prediction, a chosen option) as plain data:
    in the grader, fetched from the learner's process; in the learner's kernel, ``x``."""
    if isinstance(x, Remote):
        try:
            return x._session.call({"pickled": x._session._pickle(_identity)}, (x,), {})[0]
        except LearnerError as exc:
            if type(exc).__name__ == "LearnerTimeout":
                raise
            name = x.remote_name or "the value"
            raise CheckFailed(name, f"is not defined in your notebook ({exc.ename})",
                              f"run the answer cell that sets {name} first") from None
    return x


def share(obj):
    """``obj`` where the learner's code runs: in the grader, a copy kept in the learner's
    process (a handle to it); in the learner's own kernel, ``obj`` itself."""
    session = remote.current()
    return session.share(obj) if session is not None else obj


def in_learner(name: str, probe, *args, hint: str = "", **kwargs):
    """``probe(*args, **kwargs)`` run where the learner's code runs: in the grader, in the
    learner's process, on its objects (arguments that are the learner's functions or
    objects placed with :func:`share` are used there; the result comes back as plain
    data); in the learner's own kernel, here. A failure in it is a FAIL of check ``name`` with ``hint``."""
    session = remote.current()
    if session is None:
        return call(probe, *args, hint=hint, copy_args=False, **kwargs)
    try:
        return session.run_here(probe, args, kwargs)
    except LearnerError as exc:
        if type(exc).__name__ == "LearnerTimeout":
            raise
        if exc.ename == "CheckFailed" and exc.evalue.startswith("FAIL "):
            raise CheckFailed(name, exc.evalue.split(": ", 1)[-1].split("\n  hint: ")[0],
                              hint) from None
        raise _learner_failure(name, exc, hint) from None


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
            raise CheckFailed(name, f"changed its argument `{arg}` in place", _IN_PLACE_HINT)


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
    except LearnerError as exc:  # raised in the learner's process
        if type(exc).__name__ == "LearnerTimeout":
            raise
        if exc.is_a(exception):
            _print(f"PASS {name}")
            return
        if exc.is_a(NotImplementedError):
            raise CheckFailed(name, "not written yet: the answer cell still raises "
                              "NotImplementedError", hint) from None
        detail = f": {exc.evalue}" if exc.evalue else ""
        raise CheckFailed(name, f"raised {exc.ename} instead of {exception.__name__}{detail}",
                          hint) from None
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

    Names are read from the bytecode (in the grader, compiled there from the submitted
    cells). A function that the learner defined in the notebook may carry a forbidden name
    (a hand-written ``def softmax``); it is checked in turn, so a helper cannot hide a
    shortcut either.
    """
    _guard(name)
    forbidden = set(forbidden)
    seen: set = set()

    def visit(view: _FunctionView, where: str) -> None:
        if view.key in seen:
            return
        seen.add(view.key)
        loads = _code_loads(view.code)
        scope = view.describe({n for kind, n in loads if kind == "global"})
        for kind, n in sorted(loads):
            if kind == "import":
                if n.split(".")[0] in modules or set(n.split(".")) & forbidden:
                    raise CheckFailed(name, f"imports {n}{where}", hint)
                continue
            if kind == "attr":
                if n in forbidden:
                    raise CheckFailed(name, f"uses {n}{where}", hint)
                continue
            d = scope.get(n) or _MISSING
            if d["kind"] == "learner":
                sub = view.child(n)
                if sub is not None:
                    visit(sub, f" (in your {n})")
                    continue
            real = d["name"] if d["kind"] == "object" else ""
            if n in forbidden or real in forbidden:
                shown = n if n in forbidden or not real else f"{real} (as {n})"
                raise CheckFailed(name, f"uses {shown}{where}", hint)
            origin = d["module"]
            if d["kind"] in ("module", "object") and origin.split(".")[0] in modules:
                raise CheckFailed(name, f"calls {n} from {origin}{where}", hint)

    visit(_view(fn, name, hint), "")
    _print(f"PASS {name}")


_MISSING = {"kind": "missing", "module": "", "name": ""}


class _FunctionView:
    """What the code checks need of a learner's function: its code, what the names it
    reads refer to, and the views of the notebook's functions it calls."""

    key: object
    code: types.CodeType

    def describe(self, names) -> dict:
        raise NotImplementedError

    def child(self, name: str):
        raise NotImplementedError


class _LocalView(_FunctionView):
    """A function in this process (the learner's own kernel)."""

    def __init__(self, fn):
        self.fn, self.key, self.code = fn, id(fn), fn.__code__

    def _scope(self) -> dict:
        scope = dict(self.fn.__globals__)
        for var, cell in zip(self.code.co_freevars, self.fn.__closure__ or (), strict=False):
            try:
                scope[var] = cell.cell_contents
            except ValueError:  # an empty closure cell
                pass
        return scope

    def describe(self, names) -> dict:
        from attn_course.grading.learner import _ABSENT, _descriptor

        scope = self._scope()
        return {n: _descriptor(scope.get(n, _ABSENT), self.fn.__globals__) for n in names}

    def child(self, name: str):
        obj = self._scope().get(name)
        if isinstance(obj, types.FunctionType) and obj.__globals__ is self.fn.__globals__:
            return _LocalView(obj)
        return None


class _RemoteView(_FunctionView):
    """A function of the notebook graded in the learner's process: its code compiled
    here from the submitted cells; what its names refer to asked of that process."""

    def __init__(self, session, fname: str, code):
        self.session, self.fname, self.key, self.code = session, fname, ("remote", fname), code

    def describe(self, names) -> dict:
        raw = self.session.describe({"global": self.fname}, names)
        out = {}
        for n in names:
            d = raw.get(n)
            if not isinstance(d, dict):
                d = _MISSING
            out[n] = {k: str(d.get(k, ""))[:200] for k in ("kind", "module", "name")}
        return out

    def child(self, name: str):
        code = self.session.code_of(name)
        return _RemoteView(self.session, name, code) if code is not None else None


def _view(fn, name: str, hint: str) -> _FunctionView:
    if isinstance(fn, Remote):
        code = fn._session.code_of(fn.remote_name or "")
        if code is None:
            raise CheckFailed(name, f"could not read the code of {fn.__name__}: it is not "
                              f"defined with `def` at the top of an answer cell", hint or
                              "define the function with def in its answer cell")
        return _RemoteView(fn._session, fn.remote_name, code)
    if getattr(fn, "__code__", None) is None:
        raise CheckFailed(name, f"expected a Python function, found {type(fn).__name__}", hint)
    return _LocalView(fn)


@contextlib.contextmanager
def replaced(fn, name: str, value):
    """While the ``with`` block runs, the global ``name`` that ``fn`` sees is ``value``;
    put back after. Tests use it to grade a later task with the course's helper in place
    of the learner's, so that a mistake in an earlier task does not count twice."""
    if isinstance(fn, Remote):
        token = fn._session.set_global(fn._target, name, value)
        try:
            yield
        finally:
            fn._session.restore_global(token)
        return
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
    try:
        todo = [_view(fn, getattr(fn, "__name__", "the function"), "")]
    except CheckFailed:
        return ""
    seen: set = set()
    while todo:
        view = todo.pop()
        if view.key in seen:
            continue
        seen.add(view.key)
        fname = view.code.co_name
        codes = [view.code]
        names: set[str] = set()
        while codes:
            code = codes.pop()
            for ins in dis.get_instructions(code):
                backward = (ins.opcode in dis.hasjrel or ins.opcode in dis.hasjabs) \
                    and isinstance(ins.argval, int) and ins.argval < ins.offset
                if ins.opname == "FOR_ITER" or backward:
                    return f"a loop (for, while or a comprehension) in {fname}"
                if ins.opname.startswith("LOAD_") and ins.argval in calls:
                    return f"{ins.argval} in {fname}"
            codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
            names |= set(code.co_names)
        kinds = view.describe(names)
        for n in sorted(names):
            if (kinds.get(n) or _MISSING)["kind"] == "learner":
                sub = view.child(n)
                if sub is not None:
                    todo.append(sub)
    return ""


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
