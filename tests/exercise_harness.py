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


def fails_with(notebook: str, test_id: str, answer_id: str, code: str, phrase: str) -> None:
    """Assert that ``code`` as answer ``answer_id`` fails test ``test_id`` showing ``phrase``
    (the wrong answer's own hint)."""
    run = run_task(notebook, test_id, {answer_id: code})
    assert not run.passed, run.output
    assert phrase in run.output, run.output


def passes(notebook: str, test_id: str, answer_id: str, code: str) -> None:
    """Assert that ``code`` as answer ``answer_id`` passes test ``test_id``."""
    run = run_task(notebook, test_id, {answer_id: code})
    assert run.passed, run.output


def hint_texts(source: str) -> list[str]:
    """Every string a test cell can show as a hint: the hints(...) stages, each hint=
    argument (f-strings with their literal parts only) and upper-case hint constants."""
    import ast

    def literal(node) -> str:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr):
            return "".join(literal(v) for v in node.values)
        if isinstance(node, ast.BinOp):
            return literal(node.left) + literal(node.right)
        if isinstance(node, ast.IfExp):
            return literal(node.body) + "\n" + literal(node.orelse)
        return ""

    texts = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            if getattr(node.func, "id", "") == "hints":
                texts += [literal(a) for a in node.args[1:]]
            texts += [literal(k.value) for k in node.keywords if k.arg == "hint"]
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "").isupper()
                                                for t in node.targets):
            texts.append(literal(node.value))
    return [t for t in texts if t]


def solution_in_hints(notebook: str, min_hints: int = 10, width: int = 16) -> list:
    """``[(hint, pieces)]`` for every hint of ``notebook``'s test cells that holds ``width``
    characters (spaces aside) of a line of a solution; asserts there are ``min_hints``."""
    nb = nbf.read_notebook(SOLUTIONS / notebook)
    hints = [h for c in nb.cells if nbf.is_test(c) for h in hint_texts(c.source)]
    assert len(hints) >= min_hints, f"{notebook}: only {len(hints)} hints"
    return _holding(hints, _solution_pieces(nb, width))


def _solution_pieces(nb, width: int) -> set[str]:
    """Every ``width``-character piece (spaces and comments aside) of a solution line."""
    code = [c.source for c in nb.cells if nbf.is_answer(c) and c.cell_type == "code"]
    lines = {"".join(line.split("#")[0].split()) for src in code for line in
             src.split("### BEGIN SOLUTION")[-1].split("### END SOLUTION")[0].splitlines()}
    lines = {line for line in lines if not line.startswith("predicted_")}  # a number, no code
    return {line[i:i + width] for line in lines for i in range(max(len(line) - width + 1, 0))}


def _holding(texts: list[str], pieces: set[str]) -> list:
    """``[(text, pieces it holds)]`` for the texts holding any piece (spaces aside)."""
    found = []
    for t in texts:
        flat = "".join(t.split())
        hit = [p for p in pieces if p in flat]
        if hit:
            found.append((t, hit))
    return found


def reference_passes_and_stub_fails(notebook: str, test_id: str, answer_id: str,
                                    phrase: str) -> None:
    """The solution passes test ``test_id``; the released stub of ``answer_id`` fails it with
    ``phrase``. A prediction's stub raises in its own cell only, so its raise is dropped here
    and the test meets the variable's placeholder."""
    assert run_task(notebook, test_id).passed
    blank = stub(notebook, answer_id)
    if answer_id.endswith("predict-answer"):
        blank = blank.replace("raise NotImplementedError()", "")
    run = run_task(notebook, test_id, {answer_id: blank})
    assert not run.passed
    assert phrase in run.output, run.output


def string_literals(source: str) -> list[str]:
    """Every string literal of a test cell (the literal parts of f-strings): hints, details,
    names, diagnoses."""
    import ast

    return [node.value for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def solution_in_test_text(notebook: str, min_texts: int = 20, width: int = 16) -> list:
    """Like :func:`solution_in_hints`, over every string of the test cells (not only hints),
    counting only pieces that look like code (a non-word character at each end):
    ``[(text, pieces)]`` for each string holding ``width`` characters of a solution line."""
    import re

    nb = nbf.read_notebook(SOLUTIONS / notebook)
    pieces = {p for p in _solution_pieces(nb, width) if re.search(r"\W.*\W", p)}  # code, not words
    texts = [t for c in nb.cells if nbf.is_test(c) for t in string_literals(c.source)]
    assert len(texts) >= min_texts, f"{notebook}: only {len(texts)} strings"
    return _holding(texts, pieces)


def derive_goals(notebook: str) -> list[str]:
    """The goals of ``notebook``'s derive tasks (auto-graded and written): a learner sees
    them, so the tests check that they name the skill, not the result."""
    nb = nbf.read_notebook(SOLUTIONS / notebook)
    return [c.metadata["attn_course"]["goal"] for c in nb.cells
            if nbf.meta(c).get("grade") and c.metadata.get("attn_course", {}).get("kind") == "derive"]


def grade_ids(notebook: str) -> list[str]:
    """``notebook``'s grade ids in cell order (each must be unique)."""
    return [gid for c in nbf.read_notebook(SOLUTIONS / notebook).cells if (gid := nbf.grade_id(c))]
