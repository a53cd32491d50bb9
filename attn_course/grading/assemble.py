"""Build the notebook the grader runs from a submission and its source.

Only the learner's **answer cells** (and cells the learner added) come from the
submission. Every other code cell is taken from the source by its nbgrader
``grade_id``: a test cell the learner edited or deleted is restored, and the hidden
tests are put back. A missing answer cell runs as the released stub (so it scores 0).
Cells the learner added run where they were, between the cells around them.

Two cells are added: a preamble before everything that imports the checks (so the
integrity snapshot is taken before any learner code runs) and a last cell that
reports whether the watched libraries were replaced, tagged with a token that is new
for every run (see :mod:`attn_course.grading.integrity`).

With ``visible_only`` (the learner's self-check) the test cells are the released
ones, without hidden tests.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import nbformat

from attn_course.grading import notebooks as nbf

PREAMBLE = "__import__('attn_course.grading.checks')  # the grader's preamble"


def integrity_source(token: str) -> str:
    return f"__import__('attn_course.grading.integrity', fromlist=['x']).report({token!r})"


@dataclass
class Cell:
    role: str  # preamble, answer, test, locked, added, integrity
    grade_id: str | None
    source_index: int | None = None  # index in the source notebook (answer and test cells)


@dataclass
class Assembled:
    nb: nbformat.NotebookNode
    cells: list[Cell]
    token: str
    matched: int  # how many of the source's grade ids the submission carries
    notes: list[str] = field(default_factory=list)


def match_score(submission, source) -> int:
    """How many grade ids ``submission`` shares with ``source``."""
    ids = {nbf.grade_id(c) for c in source.cells} - {None}
    return len(ids & {nbf.grade_id(c) for c in submission.cells})


def assemble(submission, source, visible_only: bool = False) -> Assembled:
    """The notebook to run for ``submission`` against ``source`` (both NotebookNodes)."""
    token = secrets.token_hex(8)
    ours = {nbf.grade_id(c): i for i, c in enumerate(source.cells) if nbf.grade_id(c)}
    theirs: dict[str, int] = {}
    for i, c in enumerate(submission.cells):
        gid = nbf.grade_id(c)
        if gid in ours and gid not in theirs:
            theirs[gid] = i
    out_cells = [nbformat.v4.new_code_cell(PREAMBLE, metadata={"attn_course": {"role": "preamble"}})]
    roles = [Cell("preamble", None)]
    notes: list[str] = []
    last = -1  # index in the submission of the last matched cell

    def add(text: str, role: str, gid: str | None, src_i: int | None = None) -> None:
        cell = nbformat.v4.new_code_cell(text)
        if gid:
            cell.metadata["nbgrader"] = {"grade_id": gid}
        out_cells.append(cell)
        roles.append(Cell(role, gid, src_i))

    def add_learner_cells(upto: int) -> None:
        for j in range(last + 1, upto):
            c = submission.cells[j]
            if c.get("cell_type") == "code" and nbf.grade_id(c) not in ours:
                add(c.source, "added", None)

    for i, cell in enumerate(source.cells):
        gid = nbf.grade_id(cell)
        j = theirs.get(gid) if gid else None
        if j is not None and j > last:
            add_learner_cells(j)
            last = j
        if cell.cell_type != "code":
            continue
        if nbf.is_answer(cell):
            if j is None:
                notes.append(f"answer cell {gid} is missing from the submission, so it ran "
                             f"as the unanswered stub")
                add(nbf.clear_solution(cell.source), "answer", gid, i)
            else:
                add(submission.cells[j].source, "answer", gid, i)
            continue
        released = nbf.learner_text(cell)
        if nbf.is_test(cell):
            if j is None:
                notes.append(f"test cell {gid} was deleted; the grader restored it")
            elif submission.cells[j].source.strip() not in (released.strip(),
                                                            cell.source.strip()):
                notes.append(f"test cell {gid} was edited; the grader restored it")
        text = released if visible_only else cell.source
        add(text, "test" if nbf.is_test(cell) else "locked", gid, i)
    add(integrity_source(token), "integrity", None)
    nb = nbformat.v4.new_notebook(cells=out_cells, metadata=source.metadata)
    return Assembled(nb, roles, token, matched=len(theirs), notes=notes)
