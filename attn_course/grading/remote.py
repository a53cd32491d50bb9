"""The grader's side of the boundary: the learner's process, and its objects seen from here.

:class:`LearnerProcess` starts :mod:`attn_course.grading.learner` in the sandbox that
:mod:`attn_course.grading.isolation` chose and talks to it over a pipe. While test
cells run (in the grader's trusted worker), every name a test reads that the test did
not define is a :class:`Remote` for the learner's global of that name: calling it
sends the arguments over and brings back plain data (or a handle for anything else).
The checks in :mod:`attn_course.grading.checks` accept these as they accept local
functions: ``call(softmax, x)``, ``check_no_shortcut("...", softmax)``,
``replaced(fn, name, value)``, ``share(model)`` and ``in_learner(probe, ...)``.

The code of the learner's functions, which the shortcut and loop checks read, is
compiled here from the submitted cells (:meth:`Session.record_cell`), never taken from
the learner's process; that process only says what the names a function reads refer
to (strings).
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
import types

from attn_course.grading import isolation, wire

START_TIMEOUT = 120.0  # seconds for the learner's process to import numpy and torch
GRACE = 5.0  # seconds past a request's own limit before the process is killed


class LearnerGone(Exception):
    """The learner's process died, hung past its limit, or broke the protocol."""

    def __init__(self, why: str, timed_out: bool = False):
        super().__init__(why)
        self.timed_out = timed_out


class LearnerError(Exception):
    """The learner's code raised; ``mro`` are the names of its exception's classes."""

    def __init__(self, ename: str, evalue: str, mro=(), where: str = ""):
        self.ename, self.evalue, self.mro, self.where = ename, evalue, tuple(mro), where
        super().__init__(f"{ename}: {evalue}" if evalue else ename)

    def is_a(self, cls) -> bool:
        names = cls if isinstance(cls, tuple) else (cls,)
        return any(c.__name__ in self.mro for c in names)


class LearnerTimeout(LearnerError):
    def __init__(self, seconds: float):
        super().__init__("TimeoutError", f"ran longer than {seconds:g} s and was interrupted",
                         ("TimeoutError",))


class LearnerProcess:
    """One learner process in its sandbox; requests are answered one at a time."""

    def __init__(self, mode: str, memory: int = 0, files: int = 0, processes: int = 256,
                 output_limit: int = 1_000_000, slot: int = 0, wait: bool = True):
        self.mode, self.slot = mode, slot
        self.uid = isolation.UID_BASE + slot if mode == "user" else None
        self.cgroup = isolation.PidsCgroup.create(processes)
        nproc = 0
        if self.cgroup is None and processes and mode != "user":
            nproc = isolation.user_process_count() + processes
        elif self.cgroup is None and processes:
            nproc = processes
        cmd = [sys.executable, "-m", "attn_course.grading.learner", "--memory", str(memory),
               "--files", str(files), "--processes", str(nproc),
               "--output-limit", str(output_limit)]
        env = isolation.learner_env()
        kwargs: dict = {}
        if mode == "bwrap":
            setenv = [x for k, v in sorted(env.items()) for x in ("--setenv", k, v)]
            cmd = [_which("bwrap"), *isolation._bwrap_args(), *setenv, *cmd]
        else:
            import tempfile

            self.tmp = tempfile.mkdtemp(prefix="attn-learner-")
            if self.uid is not None:
                os.chown(self.tmp, self.uid, self.uid)
                kwargs.update(user=self.uid, group=self.uid, extra_groups=[])
            env.update(HOME=self.tmp, MPLCONFIGDIR=os.path.join(self.tmp, "mpl"), TMPDIR=self.tmp,
                       PATH=os.environ.get("PATH", "/usr/bin:/bin"))
            kwargs["cwd"] = self.tmp
            import attn_course

            # the package (an editable install has it outside site-packages)
            env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(attn_course.__file__)))
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        cgroup = self.cgroup
        self.proc = subprocess.Popen(
            cmd, stdin=to_child_r, stdout=from_child_w, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True, close_fds=True,
            preexec_fn=cgroup.enter if cgroup else None, **kwargs)
        os.close(to_child_r)
        os.close(from_child_w)
        self.fd_out, self.fd_in = to_child_w, from_child_r
        self.pid = self.proc.pid
        self.dead = ""
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Wait until the learner's process has imported numpy and torch."""
        hello = self._receive(START_TIMEOUT)
        if hello.get("status") != "ready":
            self.kill()
            raise LearnerGone(f"the learner's process did not start ({hello})")

    def _receive(self, timeout: float) -> dict:
        import select

        ready, _, _ = select.select([self.fd_in], [], [], max(timeout, 0.0))
        if not ready:
            self.kill()
            self.dead = "timeout"
            raise LearnerGone("no answer in time", timed_out=True)
        try:
            return wire.receive(self.fd_in)
        except (EOFError, OSError, wire.ProtocolError) as exc:
            self.kill()
            self.dead = self.dead or "died"
            raise LearnerGone(f"the learner's process stopped ({exc})") from None

    def request(self, msg: dict, timeout: float) -> dict:
        if self.dead:
            raise LearnerGone(f"the learner's process is gone ({self.dead})",
                              timed_out=self.dead == "timeout")
        msg = {**msg, "timeout": timeout}
        try:
            wire.send(self.fd_out, msg)
        except OSError as exc:
            self.kill()
            self.dead = "died"
            raise LearnerGone(f"the learner's process stopped ({exc})") from None
        return self._receive(timeout + GRACE)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.kill()
        except OSError:
            pass

    def close(self) -> None:
        """Stop the process and everything it started."""
        self.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for fd in (self.fd_in, self.fd_out):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.uid is not None:
            isolation.kill_user(self.uid)
        if self.cgroup is not None:
            self.cgroup.close()
        if self.mode != "bwrap":
            import shutil

            shutil.rmtree(self.tmp, ignore_errors=True)


def _which(name: str) -> str:
    import shutil

    path = shutil.which(name)
    if not path:
        raise FileNotFoundError(f"{name} is not installed")
    return path


class Session:
    """The grader's view of one learner process while a notebook is graded."""

    def __init__(self, proc: LearnerProcess, cell_timeout: float):
        self.proc, self.cell_timeout = proc, cell_timeout
        self.hidden = False  # inside a test cell's hidden tests: hide learner text
        self.deadline = None  # the running test cell's end
        self.functions: dict[str, types.CodeType] = {}  # name -> code, compiled here

    # -- the learner's code, compiled on this side ----------------------------------
    def record_cell(self, source: str) -> None:
        """Remember the code of the functions ``source`` defines at its top level."""
        from attn_course.grading.learner import transform

        text = transform(source)
        try:
            tree = ast.parse(text)
            code = compile(tree, "<cell>", "exec")
        except (SyntaxError, ValueError):
            return
        wanted: dict[tuple[str, int], str] = {}
        for node in _top_level(tree.body):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                wanted[(node.name, node.lineno)] = node.name
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda):
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        wanted[("<lambda>", node.value.lineno)] = t.id
        for const in code.co_consts:
            if not isinstance(const, types.CodeType):
                continue
            first = const.co_firstlineno
            name = wanted.get((const.co_name, first))
            if name is None and const.co_name != "<lambda>":
                # a decorated function starts at its first decorator
                name = next((n for (cn, ln), n in wanted.items()
                             if cn == const.co_name and ln >= first), None)
            if name is not None:
                self.functions[name] = const

    def code_of(self, name: str) -> types.CodeType | None:
        return self.functions.get(name)

    # -- requests ------------------------------------------------------------------
    def _timeout(self) -> float:
        if self.deadline is None:
            return self.cell_timeout
        return max(self.deadline - time.monotonic(), 0.5)

    def _reply(self, msg: dict) -> dict:
        reply = self.proc.request(msg, self._timeout())
        text = reply.get("stdout")
        if isinstance(text, str) and text and not self.hidden:
            sys.stdout.write(text)  # as the learner's print shows in the notebook
        status = reply.get("status")
        if status == "timeout":
            raise LearnerTimeout(self._timeout())
        if status == "error":
            mro = reply.get("mro") if isinstance(reply.get("mro"), list) else []
            ename = str(reply.get("ename", "Exception"))[:100]
            if self.hidden:  # its text could carry what the hidden tests sent
                raise LearnerError(ename, "", [str(m) for m in mro][:20], "")
            raise LearnerError(ename, str(reply.get("evalue", ""))[:2000],
                               [str(m) for m in mro][:20], str(reply.get("where", ""))[:300])
        return reply

    def value(self, raw):
        if isinstance(raw, dict) and "__handle__" in raw:
            return Remote(self, {"handle": int(raw["__handle__"])}, str(raw.get("type", ""))[:200])
        return wire.decode(raw)

    def _pickle(self, obj) -> str:
        def pid(x):
            if isinstance(x, Remote) and x._session is self:
                kind, value = next(iter(x._target.items()))
                return (kind, value)
            return None

        return wire.dumps(obj, persistent_id=pid)

    def call(self, target: dict, args: tuple, kwargs: dict, report_args: bool = False):
        reply = self._reply({"op": "call", "target": target,
                             "args": self._pickle((tuple(args), dict(kwargs))),
                             "report_args": report_args})
        value = self.value(reply.get("value"))
        if not report_args:
            return value, {}
        after = {}
        raw_args = reply.get("args_after") if isinstance(reply.get("args_after"), list) else []
        for i, raw in enumerate(raw_args[: len(args)]):
            if raw is not None:
                after[i] = wire.decode(raw)
        raw_kw = reply.get("kwargs_after") if isinstance(reply.get("kwargs_after"), dict) else {}
        for k, raw in raw_kw.items():
            if raw is not None and k in kwargs:
                after[k] = wire.decode(raw)
        return value, after

    def getattr(self, target: dict, name: str):
        return self.value(self._reply({"op": "getattr", "target": target, "attr": name})
                          .get("value"))

    def share(self, obj):
        return self.value(self._reply({"op": "share", "value": self._pickle(obj)}).get("value"))

    def run_here(self, fn, args, kwargs):
        """Run the grader's function ``fn`` in the learner's process (a probe)."""
        return self.call({"pickled": self._pickle(fn)}, args, kwargs)[0]

    def set_global(self, target: dict, name: str, value) -> int:
        return int(self._reply({"op": "setglobal", "target": target, "name": name,
                                "value": self._pickle(value)}).get("value"))

    def restore_global(self, token: int) -> None:
        self._reply({"op": "restoreglobal", "token": token})

    def describe(self, target: dict, names) -> dict:
        raw = wire.decode(self._reply({"op": "describe", "target": target,
                                       "names": sorted(set(names))}).get("value"))
        return raw if isinstance(raw, dict) else {}

    def exec(self, source: str, index: int) -> dict:
        """Run a learner, set-up or added cell; returns its record (outcome, stdout, error)."""
        self.record_cell(source)
        reply = self.proc.request({"op": "exec", "code": source, "index": index},
                                  self.cell_timeout)
        rec = {"stdout": str(reply.get("stdout", ""))[:4000]}
        if reply.get("status") == "timeout":
            rec["outcome"] = "timeout"
        elif reply.get("status") == "error":
            rec.update(outcome="error", ename=str(reply.get("ename", ""))[:100],
                       evalue=str(reply.get("evalue", ""))[:2000])
        else:
            rec["outcome"] = "ok"
        return rec


def _top_level(body):
    """Statements at a cell's top level, looking into if/try/with blocks."""
    for node in body:
        yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            inner = getattr(node, field, None)
            if isinstance(inner, list) and not isinstance(node, (ast.FunctionDef,
                                                                 ast.AsyncFunctionDef,
                                                                 ast.ClassDef)):
                yield from _top_level(inner)


class Remote:
    """An object in the learner's process: a global of the notebook (by name) or a value
    kept there (by handle). Calling it calls it there; attributes are read there."""

    def __init__(self, session: Session, target: dict, type_name: str = ""):
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_type", type_name)

    @property
    def __name__(self) -> str:  # noqa: A003 - as a function's
        return self._target.get("global") or f"object {self._type or 'from your code'}"

    @property
    def remote_name(self) -> str | None:
        return self._target.get("global")

    def __call__(self, *args, **kwargs):
        return self._session.call(self._target, args, kwargs)[0]

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._session.getattr(self._target, name)

    def __setattr__(self, name, value):
        raise AttributeError("objects of the learner's notebook cannot be changed by the tests")

    def __repr__(self) -> str:
        if "global" in self._target:
            return f"<{self._target['global']} from your notebook>"
        return f"<{self._type or 'an object'} from your code>"

    def __bool__(self) -> bool:
        return True


def free_names(code: types.CodeType) -> set[str]:
    """Global names that ``code`` and the functions defined in it read."""
    import dis

    names, todo = set(), [code]
    while todo:
        c = todo.pop()
        for ins in dis.get_instructions(c):
            if ins.opname in ("LOAD_NAME", "LOAD_GLOBAL", "LOAD_FROM_DICT_OR_GLOBALS"):
                names.add(str(ins.argval))
        todo += [k for k in c.co_consts if isinstance(k, types.CodeType)]
    return names


_current: list[Session] = []


def current() -> Session | None:
    """The session whose test cell is running (None in a notebook's own kernel)."""
    return _current[-1] if _current else None


class active:
    """``with active(session):`` test cells run against ``session``."""

    def __init__(self, session: Session):
        self.session = session

    def __enter__(self):
        _current.append(self.session)
        return self.session

    def __exit__(self, *exc):
        _current.remove(self.session)
