"""Demo cells: read-only cells that only show the learner a measurement are not run when
grading (``{"attn_course": {"demo": true}}``, see ``notebooks.is_demo``).

The grader may skip them only if nothing after them needs them: a name a demo cell binds
must not be read by a later cell that the grader runs, unless a cell the grader runs binds
it first. That is checked here statically, on every source notebook, with Python's own
parser (names read through ``globals()`` are the demo's own business); the full-marks
test of every solution (tests/test_grading_hostile.py) checks it by running them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager

from attn_course.grading import assemble
from attn_course.grading import notebooks as nbf

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


def bound_and_read(source: str) -> tuple[set[str], set[str]]:
    """(names the cell binds at any depth, names it reads before binding them).

    Source order stands in for execution order: a name counts as read from outside when
    its first load comes before its first binding in the cell (comprehension variables and
    function parameters count as bound where their comprehension or function starts)."""
    tree = ast.parse(TransformerManager().transform_cell(source))
    first_store: dict[str, tuple[int, int]] = {}
    first_load: dict[str, tuple[int, int]] = {}

    def store(name: str, node: ast.AST) -> None:
        pos = (node.lineno, node.col_offset)
        first_store[name] = min(first_store.get(name, pos), pos)

    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                pos = (node.lineno, node.col_offset)
                first_load[node.id] = min(first_load.get(node.id, pos), pos)
            else:
                store(node.id, node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            store(node.name, node)
            if not isinstance(node, ast.ClassDef):
                for a in ast.walk(node.args):
                    if isinstance(a, ast.arg):
                        store(a.arg, node)
        elif isinstance(node, ast.Lambda):
            for a in ast.walk(node.args):
                if isinstance(a, ast.arg):
                    store(a.arg, node)
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            for gen in node.generators:
                for t in ast.walk(gen.target):
                    if isinstance(t, ast.Name):
                        store(t.id, node)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                store((a.asname or a.name).split(".")[0], node)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            store(node.name, node)
    read = {n for n, pos in first_load.items() if n not in first_store or pos < first_store[n]}
    return set(first_store), read


def demo_dependencies(nb) -> list[str]:
    """For each demo cell, the names it binds that a later graded cell reads before any
    graded cell binds them: ["cell 12 binds x, read by cell 15", ...]."""
    problems = []
    code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    for k, (i, cell) in enumerate(code):
        if not nbf.is_demo(cell):
            continue
        only_here, _ = bound_and_read(cell.source)
        bound_by_graded: set[str] = set()
        for _, later in code[:k]:
            if not nbf.is_demo(later):
                bound_by_graded |= bound_and_read(later.source)[0]
        for j, later in code[k + 1:]:
            if nbf.is_demo(later):
                continue
            b, r = bound_and_read(later.source)
            missing = (only_here - bound_by_graded) & r
            if missing:
                problems.append(f"cell {i + 1} binds {', '.join(sorted(missing))}, "
                                f"read by cell {j + 1}")
            bound_by_graded |= b
    return problems


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_no_graded_cell_needs_a_demo_cell(path):
    nb = nbformat.read(path, as_version=4)
    assert demo_dependencies(nb) == []


def test_the_checker_sees_a_dependency():
    cells = [nbformat.v4.new_code_cell("x = 1\nprint(x)", metadata={"attn_course": {"demo": True}}),
             nbformat.v4.new_code_cell("def f(a):\n    return a + x"),
             nbformat.v4.new_code_cell("y = 2", metadata={"attn_course": {"demo": True}}),
             nbformat.v4.new_code_cell("y = 3\nprint(y)")]
    assert demo_dependencies(nbformat.v4.new_notebook(cells=cells)) == ["cell 1 binds x, read by cell 2"]


def test_demo_cells_are_left_out_of_the_graded_notebook():
    def cell(text, **md):
        c = nbformat.v4.new_code_cell(text)
        c.metadata.update(md)
        return c

    answer = {"nbgrader": {"grade_id": "a", "solution": True, "grade": False, "locked": False}}
    test = {"nbgrader": {"grade_id": "t", "solution": False, "grade": True, "locked": True,
                         "points": 1}}
    source = nbformat.v4.new_notebook(cells=[
        cell("import math", nbgrader={"grade_id": "setup", "locked": True}),
        cell("### BEGIN SOLUTION\nv = 1\n### END SOLUTION", **answer),
        cell("print('measured', v)", nbgrader={"grade_id": "show", "locked": True},
             attn_course={"demo": True}),
        cell("assert v == 1", **test),
        # a demo flag on an answer or test cell is ignored: they always run
        cell("assert v", **{**test, "nbgrader": {**test["nbgrader"], "grade_id": "t2"}},
             attn_course={"demo": True}),
    ])
    got = assemble.assemble(source, source)
    texts = [c.source for c in got.nb.cells]
    assert "print('measured', v)" not in texts
    assert {"import math", "assert v == 1", "assert v"} <= set(texts)
    assert [c.role for c in got.cells] == ["locked", "answer", "test", "test"]


def test_the_course_has_demo_cells_where_grading_was_slow():
    """The measurement cells of the exercises that took longest to grade are demos."""
    for stem in ("07_transformer", "08_cost", "11_state_space_models", "13_recall"):
        nb = nbformat.read(ROOT / "solutions" / f"{stem}.ipynb", as_version=4)
        assert any(nbf.is_demo(c) for c in nb.cells), stem
