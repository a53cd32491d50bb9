"""Grade one assembled notebook: the learner's cells in a sandbox, the tests here.

The grader's trusted worker, one process per notebook (forked from the batch's
:mod:`~attn_course.grading.forkserver`, or started as ``python -m
attn_course.grading.worker JOB PROGRESS``). It reads the job (the assembled cells,
hidden tests included, and the limits) from a file in a scratch folder that the
learner's process cannot see, deletes it, and starts the learner's process
(:class:`~attn_course.grading.remote.LearnerProcess`) in the sandbox of
:mod:`~attn_course.grading.isolation`. Then, cell by cell:

- answer, set-up and added cells run **in the learner's process**, each under
  ``cell_timeout`` (interrupted there; a process that ignores the interrupt is killed
  and the remaining cells are not run);
- test cells run **here**, in a namespace of their own: a name the test reads and did
  not define is the learner's global of that name, reached through the pipe
  (:class:`~attn_course.grading.remote.Remote`), so the tests, their references and
  their hidden part never enter the learner's process. The hidden part of a test cell
  runs with the learner's printed output and error messages withheld: what it reports
  is written by the checks.

Each cell's outcome is appended to PROGRESS as a signed JSON line as soon as it is
known, so that the parent keeps every result up to the moment it has to stop this
process for running past the total time limit.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import hmac
import io
import json
import os
import re
import sys
import time

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
KEEP_TEXT = 4000  # characters of stdout and of an error kept per cell
HIDDEN_BEGIN, HIDDEN_END = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"


def skip_slow_imports() -> None:
    """jsonschema (imported by nbformat) loads ``rfc3987_syntax`` when installed, which
    builds a grammar for 1.5 s; URI formats are never validated here, so skip it."""
    sys.modules.setdefault("rfc3987_syntax", None)


def _clip(text: str, n: int = KEEP_TEXT) -> str:
    text = ANSI.sub("", text)
    return text if len(text) <= n else text[: n // 2] + "\n[...]\n" + text[-n // 2:]


def sign(key: bytes, text: str) -> str:
    """``<hmac> <text>``: the parent reads only lines signed with the key it gave."""
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest() + " " + text


def verify_line(key: bytes, line: str) -> str | None:
    """The text of a correctly signed line, else None."""
    mac, _, text = line.partition(" ")
    good = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    return text if hmac.compare_digest(mac, good) else None


def split_hidden(source: str) -> list[tuple[str, bool]]:
    """``[(code, hidden)]``: the test cell's visible and hidden parts, in order. Each part
    keeps its line numbers (other lines blanked). A marker inside an indented block makes
    the whole cell one hidden part (learner text is then withheld throughout)."""
    lines = source.split("\n")
    parts: list[tuple[list[str], bool]] = []
    hidden = False
    current: list[str] = [""] * len(lines)
    start_hidden = False
    for i, line in enumerate(lines):
        if HIDDEN_BEGIN in line or HIDDEN_END in line:
            if line[: len(line) - len(line.lstrip())]:
                return [(source, True)]
            parts.append((current, start_hidden))
            current = [""] * len(lines)
            hidden = HIDDEN_BEGIN in line
            start_hidden = hidden
            continue
        current[i] = line
    parts.append((current, start_hidden))
    return [("\n".join(p), h) for p, h in parts if any(x.strip() for x in p)]


def run_test_cell(session, namespace: dict, source: str, index: int) -> dict:
    """Run one test cell here, against ``session``'s learner process."""
    from attn_course.grading.checks import CheckFailed
    from attn_course.grading.remote import (
        LearnerError,
        LearnerGone,
        LearnerTimeout,
        Remote,
        active,
        free_names,
    )

    out = io.StringIO()
    rec: dict = {"outcome": "ok"}
    session.deadline = time.monotonic() + session.cell_timeout
    known = set(dir(builtins))
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()), \
            active(session):
        for code_text, hidden in split_hidden(source):
            session.hidden = hidden
            try:
                code = compile(code_text, f"<test cell {index}>", "exec")
                for name in free_names(code) - set(namespace) - known:
                    namespace[name] = Remote(session, {"global": name})
                exec(code, namespace)  # noqa: S102 - the course's own test code
            except CheckFailed as exc:
                rec = {"outcome": "error", "ename": "CheckFailed", "evalue": str(exc)}
            except LearnerTimeout:
                rec = {"outcome": "timeout"}
            except LearnerGone as exc:
                rec = {"outcome": "timeout" if exc.timed_out else "died"}
            except LearnerError as exc:  # the learner's code raised outside a check
                rec = {"outcome": "error", "ename": exc.ename,
                       "evalue": exc.evalue + exc.where if not hidden else
                       "(raised while a hidden test ran; its message is not shown)"}
            except Exception as exc:  # noqa: BLE001 - the test's own failure, e.g. an assert
                rec = {"outcome": "error", "ename": type(exc).__name__,
                       "evalue": str(exc) if not hidden else
                       f"a hidden test failed ({type(exc).__name__})"}
            if rec["outcome"] != "ok":
                break
    session.hidden, session.deadline = False, None
    from attn_course.grading.checks import HINTS

    rec["hints"] = {task: [_clip(h, 1000) for h in stages] for task, stages in HINTS.items()}
    rec["stdout"] = _clip(out.getvalue())
    if "evalue" in rec:
        rec["evalue"] = _clip(rec["evalue"])
    return rec


def run(job_path: str, progress_path: str, key: bytes) -> int:
    from attn_course.grading.remote import LearnerGone, LearnerProcess, Session

    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    os.unlink(job_path)
    log = open(progress_path, "a", buffering=1, encoding="utf-8")

    def emit(**event) -> None:
        log.write(sign(key, json.dumps(event, sort_keys=True)) + "\n")
        log.flush()

    limits = job["limits"]
    try:
        proc = LearnerProcess(job["isolation"], memory=limits["memory"], files=limits["files"],
                              processes=limits["processes"], output_limit=limits["output"],
                              slot=job.get("slot", 0), wait=False)
        import attn_course.grading.checks  # noqa: F401 - torch, while the learner's loads too

        proc.wait_ready()
    except (LearnerGone, OSError) as exc:
        emit(event="start_failed", why=str(exc)[:500])
        emit(event="done")
        return 0
    emit(event="sandbox", pid=proc.pid)
    session = Session(proc, float(limits["cell_timeout"]))
    namespace: dict = {"__name__": "__grader__", "__builtins__": builtins}
    try:
        for i, cell in enumerate(job["cells"]):
            start = time.monotonic()
            if cell["role"] == "test":
                rec = run_test_cell(session, namespace, cell["source"], i)
            else:
                try:
                    rec = session.exec(cell["source"], i)
                except LearnerGone as exc:
                    rec = {"outcome": "timeout" if exc.timed_out else "died", "stdout": ""}
            rec["stdout"] = _clip(rec.get("stdout", ""))
            emit(event="cell", index=i, seconds=round(time.monotonic() - start, 3), **rec)
            if proc.dead:
                break
    finally:
        proc.close()
    emit(event="done")
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m attn_course.grading.worker")
    p.add_argument("job")
    p.add_argument("progress")
    args = p.parse_args(argv)
    key = sys.stdin.buffer.readline().strip()  # the parent's signing key, never on disk
    sys.stdin.close()
    skip_slow_imports()
    return run(args.job, args.progress, key)


if __name__ == "__main__":
    # Every event is written and flushed: end without the interpreter's shutdown, which
    # with torch loaded takes about half a second (the fork server's workers do the same).
    os._exit(main())
