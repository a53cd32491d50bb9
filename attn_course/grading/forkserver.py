"""Start grading workers in a fraction of a second by forking them.

Most of the time a fresh worker needs goes into importing numpy, torch and the
course (about 2 s of CPU), the same for every submission. For a batch, the grader
starts one *fork server*: a process that imports them once, then, for each request,
forks a child that becomes a new trusted worker (:mod:`attn_course.grading.worker`),
in its own session (process group) and scratch folder. (``multiprocessing``'s
"forkserver" start method and Android's zygote work the same way.) The learner's
code never runs in the server or its children: each worker starts the learner's own
process in the sandbox (:mod:`attn_course.grading.isolation`).

Caveat: the server forks with no thread running (numpy's BLAS and torch are told to
use one thread through the environment before they load). When the server is not
running, the grader starts ``python -m attn_course.grading.worker`` as usual.

Protocol: one JSON line per connection on a Unix socket, ``{"job", "progress", "key",
"cwd"}``; the answer is ``{"pid": n}``. The socket file appears when the server is
ready; ``<socket>.failed`` says why it gave up.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

# The environment of every worker and learner process (and of the server, which must
# not start threads).
KERNEL_ENV = {
    # one thread per process: parallel jobs do not oversubscribe the cores
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
    "MALLOC_ARENA_MAX": "2", "MPLBACKEND": "Agg", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    "PYTHONDONTWRITEBYTECODE": "1", "TQDM_DISABLE": "1",
}

PRELOAD = ("numpy", "torch", "torch.nn.functional", "cloudpickle", "nbformat",
           "attn_course.grading.checks", "attn_course.grading.remote",
           "attn_course.grading.worker", "attn_course.similarity", "attn_course.softmax",
           "attn_course.attention", "attn_course.multihead", "attn_course.transformer",
           "attn_course.testing")


def _become_worker(req: dict) -> None:
    """In the forked child: run one grading worker, then exit."""
    code = 1
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.chdir(req["cwd"])
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        from attn_course.grading.worker import run

        code = run(req["job"], req["progress"], req["key"].encode())
    finally:
        os._exit(code)


def serve(path: str) -> None:
    """Preload, then fork one worker per request until the parent goes away."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    if len(os.listdir("/proc/self/task")) > 1:  # forking a threaded process is unsafe
        with open(path + ".failed", "w") as f:
            f.write("a library started a thread: set OMP_NUM_THREADS=1, OPENBLAS_NUM_THREADS=1")
        return
    parent = os.getppid()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped automatically
    children: set[int] = set()
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path + ".new")
    srv.listen(64)
    srv.settimeout(1.0)
    os.rename(path + ".new", path)  # the socket appears only once it accepts
    try:
        while os.getppid() == parent:
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(10)
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                try:
                    req = json.loads(data)
                except json.JSONDecodeError:
                    continue
                pid = os.fork()
                if pid == 0:
                    srv.close()
                    conn.close()
                    _become_worker(req)
                children.add(pid)
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    finally:  # the parent is gone: end the workers it started
        for pid in children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass


def wait_until_ready(path: str, timeout: float = 120) -> bool:
    """Wait for the server at ``path`` to finish preloading; False if it failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        if os.path.exists(path + ".failed") or not os.path.isdir(os.path.dirname(path)):
            return False
        time.sleep(0.02)
    return False


def request_worker(path: str, job: str, progress: str, key: str, cwd: str,
                   timeout: float = 30) -> int:
    """Ask the server at ``path`` for a worker grading ``job``; return its pid."""
    if not wait_until_ready(path):
        raise ConnectionError(f"no fork server at {path}")
    req = {"job": job, "progress": progress, "key": key, "cwd": cwd}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps(req).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("the fork server closed the connection")
            data += chunk
    return int(json.loads(data)["pid"])


class ForkServer:
    """The server process for one batch: ``with ForkServer(env) as fs: ... fs.path``.

    It starts at once and preloads in the background (on two cores, while the grader
    and its first worker start); a request waits until it is ready, and falls
    back to a normal launch if it failed.
    """

    def __init__(self, env: dict):
        self.dir = tempfile.mkdtemp(prefix="ag-fs-", dir="/tmp" if os.path.isdir("/tmp") else None)
        self.path = os.path.join(self.dir, "sock")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "attn_course.grading.forkserver", self.path],
            env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.wait()
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


class ForkedProcess:
    """The part of ``subprocess.Popen`` the grader uses, for a forked worker (not our
    child, so its status is read from /proc)."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int):
        self.pid, self.returncode = pid, None

    def poll(self):
        if self.returncode is None and not _alive(self.pid):
            self.returncode = -signal.SIGKILL
        return self.returncode

    def wait(self, timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("worker", timeout)
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


if __name__ == "__main__":
    serve(sys.argv[1])
