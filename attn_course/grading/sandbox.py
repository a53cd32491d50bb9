"""Run an assembled notebook in its own process and kernel, and always come back.

:func:`run_isolated` writes the notebook to a scratch directory, starts
:mod:`attn_course.grading.worker` there with ``start_new_session=True`` and waits at
most ``limits.total_timeout`` seconds. Past that it kills the worker's process group
and the kernel's (jupyter_client starts the kernel in a session of its own, whose id
the worker reports first), then reads whatever cell outcomes the worker had recorded.
Nothing the notebook does — an infinite loop, ``os._exit``, a crash, 50 MB of output,
a huge allocation — can make this function raise or hang; the caller turns the
outcome into a status.

Process isolation is not a security boundary against a hostile learner with code
execution: see the threat model in ``docs/instructors.md``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from attn_course.grading.forkserver import KERNEL_ENV
from attn_course.grading.worker import verify_line

GiB = 1 << 30


@dataclass(frozen=True)
class Limits:
    cell_timeout: float = 30.0  # seconds per cell
    total_timeout: float = 300.0  # seconds per notebook, kernel start included
    memory: int = 4 * GiB  # address space per process (RLIMIT_AS)
    output: int = 1_000_000  # bytes of output kept per cell
    files: int = 256 * (1 << 20)  # bytes per file the kernel writes


@dataclass
class Outcome:
    cells: dict[int, dict] = field(default_factory=dict)  # cell index -> record
    finished: bool = False  # the worker ran to its end
    killed: bool = False  # stopped at the total time limit
    returncode: int | None = None
    stderr_tail: str = ""
    seconds: float = 0.0




def _kill_group(pgid: int | None) -> None:
    if not pgid:
        return
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _events(path: Path, key: bytes) -> list[dict]:
    """The worker's correctly signed events, in order."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    events = []
    for line in lines:
        text = verify_line(key, line)
        if text is None:  # cut short by a kill, or not written by the worker
            continue
        try:
            events.append(json.loads(text))
        except json.JSONDecodeError:
            continue
    return events


def _read_progress(path: Path, key: bytes, outcome: Outcome) -> int | None:
    kernel_pid = None
    for event in _events(path, key):
        if event.get("event") == "kernel":
            kernel_pid = event.get("pid")
        elif event.get("event") == "cell":
            outcome.cells[int(event["index"])] = event
        elif event.get("event") == "done":
            outcome.finished = True
    return kernel_pid


def _kernel_pid(path: Path, key: bytes) -> int | None:
    for event in _events(path, key):
        if event.get("event") == "kernel":
            return event.get("pid")
    return None


def run_isolated(nb: nbformat.NotebookNode, limits: Limits, fork_server: str = "") -> Outcome:
    """Execute ``nb`` in a fresh worker process and kernel; never raises for what the
    notebook does. ``fork_server``: the socket of a running
    :class:`~attn_course.grading.forkserver.ForkServer` to start the kernel from."""
    start = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="attn-grade-"))
    # Unix socket paths are limited to about 100 bytes, so they go in a short directory
    ipc_dir = tempfile.mkdtemp(prefix="ag-", dir="/tmp" if os.path.isdir("/tmp") else None)
    outcome = Outcome()
    key = secrets.token_hex(32).encode()
    try:
        nb_path, progress = scratch / "notebook.ipynb", scratch / "progress.jsonl"
        work = scratch / "work"
        work.mkdir()
        nbformat.write(nb, str(nb_path))
        cmd = [sys.executable, "-m", "attn_course.grading.worker", str(nb_path), str(progress),
               "--cell-timeout", str(limits.cell_timeout), "--memory-limit", str(limits.memory),
               "--file-limit", str(limits.files), "--output-limit", str(limits.output),
               "--ipc-dir", ipc_dir, "--fork-server", fork_server]
        env = {**os.environ, **KERNEL_ENV}
        with open(scratch / "worker.log", "wb") as log:
            proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.PIPE,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                proc.stdin.write(key + b"\n")
                proc.stdin.close()
            except OSError:  # the worker is already gone; its exit code will say why
                pass
            try:
                outcome.returncode = proc.wait(timeout=limits.total_timeout)
            except subprocess.TimeoutExpired:
                outcome.killed = True
                _kill_group(_kernel_pid(progress, key))
                _kill_group(proc.pid)
                outcome.returncode = proc.wait()
        kernel_pid = _read_progress(progress, key, outcome)
        _kill_group(kernel_pid)  # anything the kernel left behind
        _kill_group(proc.pid)
        try:
            with open(scratch / "worker.log", "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 2000))
                outcome.stderr_tail = f.read().decode("utf-8", "replace")
        except OSError:
            pass
    except Exception as exc:  # the grader's own failure: report it, do not crash the batch
        outcome.stderr_tail = f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(ipc_dir, ignore_errors=True)
        outcome.seconds = time.monotonic() - start
    return outcome
