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



def _predicted_values(answer_source: str) -> set[str]:
    """The numbers the solution assigns to its ``predicted_*`` names, as text in a few
    roundings (what a goal that gave the answer away would contain)."""
    import ast
    import re

    region = re.search(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", answer_source, re.S)
    if region is None:
        return set()
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(region.group(1)))
    except SyntaxError:
        return set()
    texts = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id.startswith("predicted") for t in node.targets):
            try:
                value = eval(compile(ast.Expression(node.value), "<answer>", "eval"),  # noqa: S307
                             {"__builtins__": {}})
            except Exception:  # noqa: BLE001 - an answer that computes: no literal to find
                continue
            for v in (value if isinstance(value, tuple) else (value,)):
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    texts |= {f"{v:g}", f"{v:.2f}", f"{v:.1f}", str(v)}
                    texts |= {f"{round(v * q)}/{q}" for q in range(2, 65)
                              if v and abs(v * q - round(v * q)) < 1e-9}
    return texts


NUMBER = r"(?<![\w.])\d+(?:\.\d+)?(?:e-?\d+)?(?:/\d+)?"


def prediction_leaks(nb, name: str) -> list[str]:
    """Prediction tasks of ``nb`` whose goal states a value the solution predicts."""
    import re

    from attn_course.grading import notebooks as nbf

    leaks, answer, prompt = [], "", ""
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("## Task"):
            prompt = cell.source
        if nbf.is_answer(cell) and cell.cell_type == "code":
            answer = cell.source
        meta = cell.metadata.get("attn_course", {})
        if meta.get("kind") != "predict" or not nbf.is_test(cell):
            continue
        numbers, given = set(re.findall(NUMBER, meta["goal"])), set(re.findall(NUMBER, prompt))
        for value in sorted((_predicted_values(answer) & numbers) - given):
            leaks.append(f"{name} {nbf.grade_id(cell)}: the goal says {value}")
    return leaks


def test_no_prediction_goal_gives_the_answer_away():
    """A prediction task's goal is in the learner's notebook metadata and in
    docs/exercises.md: it says what is predicted, never the value (unless the task's own
    text gives that number, as D = 256 for the variance)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    leaks = [leak for path in sorted((root / "solutions").glob("*.ipynb"))
             for leak in prediction_leaks(nbformat.read(path, as_version=4), path.stem)]
    assert leaks == []


def test_a_goal_that_gives_the_answer_is_found():
    def nb(goal):
        return nbformat.v4.new_notebook(cells=[
            nbformat.v4.new_markdown_cell("## Task 1: predict (2 points)\n\nWith H = 8 heads."),
            nbformat.v4.new_code_cell("predicted = None\n### BEGIN SOLUTION\npredicted = 5 / 8\n"
                                      "### END SOLUTION", metadata=_cell(None, solution=True,
                                                                         grade_id="a")),
            nbformat.v4.new_code_cell("# Tests for Task 1: p\npass", metadata={
                **_cell("predict", grade=True, solution=False, points=2, grade_id="t"),
                "attn_course": {"kind": "predict", "goal": goal}})])

    assert prediction_leaks(nb("predicts that it keeps 5/8 of them"), "x") == ["x t: the goal says 5/8"]
    assert prediction_leaks(nb("predicts that it keeps 0.625 of them"), "x") == ["x t: the goal says 0.625"]
    assert prediction_leaks(nb("predicts the fraction it keeps, with 8 heads"), "x") == []


def task_numbering_problems(nb) -> list[str]:
    """What is wrong with a source notebook's task numbering: "## Task N: title (P points)"
    headings must run 1, 2, 3 ..., and each test cell's "# Tests for Task N: ..." title and
    points must match the heading above it."""
    import re

    from attn_course.grading import notebooks as nbf

    problems, numbers, points, current = [], [], {}, None
    for cell in nb.cells:
        heading = re.match(r"## Task (\d+): .+ \((\d+) points?[^)\n]*\)\s*(\n|$)", cell.source)
        if cell.cell_type == "markdown" and heading:
            current = int(heading.group(1))
            numbers.append(current)
            points[current] = int(heading.group(2))
        if nbf.is_test(cell) and cell.cell_type == "code":
            if not cell.source.startswith(f"# Tests for Task {current}: "):
                problems.append(f"under Task {current}, a test cell starts {cell.source[:30]!r}")
            elif nbf.points(cell) != points[current]:
                problems.append(f"Task {current}'s test gives {nbf.points(cell):g} points, "
                                f"its heading {points[current]}")
    if numbers != list(range(1, len(numbers) + 1)):
        problems.append(f"the task headings run {numbers}")
    return problems


def test_every_exercise_numbers_its_tasks_in_order():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = {path.stem: task_numbering_problems(nbformat.read(path, as_version=4))
             for path in sorted((root / "solutions").glob("*.ipynb"))}
    assert {name: p for name, p in found.items() if p} == {}


def test_a_misnumbered_task_is_found():
    test_meta = {"nbgrader": {"grade": True, "solution": False, "locked": True, "points": 2,
                              "grade_id": "t", "schema_version": 3}}
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("## Task 1: a (2 points)\n\ntext"),
        nbformat.v4.new_code_cell("# Tests for Task 1: a\npass", metadata=test_meta),
        nbformat.v4.new_markdown_cell("## Task 3: b (3 points)\n\ntext"),
        nbformat.v4.new_code_cell("# Tests for Task 2: b\npass", metadata=test_meta)])
    assert task_numbering_problems(nb) == [
        "under Task 3, a test cell starts '# Tests for Task 2: b\\npass'",
        "the task headings run [1, 3]"]
