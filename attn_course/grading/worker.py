"""Run one assembled notebook in a fresh kernel, under limits (a child process).

Started by :mod:`attn_course.grading.sandbox` as
``python -m attn_course.grading.worker NOTEBOOK PROGRESS --cell-timeout S ...`` in a
new session (process group) and a scratch directory. It

- sets ``RLIMIT_AS`` (address space; the kernel inherits it, so an allocation of
  50 GB fails with ``MemoryError`` instead of taking the machine) and caps the size
  of files the kernel may write and core dumps;
- starts an IPython kernel with nbclient and runs the cells one by one, each with
  ``--cell-timeout``; a cell that runs over is interrupted and the next cell runs (a
  second consecutive overrun stops the run: the kernel ignores interrupts);
- keeps at most ``--output-limit`` bytes of each cell's output (50 MB printed by a
  loop costs the grader nothing);
- appends one JSON line per event to PROGRESS as it goes (the kernel's pid, then each
  cell's outcome), so that the parent keeps every result up to the moment it has to
  kill this process group for running past the total time limit. Each line is signed
  with a key the parent sends on stdin, so lines the kernel writes there count for
  nothing; the notebook file is deleted once read (it holds the hidden tests).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import resource
import signal
import sys
import time
import uuid

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
KEEP_TEXT = 4000  # characters of stdout and of a traceback kept per cell
INTERRUPT_GRACE = 5.0  # seconds an interrupted cell has to stop
PREAMBLE_TIMEOUT = 120.0  # seconds for the grader's preamble (imports numpy and torch)


def skip_slow_imports() -> None:
    """jsonschema (imported by nbformat) loads ``rfc3987_syntax`` when installed, which
    builds a grammar for 1.5 s; URI formats are never validated here, so skip it."""
    sys.modules.setdefault("rfc3987_syntax", None)


def set_limits(memory_bytes: int, file_bytes: int) -> None:
    for limit, value in ((resource.RLIMIT_AS, memory_bytes), (resource.RLIMIT_FSIZE, file_bytes),
                         (resource.RLIMIT_CORE, 0)):
        if value:
            soft, hard = resource.getrlimit(limit)
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(limit, (value, hard))


def _clip(text: str, n: int = KEEP_TEXT) -> str:
    return text if len(text) <= n else text[: n // 2] + "\n[...]\n" + text[-n // 2:]


def summarize(cell) -> dict:
    """The outcome of an executed cell: stdout, and the error if it raised."""
    stdout, error = [], None
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and out.get("name") == "stdout":
            stdout.append(out.get("text", ""))
        elif out.get("output_type") == "error":
            tb = ANSI.sub("", "\n".join(out.get("traceback", [])))
            error = {"ename": str(out.get("ename", "")), "evalue": _clip(str(out.get("evalue", ""))),
                     "traceback": _clip(tb)}
    rec = {"outcome": "error" if error else "ok", "stdout": _clip("".join(stdout))}
    if error:
        rec.update(error)
    return rec


def _wait_for_reply(client, seconds: float) -> bool:
    """After an interrupt, wait for the interrupted cell's reply, so that the next
    request does not reach a kernel still busy with it (which would abort it)."""
    from nbclient.util import run_sync

    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = run_sync(client.kc.shell_channel.get_msg)(timeout=left)
        except Exception:  # queue.Empty: no reply in time
            return False
        if msg.get("msg_type") == "execute_reply":
            return True
    return False


def make_client(nb, cell_timeout: float, output_limit: int, ipc_dir: str,
                fork_socket: str = "", memory: int = 0, files: int = 0):
    from jupyter_client import AsyncKernelManager
    from nbclient import NotebookClient

    class CappedClient(NotebookClient):
        """A NotebookClient that keeps at most ``output_limit`` bytes per cell."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.sizes: dict[int, int] = {}

        def output(self, outs, msg, display_id, cell_index):
            if msg.get("msg_type") == "error":  # the failure itself is always kept
                return super().output(outs, msg, display_id, cell_index)
            size = len(json.dumps(msg.get("content", {})))
            used = self.sizes.get(cell_index, 0)
            self.sizes[cell_index] = used + size
            if used + size <= output_limit:
                return super().output(outs, msg, display_id, cell_index)
            if used <= output_limit:
                outs.append(_note(f"[output truncated by the grader after {output_limit} bytes]"))
            return None

    # nbclient needs the asynchronous manager: with a blocking one, waiting for the
    # output of a cell whose kernel died blocks its event loop forever.
    class KernelManager(AsyncKernelManager):
        """Launches through the fork server when there is one (see forkserver)."""

        async def _async_pre_start_kernel(self, **kw):
            if self.provisioner is None and fork_socket:
                from attn_course.grading.forkserver import fork_provisioner_class

                self.kernel_id = self.kernel_id or str(uuid.uuid4())
                prov = fork_provisioner_class()(kernel_id=self.kernel_id,
                                                kernel_spec=self.kernel_spec, parent=self)
                prov.fork_socket, prov.memory, prov.files = fork_socket, memory, files
                prov.log = os.path.join(os.getcwd(), "kernel.log")
                self.provisioner = prov
            return await super()._async_pre_start_kernel(**kw)

    km = KernelManager(kernel_name="python3", transport="ipc")
    km.ip = os.path.join(ipc_dir, "kernel-ipc")  # a socket path must be short (< 108 bytes)

    def timeout_for(cell) -> float:
        # importing torch in the preamble can be slow on a loaded machine
        preamble = cell.metadata.get("attn_course", {}).get("role") == "preamble"
        return max(cell_timeout, PREAMBLE_TIMEOUT) if preamble else cell_timeout

    return CappedClient(nb, km=km, timeout_func=timeout_for, allow_errors=True,
                        record_timing=False, startup_timeout=120, iopub_timeout=10,
                        resources={"metadata": {"path": os.getcwd()}})


def _note(text: str):
    import nbformat

    return nbformat.v4.new_output("stream", name="stderr", text=text + "\n")


def sign(key: bytes, text: str) -> str:
    """``<hmac> <text>``: the parent ignores lines the kernel might forge (it can write to
    the progress file, but never sees the key, which comes on this process's stdin)."""
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest() + " " + text


def verify_line(key: bytes, line: str) -> str | None:
    """The text of a correctly signed line, else None."""
    mac, _, text = line.partition(" ")
    good = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    return text if hmac.compare_digest(mac, good) else None


def run(nb_path: str, progress_path: str, cell_timeout: float, output_limit: int,
        ipc_dir: str, fork_socket: str = "", memory: int = 0, files: int = 0,
        key: bytes = b"") -> int:
    import nbformat
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbclient.util import run_sync

    nb = nbformat.read(nb_path, as_version=4)
    os.unlink(nb_path)  # the kernel must not read the hidden tests or the token from disk
    log = open(progress_path, "a", buffering=1, encoding="utf-8")

    def emit(**event) -> None:
        log.write(sign(key, json.dumps(event, sort_keys=True)) + "\n")
        log.flush()

    client = make_client(nb, cell_timeout, output_limit, ipc_dir, fork_socket, memory, files)
    replies: dict[int, dict] = {}

    def on_executed(cell, cell_index, execute_reply):
        replies[cell_index] = execute_reply.get("content", {})

    client.on_cell_executed = on_executed
    kernel_pid = None
    try:
        with client.setup_kernel():
            provisioner = getattr(client.km, "provisioner", None)
            kernel_pid = getattr(provisioner, "pid", None) or getattr(
                getattr(provisioner, "process", None), "pid", None)
            emit(event="kernel", pid=kernel_pid)
            overruns = 0
            for i, cell in enumerate(nb.cells):
                start = time.monotonic()
                try:
                    client.execute_cell(cell, i)
                except CellTimeoutError:
                    overruns += 1
                    emit(event="cell", index=i, outcome="timeout", stdout="",
                         seconds=round(time.monotonic() - start, 3))
                    run_sync(client.km.interrupt_kernel)()
                    if overruns > 1 or not _wait_for_reply(client, INTERRUPT_GRACE):
                        break  # the kernel ignores interrupts: stop here
                    continue
                except DeadKernelError:
                    emit(event="cell", index=i, outcome="died", stdout="",
                         seconds=round(time.monotonic() - start, 3))
                    break
                overruns = 0
                rec = summarize(cell)
                content = replies.get(i, {})
                reply = content.get("status", "ok")
                if reply == "aborted":  # the kernel refused to run it
                    rec["outcome"] = "aborted"
                elif reply != "ok" and rec["outcome"] == "ok":
                    # The reply names the error even when no error output was displayed
                    # (IPython's error display replaced by the notebook's code).
                    ename = str(content.get("ename") or "HiddenError")
                    evalue = str(content.get("evalue") or "")
                    rec.update(outcome="error", ename=ename, evalue=_clip(
                        evalue + " (the cell failed but its error was not displayed: was "
                                 "IPython's error display changed?)"))
                emit(event="cell", index=i, seconds=round(time.monotonic() - start, 3), **rec)
    finally:
        try:
            run_sync(client.km.shutdown_kernel)(now=True)
        except Exception:  # already dead or never started
            pass
        if kernel_pid:  # the kernel runs in its own session; end whatever it started
            try:
                os.killpg(kernel_pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    emit(event="done")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m attn_course.grading.worker")
    p.add_argument("notebook")
    p.add_argument("progress")
    p.add_argument("--cell-timeout", type=float, required=True)
    p.add_argument("--memory-limit", type=int, default=0, help="bytes of address space")
    p.add_argument("--file-limit", type=int, default=0, help="bytes per written file")
    p.add_argument("--output-limit", type=int, default=1_000_000, help="bytes per cell")
    p.add_argument("--ipc-dir", default=".", help="a short directory for the kernel's sockets")
    p.add_argument("--fork-server", default="", help="the socket of a kernel fork server")
    args = p.parse_args(argv)
    key = sys.stdin.buffer.readline().strip()  # the parent's signing key, never on disk
    sys.stdin.close()
    skip_slow_imports()
    set_limits(args.memory_limit, args.file_limit)
    return run(args.notebook, args.progress, args.cell_timeout, args.output_limit, args.ipc_dir,
               args.fork_server, args.memory_limit, args.file_limit, key)


if __name__ == "__main__":
    sys.exit(main())
