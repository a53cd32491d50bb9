"""Start grading kernels in a fraction of a second by forking them.

Most of the time a fresh kernel needs goes into importing numpy, torch, IPython and
ipykernel (about 2 s of CPU), the same for every submission. For a batch, the grader
starts one *fork server*: a process that imports them once, then, for each request,
forks a child that becomes a new kernel. Each kernel is still its own process, in its
own session (process group), with its own memory and file-size limits and working
directory; nothing of one submission is visible in another, because a child is
forked from the server, which never runs learner code. (``multiprocessing``'s
"forkserver" start method and Android's zygote work the same way.)

Caveats: the server forks with no thread running (numpy's BLAS and torch are told to
use one thread through the environment before they load); the Python, numpy and
torch random states start the same in every kernel (as torch's always does), and
Python and numpy re-seed from the OS after the fork. When the server is not
running, the worker launches ``python -m ipykernel_launcher`` as usual.

Protocol: one JSON line per connection on a Unix socket, ``{"argv", "cwd", "env",
"memory", "files", "log"}``; the answer is ``{"pid": n}``. The socket file appears
when the server is ready; ``<socket>.failed`` says why it gave up.
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

# The environment of every kernel (and of the server, which must not start threads).
KERNEL_ENV = {
    # one thread per kernel: parallel jobs do not oversubscribe the cores
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
    "MALLOC_ARENA_MAX": "2", "MPLBACKEND": "Agg", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    "PYTHONDONTWRITEBYTECODE": "1", "TQDM_DISABLE": "1",
}

PRELOAD = ("numpy", "torch", "torch.nn.functional", "ipykernel.kernelapp",
           "attn_course.similarity", "attn_course.softmax", "attn_course.attention",
           "attn_course.multihead", "attn_course.testing")


def _become_kernel(req: dict) -> None:
    """In the forked child: set it up as a fresh kernel process, run the kernel, exit."""
    code = 1
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        from attn_course.grading.worker import set_limits

        set_limits(int(req.get("memory", 0)), int(req.get("files", 0)))
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        log = os.open(req.get("log") or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        sys.argv = ["ipykernel_launcher", *req["argv"]]
        sys.path[0] = req["cwd"]
        import random

        import numpy as np

        random.seed()
        np.random.seed()  # noqa: NPY002 (the legacy global state learners may use)
        from ipykernel.kernelapp import IPKernelApp

        IPKernelApp.launch_instance(argv=req["argv"])
        code = 0
    finally:
        os._exit(code)


def serve(path: str) -> None:
    """Preload, then fork one kernel per request until the parent goes away."""
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
                    _become_kernel(req)
                children.add(pid)
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    finally:  # the parent is gone: end the kernels it asked for
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


def request_kernel(path: str, argv: list[str], cwd: str, env: dict, memory: int = 0,
                   files: int = 0, log: str = "", timeout: float = 30) -> int:
    """Ask the server at ``path`` for a kernel; return its pid."""
    if not wait_until_ready(path):
        raise ConnectionError(f"no kernel fork server at {path}")
    req = {"argv": argv, "cwd": cwd, "env": env, "memory": memory, "files": files, "log": log}
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
    and its first worker start); a kernel request waits until it is ready, and falls
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
    """The part of ``subprocess.Popen`` that jupyter_client uses, for a forked kernel
    (not our child, so its status is read from /proc)."""

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
                raise subprocess.TimeoutExpired("kernel", timeout)
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


def fork_provisioner_class():
    """A jupyter_client provisioner that asks the fork server (imported lazily)."""
    from jupyter_client.provisioning import LocalProvisioner

    class ForkProvisioner(LocalProvisioner):
        fork_socket = ""
        memory = files = 0
        log = ""

        async def launch_kernel(self, cmd, **kwargs):
            if not (self.fork_socket and cmd[1:3] == ["-m", "ipykernel_launcher"]):
                return await super().launch_kernel(cmd, **kwargs)
            env = dict(kwargs.get("env") or os.environ)
            try:
                pid = request_kernel(self.fork_socket, cmd[3:],
                                     str(kwargs.get("cwd") or os.getcwd()), env, self.memory,
                                     self.files, self.log)
            except (OSError, ValueError, KeyError):  # no server: launch the usual way
                return await super().launch_kernel(cmd, **kwargs)
            self.process = ForkedProcess(pid)
            self.pid = self.pgid = pid
            self.cwd = kwargs.get("cwd", os.getcwd())
            return self.connection_info

    return ForkProvisioner


if __name__ == "__main__":
    serve(sys.argv[1])
