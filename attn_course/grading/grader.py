"""Batch grading: find the notebooks of each submission, grade each against its source.

A SUBMISSION is a notebook file or a directory searched recursively for notebooks
(nbgrader's ``submitted/<student>/<assignment>/`` and Gradescope's
``/autograder/submission/`` both work). It is named after the file's stem or the
directory's name. Each notebook is matched to the source notebook of the same file
name, else to the source that shares the most nbgrader grade ids with it (a renamed
download such as ``02_softmax (1).ipynb`` still matches).

Notebooks are graded ``jobs`` at a time, each in its own process and kernel
(:mod:`attn_course.grading.sandbox`); the kernels of a batch are forked from one
process that has imported torch already (:mod:`attn_course.grading.forkserver`).
As each submission finishes, its ``results.json`` is written and ``gradebook.csv``
is rewritten, so an interrupted batch keeps every result it had.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from attn_course.grading import notebooks as nbf
from attn_course.grading import reports
from attn_course.grading.assemble import assemble, match_score
from attn_course.grading.sandbox import Limits, run_isolated
from attn_course.grading.scoring import GRADER_ERROR, MISSING, UNREADABLE, NotebookResult, score_run


def load_sources(source) -> dict:
    """``{name: notebook}`` for the source notebooks in ``source`` (a dir or a file)."""
    out = {}
    for name, path in nbf.source_notebooks(source).items():
        try:
            out[name] = nbf.read_notebook(path)
        except nbf.UnreadableNotebook as exc:
            raise ValueError(f"source notebook {path} is unreadable: {exc}") from None
        problem = nbf.released_copy_problem(out[name], path)
        if problem:
            raise ValueError(problem)
    return out


def discover(paths) -> list[tuple[str, list[Path], str]]:
    """``[(name, notebooks, problem)]``, one per SUBMISSION argument.

    A submission is named after its folder (or the notebook's stem). When several share
    that name, as in nbgrader's ``submitted/<student>/<assignment>`` layout, the folders
    above are prefixed until the names differ (``alice-02_softmax``, ``bob-02_softmax``),
    so that every row of the gradebook says whose work it is; the same path given twice
    gets ``-2``, ``-3``.
    """
    entries = []
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            nbs = sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts)
            problem = "" if nbs else f"no .ipynb file in {p}"
            parts = p.resolve().parts
        elif p.exists():
            nbs, problem = [p], ""
            parts = (*p.resolve().parent.parts, p.stem)
        else:
            nbs, problem = [], f"{p} does not exist"
            parts = (*p.absolute().parent.parts, p.stem)
        entries.append(([x for x in parts if x not in ("/", "")] or ["submission"], nbs, problem))

    def tail(parts, k):
        return "-".join(parts[-k:])

    names = [tail(parts, 1) for parts, _, _ in entries]
    for k in range(2, max(len(parts) for parts, _, _ in entries) + 1):
        owners: dict[str, set] = {}
        for n, (parts, _, _) in zip(names, entries, strict=True):
            owners.setdefault(n, set()).add(tuple(parts))
        clash = {n for n, who in owners.items() if len(who) > 1}  # different folders
        if not clash:
            break
        names = [tail(parts, k) if n in clash else n
                 for n, (parts, _, _) in zip(names, entries, strict=True)]
    found, used = [], set()
    for base, (_, nbs, problem) in zip(names, entries, strict=True):
        name, k = base, 2
        while name in used:
            name, k = f"{base}-{k}", k + 1
        used.add(name)
        found.append((name, nbs, problem))
    return found


def pick_source(path: Path, nb, sources: dict) -> str | None:
    if path.stem in sources and (nb is None or match_score(nb, sources[path.stem]) > 0):
        return path.stem
    if nb is None:
        return None
    best = max(sources, key=lambda s: match_score(nb, sources[s]))
    return best if match_score(nb, sources[best]) > 0 else None


def grade_notebook(submission: str, path: Path, sources: dict, limits: Limits,
                   visible_only: bool = False, fork_server: str = "") -> NotebookResult:
    """Grade one notebook file; always returns a result."""
    try:
        nb = nbf.read_notebook(path)
    except nbf.UnreadableNotebook as exc:
        src = sources.get(path.stem)
        return NotebookResult(submission, path.stem, 0.0, nbf.max_points(src) if src else 0.0,
                              UNREADABLE, str(exc))
    name = pick_source(path, nb, sources)
    if name is None:
        src = sources.get(path.stem)  # named like an exercise: its points are what is lost
        return NotebookResult(
            submission, path.stem, 0.0, nbf.max_points(src) if src else 0.0, MISSING,
            f"no cell of {path.name} carries the grade id of a cell in the source notebooks "
            f"({', '.join(sorted(sources))}): either it is not an exercise notebook (a "
            f"lecture notebook or another file was submitted), or its nbgrader metadata "
            f"was removed (copying cells into a new notebook does that): paste your answers "
            f"into a fresh copy of the exercise notebook")
    source = sources[name]
    if visible_only:
        from attn_course.grading.release import release_notebook
        source = release_notebook(source)
    assembled = assemble(nb, source, visible_only=visible_only)
    outcome = run_isolated(assembled.nb, limits, fork_server=fork_server,
                           roles=[c.role for c in assembled.cells])
    written = {nbf.grade_id(c): c.source for c in nb.cells
               if nbf.grade_id(c) and nbf.is_manual(c)}
    return score_run(submission, name, source, assembled, outcome, limits, written)


def resolve_isolation(limits: Limits) -> Limits:
    """``limits`` with the isolation this machine gives; ValueError when that is none and
    the work is not trusted (see :mod:`attn_course.grading.isolation`)."""
    import dataclasses

    from attn_course.grading.isolation import MODES, detect

    if limits.isolation and limits.isolation not in MODES:
        raise ValueError(f"isolation must be one of {', '.join(MODES)}, got {limits.isolation!r}")
    found = detect()
    mode = limits.isolation or found.mode
    trusted = limits.trusted or os.environ.get("ATTN_COURSE_NO_SANDBOX") == "1"
    if mode == "none" and not trusted:
        raise ValueError(
            f"refusing to grade: learners' code would run with the grader's rights ({found.detail}). "
            f"Install bubblewrap (apt-get install bubblewrap) or grade as root; to grade work you "
            f"trust (your own notebooks) without isolation, pass --no-sandbox (or set "
            f"ATTN_COURSE_NO_SANDBOX=1)")
    return dataclasses.replace(limits, isolation=mode)


def start_fork_server():
    """A worker fork server for the batch, or None (workers then start the slow way)."""
    from attn_course.grading.forkserver import KERNEL_ENV, ForkServer

    try:
        return ForkServer(KERNEL_ENV)
    except (OSError, RuntimeError) as exc:
        print(f"attn-course grade: starting workers without the fork server ({exc})",
              file=sys.stderr)
        return None


def _safe_grade(submission, path, sources, limits, fork_server) -> NotebookResult:
    try:
        return grade_notebook(submission, path, sources, limits, fork_server=fork_server)
    except Exception as exc:  # a bug in the grader: keep the batch going, say so
        src = sources.get(path.stem)  # named like an exercise: keep its maximum
        return NotebookResult(submission, path.stem, 0.0, nbf.max_points(src) if src else 0.0,
                              GRADER_ERROR,
                              f"the grader failed on this notebook ({type(exc).__name__}: "
                              f"{exc}); please report it")


def _keep_best(rows: list[NotebookResult], r: NotebookResult) -> None:
    """Add ``r``; when the submission already has a copy of the same notebook (say
    ``02_softmax.ipynb`` and ``02_softmax (1).ipynb``), only the better one counts."""
    for i, old in enumerate(rows):
        if (old.submission, old.notebook) == (r.submission, r.notebook) and r.notebook:
            best = r if r.score > old.score else old
            note = "several copies of this notebook were submitted; the best one counts"
            if note not in best.reason:
                best.reason = f"{best.reason}; {note}" if best.reason else note
            rows[i] = best
            return
    rows.append(r)


def grade_all(paths, source, out_dir, limits: Limits, jobs: int = 1,
              progress: bool = True, server=None,
              visibility: str = "visible") -> list[NotebookResult]:
    """Grade every SUBMISSION in ``paths``; write ``out_dir``'s reports; return the rows.

    ``visibility``: when Gradescope shows each test's result to learners (results.json).

    ``server``: a started :class:`~attn_course.grading.forkserver.ForkServer` (it is
    closed here), else one is started when there is more than one notebook to grade (for
    one, the worker's own start overlaps with the learner's, which is quicker).
    """
    try:
        reports.require_visibility(visibility)  # before any grading starts
        limits = resolve_isolation(limits)
        sources = load_sources(source)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        from attn_course.grading.isolation import require_private

        require_private([source, out_dir], limits.isolation)
    except BaseException:
        if server:
            server.close()
        raise
    try:
        subs = discover(paths)
        if server is None and sum(len(nbs) for _, nbs, _ in subs) > 1:
            server = start_fork_server()
        return _grade_batch(subs, sources, out_dir, limits, jobs, progress,
                            server.path if server else "", visibility)
    finally:
        if server:
            server.close()


def _grade_batch(subs, sources, out_dir: Path, limits: Limits, jobs: int, progress: bool,
                 fork_server: str, visibility: str = "visible") -> list[NotebookResult]:
    results: list[NotebookResult] = []
    per_sub: dict[str, list[NotebookResult]] = {name: [] for name, _, _ in subs}
    remaining = {name: len(nbs) for name, nbs, _ in subs}
    lock = threading.Lock()

    def finish(r: NotebookResult) -> None:
        with lock:
            _keep_best(results, r)
            _keep_best(per_sub[r.submission], r)
            remaining[r.submission] -= 1
            if remaining[r.submission] <= 0:
                reports.write_results_json(out_dir, r.submission, per_sub[r.submission],
                                           visibility)
            reports.write_gradebook(out_dir, results)

    tasks = []
    for name, nbs, problem in subs:
        if problem:
            remaining[name] = 1
            finish(NotebookResult(name, "", 0.0, 0.0, UNREADABLE, problem))
        tasks += [(name, p) for p in nbs]
    from tqdm import tqdm

    with tqdm(total=len(tasks), unit="notebook", desc="grading", file=sys.stderr,
              disable=not progress or not tasks, mininterval=1.0) as bar, \
            ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(_safe_grade, name, p, sources, limits, fork_server)
                   for name, p in tasks]
        for fut in as_completed(futures):
            finish(fut.result())
            bar.update(1)
    if not results:
        reports.write_gradebook(out_dir, results)
    return sorted(results, key=lambda r: (r.submission, r.notebook))
