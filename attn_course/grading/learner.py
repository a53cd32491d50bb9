"""The learner's side of grading: runs a submission's cells, answers the grader's calls.

Started by :mod:`attn_course.grading.worker` inside the sandbox
(:mod:`attn_course.grading.isolation`) as ``python -m attn_course.grading.learner``,
with a pipe to the grader on stdin and stdout. It sets its resource limits, imports
numpy and torch, says it is ready, then serves requests (:mod:`attn_course.grading.wire`):

- ``exec``: run the code of a cell (answer, set-up or added cell) in the notebook's
  namespace, under a time limit, and reply with what it printed and its error;
- ``call``: call a function of the notebook (or an object kept here, or a function the
  grader sent) with arguments the grader pickled; reply with the result as plain data,
  or a handle when it is not plain data, and with the array arguments as they are
  after the call (so that the grader can tell whether the answer changed them);
- ``share``: keep an object the grader sent (a model, say) and reply with its handle;
- ``setglobal``/``restoreglobal``: put a course function in place of one of the
  notebook's for a while (grading a later task without an earlier task's mistake);
- ``describe``: what the names a function reads refer to (for the shortcut checks,
  which read the function's code, compiled on the grader's side).

Nothing here is trusted: the learner's code runs in this process and can change any
of it. The grader computes every verdict on its side from the plain data it gets.
"""

from __future__ import annotations

import builtins
import io
import linecache
import os
import resource
import signal
import sys
import traceback
import types

from attn_course.grading import wire

KEEP_TEXT = 4000  # characters of printed output kept per request


class GraderTimeout(BaseException):
    """Raised in the learner's code when a request runs past its time limit."""


class _Capped(io.TextIOBase):
    def __init__(self, limit: int):
        self.parts, self.size, self.limit = [], 0, limit

    def writable(self) -> bool:
        return True

    def write(self, text) -> int:
        text = str(text)
        if self.size < self.limit:
            self.parts.append(text[: self.limit - self.size])
        self.size += len(text)
        return len(text)

    def text(self) -> str:
        out = "".join(self.parts)
        if self.size > self.limit:
            out += f"\n[output truncated after {self.limit} characters]"
        return out


def set_limits(memory: int, files: int, processes: int = 0) -> None:
    """Address space, file size, core dumps and (when given) the number of processes."""
    pairs = [(resource.RLIMIT_AS, memory), (resource.RLIMIT_FSIZE, files), (resource.RLIMIT_CORE, 0)]
    if processes:
        pairs.append((resource.RLIMIT_NPROC, processes))
    for limit, value in pairs:
        if value or limit == resource.RLIMIT_CORE:
            soft, hard = resource.getrlimit(limit)
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(limit, (value, value))


class _IPythonStub:
    """``get_ipython()`` for cells with magics (``%matplotlib inline``): they do nothing."""

    def run_line_magic(self, name, line, *args, **kwargs):
        return None

    def run_cell_magic(self, name, line, cell, *args, **kwargs):
        return None

    def system(self, cmd, *args, **kwargs):
        print(f"(shell commands do not run while grading: !{cmd})")

    getoutput = system


def transform(code: str) -> str:
    """IPython's magics and ``!`` lines as plain Python (they become no-ops)."""
    if "%" not in code and "!" not in code:
        return code
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(code)
    except Exception:  # not valid IPython either: let compile() report it
        return code


class Server:
    def __init__(self, fd_in: int, fd_out: int, output_limit: int):
        self.fd_in, self.fd_out, self.output_limit = fd_in, fd_out, output_limit
        self.ns: dict = {"__name__": "__main__", "__builtins__": builtins,
                         "get_ipython": _IPythonStub}
        self.handles: dict[int, object] = {}
        self.saved: dict[int, tuple] = {}
        self.next_id = 1
        self.cells = 0

    # -- plumbing ---------------------------------------------------------------------
    def keep(self, obj) -> dict:
        hid = self.next_id
        self.next_id += 1
        self.handles[hid] = obj
        return {"__handle__": hid, "type": _type_name(obj),
                "callable": callable(obj)}

    def resolve(self, target: dict):
        if "handle" in target:
            return self.handles[int(target["handle"])]
        if "global" in target:
            name = target["global"]
            if name not in self.ns:
                raise NameError(f"name '{name}' is not defined")
            return self.ns[name]
        if "pickled" in target:
            return wire.loads(target["pickled"], self.persistent_load)
        raise ValueError(f"unknown target {target!r}")

    def persistent_load(self, pid):
        kind, value = pid
        return self.resolve({kind: value})

    def value(self, obj):
        try:
            return wire.encode(obj)
        except wire.Unencodable:
            return self.keep(obj)

    def run(self, fn, timeout: float):
        """``fn()`` with stdout captured and a time limit; returns the reply's fields."""
        out = _Capped(self.output_limit)
        old = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = out
        signal.setitimer(signal.ITIMER_REAL, max(timeout, 0.01))
        reply: dict = {}
        try:
            reply["result"] = fn()
            reply["status"] = "ok"
        except GraderTimeout:
            reply["status"] = "timeout"
        except BaseException as exc:  # noqa: BLE001 - everything the learner's code raises
            signal.setitimer(signal.ITIMER_REAL, 0)
            reply.update(status="error", **_describe_error(exc))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            sys.stdout, sys.stderr = old
        reply["stdout"] = out.text()[:KEEP_TEXT * 4]
        return reply

    # -- requests -----------------------------------------------------------------------
    def op_exec(self, msg: dict) -> dict:
        self.cells += 1
        filename = f"<cell {msg.get('index', self.cells)}>"
        code = transform(str(msg["code"]))
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)

        def go():
            exec(compile(code, filename, "exec"), self.ns)  # noqa: S102 - the learner's cell

        reply = self.run(go, float(msg.get("timeout", 30)))
        reply.pop("result", None)
        return reply

    def op_call(self, msg: dict) -> dict:
        fn = self.resolve(msg["target"])
        args, kwargs = wire.loads(msg["args"], self.persistent_load) if msg.get("args") else ((), {})
        reply = self.run(lambda: fn(*args, **kwargs), float(msg.get("timeout", 30)))
        if reply["status"] == "ok":
            result = reply.pop("result")
            try:
                reply["value"] = self.value(result)
            except Exception as exc:  # encoding a strange object failed: keep it here
                reply["value"] = self.keep(result)
                reply["note"] = f"{type(exc).__name__}"
            if msg.get("report_args"):
                reply["args_after"] = [_array_or_none(a) for a in args]
                reply["kwargs_after"] = {k: _array_or_none(v) for k, v in kwargs.items()}
        return reply

    def op_getattr(self, msg: dict) -> dict:
        obj = self.resolve(msg["target"])
        reply = self.run(lambda: getattr(obj, str(msg["attr"])), float(msg.get("timeout", 10)))
        if reply["status"] == "ok":
            reply["value"] = self.value(reply.pop("result"))
        return reply

    def op_share(self, msg: dict) -> dict:
        obj = wire.loads(msg["value"], self.persistent_load)
        return {"status": "ok", "value": self.keep(obj)}

    def op_setglobal(self, msg: dict) -> dict:
        fn = self.resolve(msg["target"])
        scope = getattr(fn, "__globals__", self.ns)
        name = str(msg["name"])
        value = wire.loads(msg["value"], self.persistent_load)
        token = self.next_id
        self.next_id += 1
        self.saved[token] = (scope, name, scope.get(name, _ABSENT))
        scope[name] = value
        return {"status": "ok", "value": token}

    def op_restoreglobal(self, msg: dict) -> dict:
        scope, name, old = self.saved.pop(int(msg["token"]))
        if old is _ABSENT:
            scope.pop(name, None)
        else:
            scope[name] = old
        return {"status": "ok", "value": None}

    def op_describe(self, msg: dict) -> dict:
        """``{name: {"kind", "module", "name"}}`` for the names ``target`` reads."""
        fn = self.resolve(msg["target"])
        scope = dict(getattr(fn, "__globals__", self.ns))
        code = getattr(fn, "__code__", None)
        for var, cell in zip(getattr(code, "co_freevars", ()), getattr(fn, "__closure__", None) or (),
                             strict=False):
            try:
                scope[var] = cell.cell_contents
            except ValueError:
                pass
        out = {}
        for name in msg.get("names", []):
            name = str(name)
            obj = scope.get(name, _ABSENT)
            out[name] = _descriptor(obj, self.ns)
        return {"status": "ok", "value": wire.encode(out)}

    def op_release(self, msg: dict) -> dict:
        self.handles.pop(int(msg["handle"]), None)
        return {"status": "ok", "value": None}

    def serve(self) -> None:
        wire.send(self.fd_out, {"status": "ready", "pid": os.getpid()})
        while True:
            try:
                msg = wire.receive(self.fd_in)
            except (EOFError, OSError, wire.ProtocolError):
                return
            op = getattr(self, f"op_{msg.get('op')}", None)
            try:
                reply = op(msg) if op else {"status": "error", "ename": "ValueError",
                                            "evalue": f"unknown request {msg.get('op')!r}"}
            except BaseException as exc:  # noqa: BLE001 - a request the grader got wrong
                reply = {"status": "error", **_describe_error(exc)}
            try:
                wire.send(self.fd_out, reply)
            except OSError:
                return
            except (TypeError, ValueError) as exc:  # something not JSON slipped through
                wire.send(self.fd_out, {"status": "error", "ename": "GraderError",
                                        "evalue": f"the reply could not be sent: {exc}"})


_ABSENT = object()


def _type_name(obj) -> str:
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def _descriptor(obj, ns) -> dict:
    if obj is _ABSENT:
        return {"kind": "missing", "module": "", "name": ""}
    if isinstance(obj, types.FunctionType) and obj.__globals__ is ns:
        return {"kind": "learner", "module": "", "name": obj.__name__}
    if type(obj).__name__ == "partial":
        obj = getattr(obj, "func", obj)
    if isinstance(obj, types.ModuleType):
        return {"kind": "module", "module": obj.__name__, "name": ""}
    module = getattr(obj, "__module__", "") if not isinstance(obj, (int, float, str)) else ""
    name = getattr(obj, "__name__", "")
    return {"kind": "object", "module": module if isinstance(module, str) else "",
            "name": name if isinstance(name, str) else ""}


def _array_or_none(x):
    import numpy as np

    try:
        import torch
        arrays = (np.ndarray, torch.Tensor)
    except ImportError:  # pragma: no cover
        arrays = (np.ndarray,)
    if isinstance(x, arrays):
        try:
            return wire.encode(x)
        except wire.Unencodable:
            return None
    return None


def _describe_error(exc: BaseException) -> dict:
    try:
        evalue = str(exc)
    except BaseException:  # noqa: BLE001 - a learner's exception whose str() fails
        evalue = "<its message could not be read>"
    where = ""
    try:
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if f.filename.startswith("<cell")]
        if frames:
            f = frames[-1]
            where = f" (line {f.lineno}: `{(f.line or '').strip()}`)" if f.line else f" (line {f.lineno})"
    except BaseException:  # noqa: BLE001
        pass
    mro = [c.__name__ for c in type(exc).__mro__]
    return {"ename": type(exc).__name__, "evalue": evalue[:KEEP_TEXT], "mro": mro[:20],
            "where": where[:300]}


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m attn_course.grading.learner")
    p.add_argument("--memory", type=int, default=0)
    p.add_argument("--files", type=int, default=0)
    p.add_argument("--processes", type=int, default=0)
    p.add_argument("--output-limit", type=int, default=1_000_000)
    args = p.parse_args(argv)
    fd_in, fd_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.set_inheritable(fd_in, False)
    os.set_inheritable(fd_out, False)

    def on_alarm(signum, frame):
        raise GraderTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    set_limits(args.memory, args.files, args.processes)
    sys.modules.setdefault("rfc3987_syntax", None)
    import numpy  # noqa: F401 - what every exercise imports, before the clock starts
    import torch  # noqa: F401

    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:  # pragma: no cover
        pass
    sys.argv = ["notebook"]
    Server(fd_in, fd_out, args.output_limit).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
