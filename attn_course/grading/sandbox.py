"""Grade an assembled notebook in a worker process of its own, and always come back.

:func:`run_isolated` writes the job (the cells, hidden tests included, and the limits)
into a scratch folder readable by the grader only, starts the trusted worker
(:mod:`attn_course.grading.worker`: forked from the batch's fork server when there is
one) in a new session, and waits at most ``limits.total_timeout`` seconds. Past that
it kills the worker's process group and the learner's sandbox (whose processes all die
with it), then reads whatever cell outcomes the worker had recorded. Nothing the
notebook does can make this function raise or hang; the caller turns the outcome into
a status. The learner's code itself runs in the sandbox of
:mod:`attn_course.grading.isolation`, started by the worker.
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
import threading
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
    files: int = 256 * (1 << 20)  # bytes per file the learner's code writes
    processes: int = 64  # processes and threads the learner's code may start
    isolation: str = ""  # bwrap, user or none; "" = the best this machine allows
    trusted: bool = False  # the work is the grader's own: running it without isolation is fine


@dataclass
class Outcome:
    cells: dict[int, dict] = field(default_factory=dict)  # cell index -> record
    finished: bool = False  # the worker ran to its end
    killed: bool = False  # stopped at the total time limit
    returncode: int | None = None
    stderr_tail: str = ""
    seconds: float = 0.0
    start_failed: str = ""  # why the learner's process could not start




_slots: set[int] = set()
_slots_lock = threading.Lock()


def _take_slot() -> int:
    """The lowest free job slot (the ``user`` mode's uid is ``UID_BASE + slot``)."""
    with _slots_lock:
        slot = next(i for i in range(len(_slots) + 1) if i not in _slots)
        _slots.add(slot)
        return slot


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
        if text is None:  # cut short by a kill
            continue
        try:
            events.append(json.loads(text))
        except json.JSONDecodeError:
            continue
    return events


def _read_progress(path: Path, key: bytes, outcome: Outcome) -> int | None:
    sandbox_pid = None
    for event in _events(path, key):
        if event.get("event") == "sandbox":
            sandbox_pid = event.get("pid")
        elif event.get("event") == "cell":
            outcome.cells[int(event["index"])] = event
        elif event.get("event") == "start_failed":
            outcome.start_failed = str(event.get("why", ""))
        elif event.get("event") == "done":
            outcome.finished = True
    return sandbox_pid


def job_cells(nb) -> list[dict]:
    """The assembled notebook's code cells as the worker reads them."""
    return [{"role": c.metadata.get("attn_course", {}).get("role", ""), "source": c.source}
            for c in nb.cells]


def run_isolated(nb: nbformat.NotebookNode, limits: Limits, fork_server: str = "",
                 roles: list[str] | None = None) -> Outcome:
    """Grade ``nb`` (assembled; ``roles`` gives each cell's role: answer, test, ...) in a
    fresh worker and sandbox; never raises for what the notebook does. ``fork_server``:
    the socket of a running :class:`~attn_course.grading.forkserver.ForkServer`."""
    from attn_course.grading import isolation

    start = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="attn-grade-"))  # mode 0700
    outcome = Outcome()
    key = secrets.token_hex(32).encode()
    slot = _take_slot()
    try:
        mode = limits.isolation or isolation.detect().mode
        cells = job_cells(nb)
        if roles is not None:
            for c, role in zip(cells, roles, strict=True):
                c["role"] = role
        job, progress = scratch / "job.json", scratch / "progress.jsonl"
        job.write_text(json.dumps({
            "cells": cells, "isolation": mode, "slot": slot,
            "limits": {"cell_timeout": limits.cell_timeout, "memory": limits.memory,
                       "files": limits.files, "output": limits.output,
                       "processes": limits.processes}}), encoding="utf-8")
        worker = None
        if fork_server:
            from attn_course.grading.forkserver import ForkedProcess, request_worker

            try:
                worker = ForkedProcess(request_worker(fork_server, str(job), str(progress),
                                                      key.decode(), str(scratch)))
            except (OSError, ValueError, KeyError):
                worker = None
        if worker is None:
            env = {**os.environ, **KERNEL_ENV}
            worker = subprocess.Popen(
                [sys.executable, "-m", "attn_course.grading.worker", str(job), str(progress)],
                cwd=scratch, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                worker.stdin.write(key + b"\n")
                worker.stdin.close()
            except OSError:
                pass
        try:
            outcome.returncode = worker.wait(timeout=limits.total_timeout)
        except subprocess.TimeoutExpired:
            outcome.killed = True
            _kill_group(_sandbox_pid(progress, key))
            _kill_group(worker.pid)
            outcome.returncode = worker.wait()
        sandbox_pid = _read_progress(progress, key, outcome)
        _kill_group(sandbox_pid)
        _kill_group(worker.pid)
        if mode == "user":
            isolation.kill_user(isolation.UID_BASE + slot)
    except Exception as exc:  # the grader's own failure: report it, do not crash the batch
        outcome.stderr_tail = f"{type(exc).__name__}: {exc}"
    finally:
        with _slots_lock:
            _slots.discard(slot)
        shutil.rmtree(scratch, ignore_errors=True)
        outcome.seconds = time.monotonic() - start
    return outcome


def _sandbox_pid(path: Path, key: bytes) -> int | None:
    for event in _events(path, key):
        if event.get("event") == "sandbox":
            return event.get("pid")
    return None
