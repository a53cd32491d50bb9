"""What Gradescope's ``run_autograder`` hands over to: grade ``/autograder/submission``
and write ``/autograder/results/results.json``.

``run_autograder`` is one ``exec`` of ``python -m attn_course.grading.gradescope_run``:
bash and sh read a script while they run it, so a line the submission appends to
``run_autograder`` would run after the grader; once the shell has replaced itself with
this program, nothing is read from that file again. This program then

1. becomes the *child subreaper* of everything it starts (Linux ``prctl``), so that a
   process the notebook starts stays its descendant even when it double-forks into a
   new session;
2. imports everything it uses and reads its settings, the source notebooks and the
   submission before any of the submission's code runs: the notebooks are copied
   (regular files only, never through a link, at most one byte past the size cap) into
   a private folder (mode 700) outside ``/autograder``, and graded from there with
   :func:`attn_course.grading.grader.grade_all`, one notebook at a time;
3. when grading is over, kills every process still left (whatever the notebook
   started), and only then writes ``results.json`` from the results it holds in memory,
   never from a file the notebook could have reached, replacing whatever is at that
   path (a forged file, a link);
4. always writes a result: if the grader itself fails, a score of 0 that says so.

``AUTOGRADER_ROOT`` (default ``/autograder``) moves the whole layout, for tests.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path

# Everything grading uses is imported now, before the submission runs, so that nothing
# it could replace on disk is imported later in this process.
import psutil
import tqdm  # noqa: F401  (grade_all's progress bar)

from attn_course.grading import forkserver, grader, isolation, release, reports  # noqa: F401
from attn_course.grading import notebooks as nbf
from attn_course.grading.sandbox import GiB, Limits
from attn_course.grading.scoring import UNREADABLE, NotebookResult

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
SUBMISSION = "submission"


def become_subreaper() -> bool:
    """Make orphaned descendants this process's children (Linux); False elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def end_descendants(seconds: float = 10.0) -> int:
    """Kill every process below this one (and reap it); return how many there were."""
    me, seen = psutil.Process(), set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            left = me.children(recursive=True)
        except psutil.Error:
            break
        if not left:
            break
        for p in left:
            seen.add(p.pid)
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=1)
    return len(seen)


def copy_submission(src: Path, dest: Path) -> tuple[int, list[tuple[str, str]]]:
    """Copy the notebooks under ``src`` to ``dest`` (same relative paths); return how
    many were copied and ``(path, problem)`` for those that were not: links and other
    files that are not regular files."""
    copied, problems = 0, []
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    for folder, dirs, files in os.walk(src, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d != ".ipynb_checkpoints")
        for name in sorted(files):
            if not name.endswith(".ipynb"):
                continue
            path = Path(folder) / name
            rel = path.relative_to(src).as_posix()
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError as exc:
                problems.append((rel, f"{rel} could not be opened ({exc.strerror}): it is a "
                                      f"link, not a notebook; upload the notebook itself"))
                continue
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    problems.append((rel, f"{rel} is not a regular file; upload the "
                                          f"notebook itself"))
                    continue
                data = f.read(nbf.MAX_NOTEBOOK_BYTES + 1)  # the cap's message needs no more
            target = dest / rel
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            target.write_bytes(data)
            copied += 1
    return copied, problems


def write_results(path: Path, content: dict) -> None:
    """Write ``content`` to ``path`` in one step, replacing a file, a link or a folder
    that is there (a link is replaced, never followed)."""
    folder = path.parent
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        folder.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".results-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=2)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def failure(message: str) -> dict:
    """results.json for a submission the autograder could not grade."""
    return {"score": 0, "output": message, "output_format": "text",
            "stdout_visibility": "hidden", "tests": []}


def grade(root: Path, work: Path, limits: Limits, visibility: str) -> list[NotebookResult]:
    """Grade the copy of ``root/submission`` against ``root/source/solutions``."""
    source = root / "source" / "solutions"
    sources = grader.load_sources(source)  # raises ValueError/FileNotFoundError with why
    most = max((nbf.max_points(nb) for nb in sources.values()), default=0.0)
    copied, problems = copy_submission(root / "submission", work / SUBMISSION)
    rows = [NotebookResult(SUBMISSION, Path(rel).stem, 0.0, most, UNREADABLE, why)
            for rel, why in problems]
    if copied:
        (work / "out").mkdir(mode=0o700)  # readable by root only, as the grader requires
        rows = grader.grade_all([work / SUBMISSION], source, work / "out", limits, jobs=1,
                                progress=False, visibility=visibility) + rows
    elif not rows:
        names = ", ".join(f"{n}.ipynb" for n in sorted(sources))
        rows = [NotebookResult(SUBMISSION, "", 0.0, most, UNREADABLE,
                               f"the submission has no .ipynb file: upload the exercise "
                               f"notebook ({names})")]
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m attn_course.grading.gradescope_run",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--cell-timeout", type=float, default=60, metavar="S")
    p.add_argument("--timeout", type=float, default=600, metavar="S")
    p.add_argument("--memory-limit", type=float, default=4.0, metavar="GiB")
    p.add_argument("--visibility", default="visible", choices=reports.VISIBILITIES)
    args = p.parse_args(argv)
    root = Path(os.environ.get("AUTOGRADER_ROOT", "/autograder"))
    subreaper = become_subreaper()
    limits = Limits(cell_timeout=args.cell_timeout, total_timeout=args.timeout,
                    memory=int(args.memory_limit * GiB))
    work = Path(tempfile.mkdtemp(prefix="attn-course-gradescope-"))  # mode 700
    rows, error = [], ""
    try:
        rows = grade(root, work, limits, args.visibility)
    except Exception as exc:  # always leave a result
        error = f"{type(exc).__name__}: {exc}"
    finally:
        left = end_descendants()
    if error:
        content = failure(f"The autograder could not grade this submission ({error}). "
                          f"Please tell your instructor.")
    else:
        content = reports.gradescope_results(rows, args.visibility)
    write_results(root / "results" / "results.json", content)
    shutil.rmtree(work, ignore_errors=True)
    # stdout is for the instructor only (stdout_visibility: hidden)
    for r in rows:
        print(f"{r.notebook or SUBMISSION}: {r.score:g}/{r.max_score:g} ({r.status}) {r.reason}")
    if error:
        print(f"grader error: {error}")
    print(f"processes left after grading and killed: {left}"
          + ("" if subreaper else " (not a subreaper: daemons may have escaped)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
