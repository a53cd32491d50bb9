"""The grading subcommands of ``attn-course``: release, check, grade, gradescope.

Kept light to import: each command imports what it needs when it runs, so that
``attn-course doctor`` starts as fast as before.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# reports.VISIBILITIES, spelled out so that building the parser imports nothing (tested)
VISIBILITIES = ("visible", "after_due_date", "after_published", "hidden")


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value
    return parse


def _fast_imports() -> None:
    from attn_course.grading.worker import skip_slow_imports

    skip_slow_imports()


def _limits(args, trusted: bool = False):
    from attn_course.grading.sandbox import GiB, Limits

    return Limits(cell_timeout=args.cell_timeout, total_timeout=args.timeout,
                  memory=int(args.memory_limit * GiB), trusted=trusted)


def _add_limits(p: argparse.ArgumentParser, cell_timeout: float, timeout: float) -> None:
    p.add_argument("--cell-timeout", type=_positive(float), default=cell_timeout, metavar="S",
                   help=f"seconds one cell may run before it is interrupted (default {cell_timeout:g})")
    p.add_argument("--timeout", type=_positive(float), default=timeout, metavar="S",
                   help=f"seconds one notebook may run in all, kernel start included "
                        f"(default {timeout:g})")
    p.add_argument("--memory-limit", type=_positive(float), default=4.0, metavar="GiB",
                   help="address space per process for the kernel (default 4)")


def cmd_release(args) -> int:
    _fast_imports()
    from attn_course.grading.release import release

    try:
        problems = release(args.source, args.out, check=args.check, table=args.table or None)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"attn-course release: {exc}", file=sys.stderr)
        return 2
    return 1 if args.check and problems else 0


def cmd_check(args) -> int:
    _fast_imports()
    from attn_course.grading import notebooks as nbf
    from attn_course.grading.grader import grade_notebook, load_sources
    from attn_course.grading.reports import format_result
    from attn_course.grading.scoring import GRADED

    path = Path(args.notebook)
    if not path.is_file():
        print(f"attn-course check: NOTEBOOK {str(path)!r} is not a file", file=sys.stderr)
        return 2
    if args.source:
        try:
            sources = load_sources(args.source)
        except (FileNotFoundError, ValueError) as exc:
            print(f"attn-course check: {exc}", file=sys.stderr)
            return 2
    else:  # the notebook's own (visible) test cells
        try:
            sources = {path.stem: nbf.read_notebook(path)}
        except nbf.UnreadableNotebook as exc:
            print(f"attn-course check: {exc}", file=sys.stderr)
            return 1
    print(f"checking {path} with its visible tests (this starts a kernel)...", file=sys.stderr)
    from attn_course.grading.forkserver import KERNEL_ENV, ForkServer

    with ForkServer(KERNEL_ENV) as server:  # preloads torch while the rest starts
        result = grade_notebook("self-check", path, sources, _limits(args, trusted=True),
                                visible_only=bool(args.source), fork_server=server.path)
    print(format_result(result, hint=args.hint))
    print("These are the visible tests only: more tests run when the work is graded, so "
          "the grade can be lower than this.")
    ok = result.status == GRADED and result.tests and all(t.passed for t in result.tests)
    return 0 if ok else 1


def cmd_grade(args) -> int:
    from attn_course.grading.forkserver import KERNEL_ENV, ForkServer

    # first, for a batch: it preloads torch while the grader starts
    server = ForkServer(KERNEL_ENV) if len(args.submissions) > 1 else None
    _fast_imports()
    from attn_course.grading.grader import grade_all

    try:
        results = grade_all(args.submissions, args.source, args.out,
                            _limits(args, trusted=args.no_sandbox),
                            jobs=args.jobs, progress=not args.no_progress, server=server,
                            visibility=args.visibility)
    except (FileNotFoundError, ValueError) as exc:
        print(f"attn-course grade: {exc}", file=sys.stderr)
        return 2
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(f"graded {len(results)} notebooks ({summary}); wrote {Path(args.out) / 'gradebook.csv'}")
    return 0


def cmd_gradescope(args) -> int:
    _fast_imports()
    from attn_course.grading.gradescope import build_bundle
    from attn_course.grading.notebooks import UnreadableNotebook

    try:
        path = build_bundle(args.notebook, args.out, cell_timeout=args.cell_timeout,
                            timeout=args.timeout, visibility=args.visibility)
    except (FileNotFoundError, ValueError, UnreadableNotebook) as exc:
        print(f"attn-course gradescope: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}: upload it as the assignment's autograder on Gradescope")
    return 0


def register(sub) -> None:
    """Add the grading subcommands to ``attn-course``'s subparsers."""
    p = sub.add_parser("release", help="regenerate exercises/ from solutions/")
    p.add_argument("--check", action="store_true",
                   help="write nothing; fail when exercises/ differs from what would be generated")
    p.add_argument("--source", default="solutions", help="source notebooks (default solutions/)")
    p.add_argument("--out", default="exercises", help="learner notebooks (default exercises/)")
    p.add_argument("--table", default="docs/exercises.md",
                   help="the table of every task's kind, points and goal (default "
                        "docs/exercises.md; '' for none)")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("check", help="run a notebook's visible tests (the learner's self-check)")
    p.add_argument("notebook", metavar="NOTEBOOK")
    p.add_argument("--source", default=None,
                   help="restore the test cells from these source notebooks (default: "
                        "use the notebook's own test cells)")
    p.add_argument("--hint", type=_positive(int), default=1, metavar="N",
                   help="for each failed test, also show its hints up to stage N (each says "
                        "more than the one before; 1, the default, is the failing check's own)")
    _add_limits(p, cell_timeout=60, timeout=600)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("grade", help="grade submissions with the hidden tests")
    p.add_argument("submissions", nargs="+", metavar="SUBMISSION",
                   help="a notebook, or a directory of one student's notebooks")
    p.add_argument("--source", required=True, help="the source notebooks (solutions/)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="writes DIR/gradebook.csv and DIR/<submission>/results.json")
    p.add_argument("--jobs", type=_positive(int), default=1, metavar="N",
                   help="notebooks graded at once (default 1; one per core is a good choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--no-sandbox", action="store_true",
                   help="for work you trust only (your own notebooks): run it without isolation "
                        "where this machine has none (see `attn-course doctor`)")
    p.add_argument("--visibility", default="visible", choices=VISIBILITIES,
                   help="when Gradescope shows learners each test's result (results.json)")
    _add_limits(p, cell_timeout=30, timeout=300)
    p.set_defaults(func=cmd_grade)

    p = sub.add_parser("gradescope", help="build Gradescope's autograder zip for one exercise")
    p.add_argument("notebook", metavar="NOTEBOOK", help="the source notebook in solutions/")
    p.add_argument("--out", default="autograder.zip", help="the zip to write")
    p.add_argument("--cell-timeout", type=_positive(float), default=60, metavar="S")
    p.add_argument("--timeout", type=_positive(float), default=600, metavar="S")
    p.add_argument("--visibility", default="visible", choices=VISIBILITIES,
                   help="when learners see each test's result: 'visible' (at once, the "
                        "default: the hints are the feedback), 'after_published' keeps "
                        "the hidden tests' results from being probed by resubmitting")
    p.set_defaults(func=cmd_gradescope)
