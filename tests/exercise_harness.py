"""Run one exercise task fast, in this process: the source notebook's cells up to the task's
test cell, with a given answer in place of the solution. For tests of the exercises'
feedback: the reference solution passes, the blank stub fails, each typical wrong answer
fails with its own hint, and alternative correct answers pass.

This is the learner's-kernel path of the test cells (the checks see ordinary functions);
the grader's sandboxed path runs the same cells in tests/test_grading_hostile.py
(every solution full marks, every blank exercise 0) and tests/test_grading_attacks.py.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

from attn_course.grading import notebooks as nbf

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"


@dataclass
class TaskRun:
    passed: bool
    output: str  # what the test cell printed, and the FAIL message if it failed


def run_task(notebook: str, test_id: str, answers: dict[str, str] | None = None,
             hidden: bool = True) -> TaskRun:
    """Run ``solutions/<notebook>`` up to its test cell ``test_id``; ``answers`` maps an answer
    cell's grade id to the code that replaces it (the others keep the solution); other
    tasks' test cells are skipped; ``hidden=False`` drops the hidden tests."""
    nb = nbf.read_notebook(SOLUTIONS / notebook)
    answers = answers or {}
    ns: dict = {"__name__": "__main__"}
    out = io.StringIO()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        gid = nbf.grade_id(cell)
        if nbf.is_test(cell) and gid != test_id:
            continue
        src = answers.get(gid, cell.source) if gid else cell.source
        if gid == test_id and not hidden:
            src = nbf.strip_hidden_tests(src)
        with contextlib.redirect_stdout(out):
            try:
                exec(compile(src, f"<{gid or 'cell'}>", "exec"), ns)  # noqa: S102
            except Exception as exc:  # noqa: BLE001 - a failing test or a broken answer
                if gid != test_id:
                    raise AssertionError(f"cell {gid} raised before the test: {exc!r}") from exc
                return TaskRun(False, out.getvalue() + f"{type(exc).__name__}: {exc}")
        if gid == test_id:
            return TaskRun(True, out.getvalue())
    raise KeyError(f"no test cell {test_id!r} in {notebook}")


def stub(notebook: str, answer_id: str) -> str:
    """The released (blank) text of an answer cell."""
    nb = nbf.read_notebook(SOLUTIONS / notebook)
    cell = next(c for c in nb.cells if nbf.grade_id(c) == answer_id)
    return nbf.clear_solution(cell.source)
