"""Build the notebook the grader runs from a submission and its source.

Only the learner's **answer cells** (and cells the learner added) come from the
submission. Every other code cell is taken from the source by its nbgrader
``grade_id``: a test cell the learner edited or deleted is restored, and the hidden
tests are put back. A missing answer cell runs as the released stub (so it scores 0).
Cells the learner added run where they were, between the cells around them.

The grader runs the test cells in its own process (:mod:`~attn_course.grading.worker`),
so nothing is added to the learner's cells; read-only cells marked as demos
(:func:`~attn_course.grading.notebooks.is_demo`) are left out.

With ``visible_only`` (the learner's self-check) the test cells are the released
ones, without hidden tests.

What the learner's notebook does oddly is named in the notes (the reason in the
gradebook), never skipped silently:

- several cells carrying the same answer's grade id (a copied cell keeps its
  metadata): the last of them is graded as the answer, the others run where they are,
  as cells the learner added;
- a cell whose nbgrader metadata is not a mapping (written as a string) or whose grade
  id is not a name: it is not taken for an exercise cell, and runs as an added cell;
- cells after the notebook's last exercise cell: they would run after every test, so
  they are not run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nbformat

from attn_course.grading import notebooks as nbf


@dataclass
class Cell:
    role: str  # answer, test, locked, added
    grade_id: str | None
    source_index: int | None = None  # index in the source notebook (answer and test cells)


@dataclass
class Assembled:
    nb: nbformat.NotebookNode
    cells: list[Cell]
    matched: int  # how many of the source's grade ids the submission carries
    notes: list[str] = field(default_factory=list)


def match_score(submission, source) -> int:
    """How many grade ids ``submission`` shares with ``source``."""
    ids = {nbf.grade_id(c) for c in source.cells} - {None}
    return len(ids & {nbf.grade_id(c) for c in submission.cells})


def assemble(submission, source, visible_only: bool = False) -> Assembled:
    """The notebook to run for ``submission`` against ``source`` (both NotebookNodes)."""
    ours = {nbf.grade_id(c): i for i, c in enumerate(source.cells) if nbf.grade_id(c)}
    answers = {gid for gid, i in ours.items() if nbf.is_answer(source.cells[i])}
    claims: dict[str, list[int]] = {}
    for i, c in enumerate(submission.cells):
        gid = nbf.grade_id(c)
        if gid in ours:
            claims.setdefault(gid, []).append(i)
    # the learner's last version of an answer counts; for other cells the first copy
    theirs = {gid: (idx[-1] if gid in answers else idx[0]) for gid, idx in claims.items()}
    chosen = set(theirs.values())
    notes: list[str] = []
    for gid, idx in claims.items():
        if len(idx) > 1 and gid in answers:
            cells = ", ".join(str(i + 1) for i in idx[:-1]) + f" and {idx[-1] + 1}"
            notes.append(f"cells {cells} (counting from 1) {'both' if len(idx) == 2 else 'all'} "
                         f"carry the grade id of answer "
                         f"cell {gid}: the last of them, cell {idx[-1] + 1}, was graded as the "
                         f"answer and the others ran where they are, as cells you added")
    for i, c in enumerate(submission.cells):
        problem = nbf.metadata_problem(c)
        if problem:
            notes.append(f"cell {i + 1} (counting from 1): {problem}, so the grader did not "
                         f"take it for an exercise cell (a code cell runs as one you added)")
    out_cells: list = []
    roles: list[Cell] = []
    last = -1  # index in the submission of the last matched cell

    def runs_as_added(j: int) -> bool:
        c = submission.cells[j]
        if c.get("cell_type") != "code" or j in chosen:
            return False
        gid = nbf.grade_id(c)
        return gid not in ours or gid in answers  # a second copy of an answer runs

    def add(text: str, role: str, gid: str | None, src_i: int | None = None) -> None:
        cell = nbformat.v4.new_code_cell(text)
        if gid:
            cell.metadata["nbgrader"] = {"grade_id": gid}
        out_cells.append(cell)
        roles.append(Cell(role, gid, src_i))

    def add_learner_cells(upto: int) -> None:
        for j in range(last + 1, upto):
            if runs_as_added(j):
                add(submission.cells[j].source, "added", None)

    for i, cell in enumerate(source.cells):
        gid = nbf.grade_id(cell)
        j = theirs.get(gid) if gid else None
        if j is not None and j > last:
            add_learner_cells(j)
            last = j
        if cell.cell_type != "code" or nbf.is_demo(cell):
            continue  # a demo only shows the learner a measurement: not run when grading
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
    after = sum(runs_as_added(j) for j in range(last + 1, len(submission.cells)))
    if after:
        notes.append(f"{after} code cell{'s' if after > 1 else ''} after the notebook's last "
                     f"exercise cell {'were' if after > 1 else 'was'} not run (after every "
                     f"test, {'they' if after > 1 else 'it'} could not change a result)")
    nb = nbformat.v4.new_notebook(cells=out_cells, metadata=source.metadata)
    return Assembled(nb, roles, matched=len(theirs), notes=notes)
