"""docs/exercises.md is generated from the sources' metadata (`make release-check` keeps the
committed one up to date)."""

from __future__ import annotations

import nbformat

from attn_course.grading.release import exercise_table


def _cell(kind, **nbgrader):
    meta = {"nbgrader": {"schema_version": 3, "locked": True, **nbgrader}}
    if kind:
        meta["attn_course"] = {"kind": kind, "goal": f"goal of {nbgrader['grade_id']}"}
    return meta


def test_table_lists_kinds_points_and_goals():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("# Tests for Task 1: f\npass",
                                  metadata=_cell("predict", grade=True, solution=False,
                                                 points=2, grade_id="t1")),
        nbformat.v4.new_markdown_cell("## Task 2: why? (3 points)",
                                      metadata=_cell(None, grade=False, solution=False,
                                                     grade_id="t2-text")),
        nbformat.v4.new_markdown_cell("because", metadata=_cell(
            "explain", grade=True, solution=True, points=3, grade_id="t2")),
    ])
    text = exercise_table({"99_x": nb})
    assert "| 99_x | 0 | 1 | 0 | 0 | 1 | 2 | 3 |" in text
    assert "| [99_x](../exercises/99_x.ipynb) | Task 1: f | predict | 2 | goal of t1 |" in text
    assert "| Task 2: why? | explain | 3 (by hand) | goal of t2 |" in text

