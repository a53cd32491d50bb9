"""nbgrader's notebook format, read without importing nbgrader.

A source notebook in ``solutions/`` marks its cells with nbgrader's metadata
(schema version 3)::

    {"nbgrader": {"grade": bool, "grade_id": str, "locked": bool, "points": n,
                  "schema_version": 3, "solution": bool}}

- an **answer** cell has ``solution: true``; its ``### BEGIN SOLUTION`` /
  ``### END SOLUTION`` region becomes a stub that raises ``NotImplementedError``;
- a **test** cell has ``grade: true, solution: false, locked: true`` and ``points``;
  its ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS`` region is removed from the
  learner's copy and restored when grading;
- every other cell is read-only (``locked: true``) and restored from the source; one
  marked ``{"attn_course": {"demo": true}}`` only shows the learner something and is not
  run when grading (:func:`is_demo`).

The small functions here repeat what nbgrader's ``ClearSolutions`` and
``ClearHiddenTests`` do to one cell's text (importing nbgrader takes seconds, and the
grader needs them for every batch); a test checks that they agree with nbgrader.
See https://nbgrader.readthedocs.io/en/stable/contributor_guide/metadata.html.
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import nbformat

BEGIN_SOLUTION, END_SOLUTION = "BEGIN SOLUTION", "END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
TEXT_STUB = "YOUR ANSWER HERE"  # a written (markdown) answer's stub


#: The largest notebook file the grader reads (a notebook with its outputs is well under).
MAX_NOTEBOOK_BYTES = 20 * 2**20
#: The most cells a notebook may have (the exercises have a few dozen).
MAX_CELLS = 2000


class UnreadableNotebook(Exception):
    """A file that is not a notebook nbformat can read, or one past the grader's limits
    on size and cells; the message says why and what to do."""


def meta(cell) -> dict:
    """The cell's nbgrader metadata; ``{}`` when it has none or it is not a mapping."""
    md = cell.get("metadata", {})
    m = md.get("nbgrader") if isinstance(md, dict) else None
    return m if isinstance(m, dict) else {}


def grade_id(cell) -> str | None:
    """The cell's nbgrader ``grade_id``; None when it has none or it is not a string."""
    gid = meta(cell).get("grade_id")
    return gid if isinstance(gid, str) and gid else None


def metadata_problem(cell) -> str | None:
    """Why the grader cannot use the cell's nbgrader metadata, or None (also when the
    cell has none): metadata written as a string or a list, or a grade id that is not
    a name. Such a cell is not taken for an exercise cell."""
    md = cell.get("metadata", {})
    if not isinstance(md, dict) or "nbgrader" not in md:
        return None
    m = md["nbgrader"]
    if not isinstance(m, dict):
        return f"its nbgrader metadata is a {type(m).__name__}, not a mapping of fields"
    gid = m.get("grade_id")
    if gid is not None and not (isinstance(gid, str) and gid):
        return f"its nbgrader grade_id is {gid!r}, not a name"
    return None


def is_answer(cell) -> bool:
    return bool(meta(cell).get("solution", False))


def is_test(cell) -> bool:
    m = meta(cell)
    return bool(m.get("grade", False)) and not m.get("solution", False)


def is_demo(cell) -> bool:
    """A read-only cell that only shows the learner something (a measurement after a
    prediction, a plot): ``{"attn_course": {"demo": true}}`` in the source notebook's cell
    metadata. The grader does not run it (it defines nothing a later cell reads; a test
    checks that), which keeps grading fast. Answer and test cells are never demos."""
    md = cell.get("metadata", {})
    ours = md.get("attn_course") if isinstance(md, dict) else None
    return (isinstance(ours, dict) and ours.get("demo") is True
            and not is_answer(cell) and not is_test(cell))


def points(cell) -> float:
    return float(meta(cell).get("points", 0) or 0)


def max_points(nb) -> float:
    return sum(points(c) for c in nb.cells if is_test(c))


def is_manual(cell) -> bool:
    """A written answer graded by hand: nbgrader's "manually graded answer" (``grade`` and
    ``solution``) or "manually graded task" (``task``) cell."""
    m = meta(cell)
    return bool(m.get("grade", False) and m.get("solution", False)) or bool(m.get("task", False))


def manual_points(nb) -> float:
    return sum(points(c) for c in nb.cells if is_manual(c))


def test_title(cell) -> str:
    """The test's title from its first comment line: ``# Tests for Task 1: x`` gives
    ``Task 1: x``; the grade id when there is no comment."""
    for line in cell.get("source", "").splitlines():
        line = line.strip()
        if line.startswith("#") and "BEGIN" not in line:
            title = line.lstrip("# ").strip()
            return title.removeprefix("Tests for ").strip() or title
        if line:
            break
    return grade_id(cell) or "test"


def released_copy_problem(nb, path) -> str | None:
    """Why ``nb`` cannot serve as a grading source, or None.

    A source has its answers between ``### BEGIN SOLUTION`` markers; a learner's copy
    made by ``attn-course release`` has checksums and no answers, and grading with it
    would run the visible tests only (and score stubs as answers).
    """
    if any("checksum" in meta(c) for c in nb.cells):
        return (f"{path} is a released copy (it carries nbgrader checksums): pass the source "
                f"notebook from solutions/, which has the answers and the hidden tests")
    if not any(BEGIN_SOLUTION in c.source for c in nb.cells if is_answer(c)):
        return (f"{path} has no '### {BEGIN_SOLUTION}' answer: pass the source notebook from "
                f"solutions/")
    return None


def _declared_version(text: str):
    try:
        return json.loads(text).get("nbformat")
    except (ValueError, AttributeError):
        return None


def read_notebook(path) -> nbformat.NotebookNode:
    """Read ``path`` as an nbformat-4 notebook (older versions are converted) or raise
    :class:`UnreadableNotebook`: not a notebook, over :data:`MAX_NOTEBOOK_BYTES` or
    :data:`MAX_CELLS`, or malformed cells."""
    path = Path(path)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableNotebook(f"{path.name} is not a regular file")
        size = st.st_size
        if size > MAX_NOTEBOOK_BYTES:
            raise UnreadableNotebook(
                f"{path.name} is {size / 2**20:.1f} MB, over the grader's limit of "
                f"{MAX_NOTEBOOK_BYTES / 2**20:g} MB for a notebook: clear its outputs (Edit > "
                f"Clear Outputs of All Cells), save it and submit it again")
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableNotebook(f"cannot read {path.name}: {exc.strerror}") from None
    if not data.strip():
        raise UnreadableNotebook(f"{path.name} is empty (0 notebook cells)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableNotebook(f"{path.name} is not UTF-8 text") from None
    try:
        nb = nbformat.reads(text, as_version=4)
    except (json.JSONDecodeError, nbformat.reader.NotJSONError) as exc:
        raise UnreadableNotebook(f"{path.name} is not valid notebook JSON ({exc})") from None
    except Exception as exc:  # nbformat raises several types for malformed notebooks
        version = _declared_version(text)
        if isinstance(version, int) and version < 4:
            raise UnreadableNotebook(
                f"{path.name} says it is an nbformat {version} notebook (an old format that "
                f"the grader converts to version 4), but it could not be converted ({exc}): "
                f"submit the exercise notebook as a current Jupyter saves it (nbformat 4)"
            ) from None
        raise UnreadableNotebook(f"{path.name} is not a valid notebook ({exc})") from None
    if not isinstance(nb.get("cells"), list):
        raise UnreadableNotebook(f"{path.name} has no list of cells")
    if len(nb.cells) > MAX_CELLS:
        raise UnreadableNotebook(
            f"{path.name} has {len(nb.cells):,} cells, more than the {MAX_CELLS:,} the grader "
            f"accepts (the exercise has a few dozen): delete the cells you added that the "
            f"answers do not need, save it and submit it again")
    for i, cell in enumerate(nb.cells):
        if not isinstance(cell, dict) or not isinstance(cell.get("source", ""), str):
            raise UnreadableNotebook(f"{path.name}: cell {i} is malformed")
    return nb


def source_notebooks(source) -> dict[str, Path]:
    """``{stem: path}`` for every source notebook in ``source``: one notebook, a folder
    of notebooks (``solutions/``), or an nbgrader course's ``source/`` folder, whose
    notebooks are one level down in a folder per assignment
    (``source/02_softmax/02_softmax.ipynb``)."""
    source = Path(source)
    if source.is_file():
        return {source.stem: source}
    if not source.is_dir():
        raise FileNotFoundError(f"--source must be a directory of source notebooks or one "
                                f"notebook, got {str(source)!r}, which does not exist")
    paths = sorted(source.glob("*.ipynb")) + sorted(
        p for p in source.glob("*/*.ipynb") if p.parent.name != ".ipynb_checkpoints")
    found: dict[str, Path] = {}
    for p in paths:
        if p.stem in found:
            raise ValueError(f"--source {str(source)!r} has two notebooks named {p.name} "
                             f"({found[p.stem]} and {p}): submissions are matched to sources "
                             f"by name, so each name must be used once")
        found[p.stem] = p
    if not found:
        raise FileNotFoundError(f"--source {str(source)!r} contains no .ipynb file, neither "
                                f"directly nor in a folder per assignment (nbgrader's "
                                f"source/<assignment>/<assignment>.ipynb)")
    return found


def _regions(text: str, begin: str, end: str, stub: list[str] | None) -> str:
    out, inside = [], False
    for line in text.split("\n"):
        if begin in line:
            if inside:
                raise ValueError(f"nested '### {begin}' in:\n{text}")
            inside = True
            if stub is not None:
                indent = re.match(r"\s*", line).group(0)
                out += [indent + s for s in stub]
        elif end in line:
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"'### {begin}' without '### {end}' in:\n{text}")
    return "\n".join(out)


def strip_hidden_tests(text: str) -> str:
    """The cell text without its hidden-test regions (nbgrader's ClearHiddenTests)."""
    return _regions(text, BEGIN_HIDDEN, END_HIDDEN, None)


def clear_solution(text: str, written: bool = False) -> str:
    """The cell text with each solution region replaced by the stub (ClearSolutions):
    code's, or with ``written`` a markdown answer's ``YOUR ANSWER HERE``."""
    stub = TEXT_STUB if written else CODE_STUB
    if BEGIN_SOLUTION not in text:
        return stub
    return _regions(text, BEGIN_SOLUTION, END_SOLUTION, stub.split("\n"))


def learner_text(cell) -> str:
    """What the released exercise shows in this cell."""
    if is_answer(cell):
        return clear_solution(cell.source, written=cell.get("cell_type") != "code")
    return strip_hidden_tests(cell.source)
