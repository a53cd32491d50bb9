"""Start G local processes in one ``torch.distributed`` group, collect what they return, clean up.

``launch(fn, world_size, args)`` starts ``world_size`` new Python processes on this
machine (``python -c`` running this module's ``_worker``), each of which joins one process
group over the loopback interface (``tcp://127.0.0.1:<a free port>``, backend gloo on
CPUs, NCCL where there is one GPU per process), calls ``fn(rank, world_size, *args)``
and sends back its return value. It is what ``torchrun`` does, cut down to what a
notebook needs:

- ``fn`` must be a function defined at the top level of an importable module (the
  processes are new interpreters: they import it by name; nothing of the notebook's
  kernel is copied, so a notebook can start them without pickling its own state);
- the arguments and return values travel as files written with ``torch.save`` in a
  temporary folder (tensors, numbers, strings, lists, dicts);
- every process runs in its own session; whatever happens (a worker raises, one hangs
  past ``timeout``, the caller is interrupted) all of them are killed and reaped before
  ``launch`` returns or raises, and the folder is removed. A failure raises
  :class:`LaunchError` with the failing rank's traceback.

Caveats: one machine only; each process imports torch (about a second each, more when
they share few cores); the free port is found by binding port 0 and closing it, so
another program could take it in between (then the processes fail to connect and the
error says so).
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

__all__ = ["BACKENDS", "LaunchError", "current_device", "free_port", "launch", "pick_backend"]

BACKENDS = ("gloo", "nccl")
_ENTRY = ("import sys; from attn_course.distributed.launcher import _worker; "
          "sys.exit(_worker(sys.argv[1], int(sys.argv[2])))")


class LaunchError(RuntimeError):
    """A worker process failed, or the group did not finish within its timeout."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pick_backend(world_size: int) -> str:
    """``"nccl"`` when NCCL exists and there is one CUDA GPU per process, else ``"gloo"``."""
    import torch.distributed as dist

    if torch.cuda.is_available() and torch.cuda.device_count() >= world_size and dist.is_nccl_available():
        return "nccl"
    return "gloo"


def current_device() -> torch.device:
    """This worker's device: ``cuda:<rank>`` under NCCL, else the CPU."""
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", dist.get_rank() % torch.cuda.device_count())
    return torch.device("cpu")


def _function_name(fn) -> tuple[str, str]:
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not callable(fn) or module in (None, "__main__") or "<" in name or "." in name:
        raise ValueError(
            f"fn must be a function defined at the top level of an importable module (the new "
            f"processes import it by name), got {fn!r} from module {module!r}; a function "
            f"defined in a notebook or inside another function cannot be started this way"
        )
    return module, name


def _interfaces() -> set[str]:
    try:
        return {name for _, name in socket.if_nameindex()}
    except (OSError, AttributeError):
        return set()


def _kill(procs) -> None:
    """Terminate every process group still running, then kill and reap them all."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
    deadline = time.monotonic() + 3.0
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            p.wait()


def _failure_time(folder: Path, rank: int) -> float | None:
    try:
        return float((folder / f"{rank}.failed").read_text())
    except (OSError, ValueError):
        return None


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def launch(fn, world_size: int, args=(), backend: str | None = None, timeout: float = 60.0,
           threads: int = 1) -> list:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` new processes; return their results.

    backend: ``"gloo"`` (CPU), ``"nccl"`` (one GPU per process) or None (NCCL when
    there are enough GPUs, else gloo). timeout: seconds for the whole group, process
    start included. threads: torch threads per process (``OMP_NUM_THREADS``).
    Returns the list of return values, in rank order.
    """
    module, name = _function_name(fn)
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    backend = pick_backend(world_size) if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend == "nccl" and torch.cuda.device_count() < world_size:
        raise ValueError(f"backend='nccl' needs {world_size} CUDA GPUs (one per process), found "
                         f"{torch.cuda.device_count()}")
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    with tempfile.TemporaryDirectory(prefix="attn_course_ring_") as tmp:
        folder = Path(tmp)
        port = free_port()
        torch.save(dict(module=module, name=name, args=tuple(args), backend=backend,
                        world_size=world_size, port=port, timeout=float(timeout),
                        threads=int(threads)), folder / "spec.pt")
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   WORLD_SIZE=str(world_size), OMP_NUM_THREADS=str(threads),
                   KINETO_LOG_LEVEL=os.environ.get("KINETO_LOG_LEVEL", "6"))
        if "lo" in _interfaces():  # keep gloo on the loopback interface
            env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        procs = []
        try:
            for rank in range(world_size):
                log = open(folder / f"{rank}.log", "wb")  # noqa: SIM115 (closed below)
                try:
                    procs.append(subprocess.Popen(
                        [sys.executable, "-c", _ENTRY, tmp, str(rank)],
                        env=dict(env, RANK=str(rank)), stdout=log, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, start_new_session=True))
                finally:
                    log.close()
            deadline = time.monotonic() + timeout
            while True:
                codes = [p.poll() for p in procs]
                failed = [r for r, c in enumerate(codes) if c not in (None, 0)]
                if failed:
                    # The first to fail is the cause: the others then fail because a peer's
                    # connection closed. Each failing worker notes the time it failed.
                    times = {r: _failure_time(folder, r) for r in range(world_size)}
                    r = min((r for r in times if times[r] is not None), key=times.get, default=failed[0])
                    others = sorted(set(failed) - {r})
                    raise LaunchError(
                        f"process {r} of {world_size} running {module}.{name} failed first"
                        f"{'' if codes[r] is None else f' (exit code {codes[r]})'}"
                        f"{f'; processes {others} failed after it' if others else ''}; "
                        f"its output ends with:\n{_tail(folder / f'{r}.log')}"
                    )
                if all(c == 0 for c in codes):
                    break
                if time.monotonic() > deadline:
                    waiting = [r for r, c in enumerate(codes) if c is None]
                    raise LaunchError(
                        f"{module}.{name} with world_size={world_size} did not finish within "
                        f"timeout={timeout} s; processes {waiting} were still running and were "
                        f"killed. Output of process {waiting[0]}:\n{_tail(folder / f'{waiting[0]}.log')}"
                    )
                time.sleep(0.02)
            return [torch.load(folder / f"{r}.out.pt", weights_only=False) for r in range(world_size)]
        finally:
            _kill(procs)


def _worker(folder: str, rank: int) -> int:
    """The body of one process: join the group, run the function, save its result."""
    import importlib

    import torch.distributed as dist

    folder = Path(folder)
    spec = torch.load(folder / "spec.pt", weights_only=False)
    torch.set_num_threads(spec["threads"])
    try:
        if spec["backend"] == "nccl":
            torch.cuda.set_device(rank % torch.cuda.device_count())
        dist.init_process_group(spec["backend"], init_method=f"tcp://127.0.0.1:{spec['port']}",
                                rank=rank, world_size=spec["world_size"],
                                timeout=datetime.timedelta(seconds=spec["timeout"]))
        fn = getattr(importlib.import_module(spec["module"]), spec["name"])
        result = fn(rank, spec["world_size"], *spec["args"])
        torch.save(result, folder / f"{rank}.out.tmp")
        os.replace(folder / f"{rank}.out.tmp", folder / f"{rank}.out.pt")
        return 0
    except BaseException:
        (folder / f"{rank}.failed").write_text(repr(time.time()))
        traceback.print_exc()
        sys.stdout.flush()
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
