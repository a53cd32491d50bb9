"""Notebooks the grader must not grade as if nothing were wrong: too large, too many
cells, malformed nbgrader metadata, two cells with one answer's grade id, nbformat 3.
Each gets a row that names the problem and keeps the exercise's maximum (the source's
points), and the rest of the batch is graded."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import nbformat
import pytest

from attn_course.grading import notebooks as nbf
from attn_course.grading.assemble import assemble
from attn_course.grading.grader import grade_all
from attn_course.grading.reports import read_gradebook
from attn_course.grading.sandbox import Limits
from tests.grading_fixture import FIX_SOLUTIONS, SOFTMAX_BLANK, SOFTMAX_SOURCE

ROOT = Path(__file__).resolve().parents[1]
SOFTMAX = SOFTMAX_SOURCE
ANSWER = "softmax-stable-answer"


def _solution() -> nbformat.NotebookNode:
    return copy.deepcopy(nbf.read_notebook(SOFTMAX))


MAX = nbf.max_points(_solution())  # the exercise's maximum
N_CELLS = len(_solution().cells)


def _index(nb, grade_id: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if nbf.grade_id(c) == grade_id)


def _appended(n: int) -> nbformat.NotebookNode:
    nb = _solution()
    nb.cells += [nbformat.v4.new_code_cell("import numpy as np\nnp.allclose = lambda *a, **k: True")
                 for _ in range(n)]
    return nb


def _string_metadata() -> nbformat.NotebookNode:
    nb = _solution()
    cell = nb.cells[_index(nb, ANSWER)]
    cell.metadata["nbgrader"] = json.dumps(cell.metadata["nbgrader"])
    return nb


def _duplicated_answer() -> nbformat.NotebookNode:
    """The exercise's stub, then a copy of the cell (same grade id) with the answer: a
    learner who copied the cell to start again."""
    nb = nbf.read_notebook(SOFTMAX_BLANK)
    i = _index(nb, ANSWER)
    answer = copy.deepcopy(nb.cells[i])
    answer.id = "copied-answer"
    answer.source = _solution().cells[_index(_solution(), ANSWER)].source
    nb.cells.insert(i + 1, answer)
    return nb


def _write(path: Path, nb) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(nb, bytes):
        path.write_bytes(nb)
    else:
        nbformat.write(nb, str(path))
    return path


# --- without a kernel -------------------------------------------------------------------

def test_a_file_over_the_size_cap_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "02_softmax.ipynb"
    path.write_bytes(b"{" + b" " * (nbf.MAX_NOTEBOOK_BYTES + 2**20) + b"}")
    with pytest.raises(nbf.UnreadableNotebook, match=r"02_softmax.ipynb is 21.0 MB, over the "
                                                     r"grader's limit of 20 MB.*clear its outputs"):
        nbf.read_notebook(path)


def test_the_cell_cap_names_the_count(tmp_path):
    path = _write(tmp_path / "02_softmax.ipynb", _appended(nbf.MAX_CELLS))
    with pytest.raises(nbf.UnreadableNotebook,
                       match=f"has {nbf.MAX_CELLS + N_CELLS:,} cells, more than the 2,000"):
        nbf.read_notebook(path)
    ok = _write(tmp_path / "ok.ipynb", _appended(nbf.MAX_CELLS - N_CELLS))
    assert len(nbf.read_notebook(ok).cells) == nbf.MAX_CELLS


def test_nbformat_3_is_converted_or_named(tmp_path):
    v3 = _write(tmp_path / "v3.ipynb", b"")
    v3.write_text(nbformat.writes(nbformat.convert(_solution(), 3), version=3))
    nb = nbf.read_notebook(v3)
    assert nb.nbformat == 4
    assert nbf.grade_id(nb.cells[_index(nb, ANSWER)]) == ANSWER
    broken = json.loads(SOFTMAX.read_text())
    broken["nbformat"] = 3  # version 4's layout under version 3's number
    path = _write(tmp_path / "broken.ipynb", json.dumps(broken).encode())
    with pytest.raises(nbf.UnreadableNotebook, match="says it is an nbformat 3 notebook"):
        nbf.read_notebook(path)


def test_malformed_metadata_is_not_an_exercise_cell():
    nb = _string_metadata()
    cell = nb.cells[_index(_solution(), ANSWER)]
    assert nbf.meta(cell) == {}
    assert nbf.grade_id(cell) is None
    assert "nbgrader metadata is a str" in nbf.metadata_problem(cell)
    listed = nbformat.v4.new_code_cell("x = 1", metadata={"nbgrader": {"grade_id": ["a"]}})
    assert nbf.grade_id(listed) is None
    assert "grade_id is ['a'], not a name" in nbf.metadata_problem(listed)
    assert nbf.metadata_problem(nbformat.v4.new_code_cell("x = 1")) is None
    notes = assemble(nb, _solution()).notes
    assert any(f"cell {_index(_solution(), ANSWER) + 1} (counting from 1): its nbgrader "
               f"metadata is a str" in n for n in notes), notes


def test_the_last_copy_of_an_answer_is_graded_and_named():
    nb = _duplicated_answer()
    i = _index(nb, ANSWER)
    a = assemble(nb, _solution())
    graded = [nb_cell for nb_cell, role in zip(a.nb.cells, a.cells, strict=True)
              if role.role == "answer" and role.grade_id == ANSWER]
    assert len(graded) == 1
    assert "NotImplementedError" not in graded[0].source  # the second copy, the answer
    assert any(f"cells {i + 1} and {i + 2} (counting from 1) both carry the grade id of answer "
               f"cell {ANSWER}: the last of them, cell {i + 2}, was graded" in n
               for n in a.notes), a.notes


def test_cells_after_the_last_exercise_cell_are_named():
    a = assemble(_appended(3), _solution())
    assert "3 code cells after the notebook's last exercise cell were not run" in "; ".join(a.notes)
    assert "np.allclose = " not in "".join(c.source for c in a.nb.cells)


# --- one batch, graded ------------------------------------------------------------------

@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    big = _solution()
    big.cells[_index(big, ANSWER)].outputs = [nbformat.v4.new_output(
        "stream", name="stdout", text="x" * (nbf.MAX_NOTEBOOK_BYTES + 2**20))]
    broken_v3 = json.loads(SOFTMAX.read_text())
    broken_v3["nbformat"] = 3
    subs = {
        "good": _solution(),
        "appended_10000": _appended(10_000),
        "too_big": big,
        "string_metadata": _string_metadata(),
        "duplicated_answer": _duplicated_answer(),
        "nbformat3": nbformat.writes(nbformat.convert(_solution(), 3), version=3).encode(),
        "nbformat3_broken": json.dumps(broken_v3).encode(),
        "cells_after_the_end": _appended(5),
    }
    paths = [_write(d / name / "02_softmax.ipynb", nb).parent for name, nb in subs.items()]
    grade_all(paths, FIX_SOLUTIONS, d / "out", Limits(cell_timeout=30, total_timeout=120),
              jobs=2, progress=False)
    return {r["submission"]: r for r in read_gradebook(d / "out" / "gradebook.csv")}


def test_every_bad_notebook_keeps_the_exercises_maximum(batch):
    assert len(batch) == 8
    for name, row in batch.items():
        assert float(row["max"]) == MAX, (name, row)


def test_the_rest_of_the_batch_is_graded(batch):
    for name in ("good", "nbformat3", "cells_after_the_end"):
        assert (batch[name]["status"], float(batch[name]["score"])) == ("graded", MAX), batch[name]


@pytest.mark.parametrize(("name", "says"), [
    ("appended_10000", f"has {10_000 + N_CELLS:,} cells, more than the 2,000 the grader accepts"),
    ("too_big", "over the grader's limit of 20 MB"),
    ("nbformat3_broken", "says it is an nbformat 3 notebook"),
])
def test_over_the_limits_scores_zero_with_the_reason(batch, name, says):
    row = batch[name]
    assert (row["status"], float(row["score"])) == ("unreadable notebook", 0), row
    assert says in row["reason"], row


def test_string_metadata_is_named_and_graded(batch):
    row = batch["string_metadata"]
    assert row["status"] == "graded", row
    assert "its nbgrader metadata is a str, not a mapping" in row["reason"], row


def test_a_duplicated_answer_says_which_copy_was_graded(batch):
    row = batch["duplicated_answer"]
    assert row["status"] == "graded", row
    assert "the last of them" in row["reason"]
    assert "was graded as the answer" in row["reason"]
    task1 = nbf.points(_solution().cells[_index(_solution(), "softmax-stable-test")])
    assert float(row["score"]) == task1, row  # Task 1 from the second copy; the others blank


def test_cells_after_the_end_are_named_not_run(batch):
    assert "5 code cells after the notebook's last exercise cell were not run" in \
        batch["cells_after_the_end"]["reason"]


def test_a_grader_failure_keeps_the_exercises_maximum(tmp_path, monkeypatch):
    from attn_course.grading import grader

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(grader, "grade_notebook", broken)
    sources = {SOFTMAX.stem: _solution()}
    row = grader._safe_grade("alice", _write(tmp_path / "02_softmax.ipynb", _solution()),
                             sources, Limits(), "")
    assert (row.status, row.score, row.max_score) == ("grader error", 0, MAX), row
    assert "KeyError" in row.reason
