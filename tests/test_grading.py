"""Release, the nbgrader format, the checks, assembling and scoring (no kernel needed),
and nbgrader's own generate_assignment on the sources."""

from __future__ import annotations

import copy
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from attn_course import colab
from attn_course.grading import checks, integrity
from attn_course.grading import notebooks as nbf
from attn_course.grading.assemble import assemble
from attn_course.grading.release import TAG, release, release_notebook
from attn_course.grading.sandbox import Limits, Outcome
from attn_course.grading.scoring import score_run

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS, EXERCISES = ROOT / "solutions", ROOT / "exercises"
SOURCES = sorted(SOLUTIONS.glob("*.ipynb"))
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def sources():
    return {p.stem: nbf.read_notebook(p) for p in SOURCES}


# --- the sources and the release -------------------------------------------------------

def test_one_exercise_per_lecture_with_at_least_three_graded_tasks(sources):
    assert [p.stem[:2] for p in SOURCES][:5] == ["01", "02", "03", "04", "05"]
    for name, nb in sources.items():
        tests = [c for c in nb.cells if nbf.is_test(c)]
        assert len(tests) >= 3, name
        for c in tests:
            kind = (c.metadata.get("attn_course") or {}).get("kind")
            if kind != "predict":  # a prediction is one number: its check may all be visible
                assert nbf.BEGIN_HIDDEN in c.source, f"{name}: {nbf.grade_id(c)} has no hidden test"
            assert nbf.meta(c)["locked"]
            assert nbf.points(c) > 0
        for c in nb.cells:
            assert nbf.meta(c).get("schema_version") == 3, (name, c.source[:40])


def test_solutions_have_outputs_and_execution_counts(sources):
    for name, nb in sources.items():
        for c in nb.cells:
            if c.cell_type == "code" and colab.role(c) != colab.SETUP_ROLE:  # runs in Colab only
                assert c.execution_count is not None, name
            if nbf.is_test(c):
                text = "".join(o.get("text", "") for o in c.outputs)
                assert "PASS" in text, (name, nbf.grade_id(c))
                assert "FAIL" not in text, (name, nbf.grade_id(c))


def test_nbgrader_accepts_the_metadata(sources):
    from nbgrader.preprocessors import CheckCellMetadata

    for nb in sources.values():
        CheckCellMetadata().preprocess(copy.deepcopy(nb), {})


def _region(text: str, begin: str, end: str) -> set[str]:
    """The non-trivial lines between ``begin`` and ``end`` markers."""
    inside, lines = False, set()
    for line in text.splitlines():
        if begin in line or end in line:
            inside = begin in line
        elif inside and len(line.strip()) > 12:
            lines.add(line)
    return lines


def test_exercises_are_up_to_date_and_hold_no_solution():
    assert release(SOLUTIONS, EXERCISES, check=True, out=io.StringIO()) == []
    for src in SOURCES:
        text = (EXERCISES / src.name).read_text()
        assert "BEGIN SOLUTION" not in text
        assert "HIDDEN TESTS" not in text
        ex = nbformat.reads(text, as_version=4)
        released = {nbf.grade_id(c): c.source.splitlines() for c in ex.cells}
        for cell in nbf.read_notebook(src).cells:
            kept = set(released[nbf.grade_id(cell)])
            if nbf.is_answer(cell):  # no line of a solution region survives in its cell
                outside = set(nbf.clear_solution(cell.source).splitlines())
                leaked = _region(cell.source, nbf.BEGIN_SOLUTION, nbf.END_SOLUTION) - outside
                assert not leaked & kept, (src.name, leaked & kept)
            if nbf.is_test(cell):  # nor a hidden test line
                visible = set(nbf.learner_text(cell).splitlines())
                leaked = _region(cell.source, nbf.BEGIN_HIDDEN, nbf.END_HIDDEN) - visible
                assert not leaked & kept, (src.name, leaked & kept)
        for c in ex.cells:
            if c.cell_type == "code":
                assert c.outputs == []
                assert c.execution_count is None
                if nbf.is_answer(c) or nbf.is_test(c):
                    assert TAG in c.metadata["tags"]
                    assert nbf.is_answer(c) or c.metadata["editable"] is False


def test_release_check_fails_when_stale(tmp_path, capsys):
    src, out = tmp_path / "solutions", tmp_path / "exercises"
    shutil.copytree(SOLUTIONS, src)
    release(src, out, out=io.StringIO())
    assert release(src, out, check=True, out=io.StringIO()) == []
    nb = nbformat.read(src / "02_softmax.ipynb", as_version=4)
    nb.cells[0].source += "\nOne more sentence."
    nbformat.write(nb, str(src / "02_softmax.ipynb"))
    (out / "99_orphan.ipynb").write_text("{}")
    problems = release(src, out, check=True, out=io.StringIO())
    assert any("02_softmax.ipynb is out of date" in p for p in problems)
    assert any("99_orphan.ipynb has no source" in p for p in problems)
    rc = subprocess.run([VENV_BIN / "attn-course", "release", "--check", "--source", src,
                         "--out", out], capture_output=True, text=True).returncode
    assert rc == 1


def test_release_names_a_missing_source_directory(tmp_path):
    proc = subprocess.run([VENV_BIN / "attn-course", "release", "--source", tmp_path / "nope"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "nope" in proc.stderr
    assert "does not exist" in proc.stderr


def test_cell_stripping_agrees_with_nbgrader(sources):
    for nb in sources.values():
        released = release_notebook(nb)
        for ours, theirs in zip(nb.cells, released.cells, strict=False):
            assert nbf.learner_text(ours) == theirs.source


@pytest.mark.skipif(shutil.which("alembic", path=str(VENV_BIN)) is None,
                    reason="nbgrader's database tool alembic is not installed")
def test_nbgrader_generate_assignment_matches_release(tmp_path):
    """An instructor running nbgrader itself on solutions/ gets exercises/."""
    (tmp_path / "source" / "ps1").mkdir(parents=True)
    for p in SOURCES:
        shutil.copy(p, tmp_path / "source" / "ps1" / p.name)
    (tmp_path / "nbgrader_config.py").write_text(
        'c = get_config()\nc.CourseDirectory.course_id = "attn-course"\n')
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([VENV_BIN / "nbgrader", "generate_assignment", "ps1", "--force"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for p in SOURCES:
        theirs = nbformat.read(tmp_path / "release" / "ps1" / p.name, as_version=4)
        ours = nbformat.read(EXERCISES / p.name, as_version=4)
        assert [c.source for c in theirs.cells] == [c.source for c in ours.cells]


# --- the checks ---------------------------------------------------------------------------

def test_check_close_passes_and_fails_readably(capsys):
    checks.check_close("rows", np.ones(3), np.ones(3))
    assert capsys.readouterr().out == "PASS rows\n"
    with pytest.raises(checks.CheckFailed) as err:
        checks.check_close("softmax", np.array([np.nan, 1.0]), np.array([0.5, 0.5]),
                           hint="subtract the row maximum")
    text = str(err.value)
    assert text.startswith("FAIL softmax: your output has NaN")
    assert "hint: subtract" in text
    assert err.value._render_traceback_() == text.splitlines()
    assert isinstance(err.value, AssertionError)  # nbgrader counts it as a failed test
    with pytest.raises(checks.CheckFailed, match=r"shape \(2,\), expected \(3,\)"):
        checks.check_close("x", np.ones(2), np.ones(3))
    with pytest.raises(checks.CheckFailed, match="first at index"):
        checks.check_close("x", np.array([1.0, 2.0]), np.array([1.0, 2.5]))
    with pytest.raises(checks.CheckFailed, match="forget to return"):
        checks.check_close("x", None, np.ones(3))


def test_check_equal_and_dtype():
    checks.check_equal("mask", np.array([True, False]), [1, 0], dtype="bool")
    with pytest.raises(checks.CheckFailed, match="dtype int64, expected bool"):
        checks.check_equal("mask", np.array([1, 0]), [1, 0], dtype="bool")


def test_call_turns_errors_into_one_line():
    def stub(x):
        raise NotImplementedError()

    def buggy(x):
        return x.nope

    with pytest.raises(checks.CheckFailed, match="not written yet"):
        checks.call(stub, 1)
    with pytest.raises(checks.CheckFailed, match=r"raised AttributeError: .*line \d+"):
        checks.call(buggy, 1)


def test_check_raises_and_sums():
    def reject(t):
        if t <= 0:
            raise ValueError(t)

    checks.check_raises("rejects 0", reject, 0)
    with pytest.raises(checks.CheckFailed, match="returned normally"):
        checks.check_raises("rejects 1", reject, 1)
    checks.check_sums_to_one("p", np.full((2, 4), 0.25))
    with pytest.raises(checks.CheckFailed, match="off from 1"):
        checks.check_sums_to_one("p", np.full((2, 4), 0.3))


def test_check_no_shortcut():
    import attn_course.softmax as course_softmax

    def mine(x):
        return np.exp(x) / np.exp(x).sum()

    namespace = {"course_softmax": course_softmax}  # a notebook's globals
    exec("def lazy(x):\n    return course_softmax.softmax(x)", namespace)
    lazy = namespace["lazy"]

    checks.check_no_shortcut("mine", mine, forbidden={"softmax"})
    with pytest.raises(checks.CheckFailed, match="uses softmax"):
        checks.check_no_shortcut("lazy", lazy, forbidden={"softmax"})
    with pytest.raises(checks.CheckFailed, match="from attn_course"):
        checks.check_no_shortcut("lazy", lazy)


def notebook_functions(source: str, **globals_) -> dict:
    """The functions that ``source`` defines, as if run in one notebook's globals."""
    namespace = {"np": np, "torch": torch, **globals_}
    exec(source, namespace)
    return namespace


@pytest.mark.parametrize("body", [
    "return torch.softmax(x, -1)",
    "return torch.nn.functional.softmax(x, dim=-1)",
    "return x.softmax(-1)",
    "from torch.nn.functional import softmax as s\n    return s(x, -1)",
    "import scipy.special\n    return scipy.special.softmax(x)",
])
def test_check_no_shortcut_sees_library_softmax_however_reached(body):
    ns = notebook_functions(f"def attend(x):\n    {body}\n")
    with pytest.raises(checks.CheckFailed, match=r"(uses|imports) .*softmax|imports scipy"):
        checks.check_no_shortcut("attend", ns["attend"], forbidden={"softmax"})


def test_check_no_shortcut_allows_the_learners_own_softmax():
    ns = notebook_functions(
        "def softmax(x):\n    e = np.exp(x - x.max(-1, keepdims=True))\n"
        "    return e / e.sum(-1, keepdims=True)\n"
        "def attend(q, k):\n    return softmax(q @ k.T)\n")
    checks.check_no_shortcut("attend", ns["attend"], forbidden={"softmax"})
    # ... but a helper of the learner's that itself calls the library is caught
    ns = notebook_functions("def softmax(x):\n    return torch.softmax(x, -1)\n"
                            "def attend(q, k):\n    return softmax(q @ k.T)\n")
    with pytest.raises(checks.CheckFailed, match=r"uses softmax \(in your softmax\)"):
        checks.check_no_shortcut("attend", ns["attend"], forbidden={"softmax"})
    # a softmax imported from a library under its own name is not the learner's
    import scipy.special

    ns = notebook_functions("def attend(q, k):\n    return softmax(q @ k.T)\n",
                            softmax=scipy.special.softmax)
    with pytest.raises(checks.CheckFailed, match="uses softmax"):
        checks.check_no_shortcut("attend", ns["attend"], forbidden={"softmax"})


def test_check_no_shortcut_follows_helpers_to_the_course_package():
    import attn_course.attention as course_attention

    ns = notebook_functions("def helper(q, k, v):\n    return sdpa(q, k, v)\n"
                            "def attend(q, k, v):\n    return helper(q, k, v)\n",
                            sdpa=course_attention.sdpa_numpy)
    with pytest.raises(checks.CheckFailed, match=r"calls sdpa from attn_course.* \(in your helper\)"):
        checks.check_no_shortcut("attend", ns["attend"])
    # recursion terminates on mutually recursive helpers
    ns = notebook_functions("def a(n):\n    return b(n - 1) if n else 0\n"
                            "def b(n):\n    return a(n - 1) if n else 0\n")
    checks.check_no_shortcut("a", ns["a"], forbidden={"softmax"})


@pytest.mark.parametrize("answer", [np.array([1 + 2j, 3 + 0j]),
                                    torch.tensor([1 + 2j, 3 + 0j])])
def test_complex_answers_fail_with_a_message(answer):
    with pytest.raises(checks.CheckFailed, match="complex"):
        checks.check_close("kernel", answer, np.array([1.0, 3.0]))
    with pytest.raises(checks.CheckFailed, match=r"real part"):
        checks.check_equal("kernel", answer, np.array([1.0, 3.0]))


def test_integrity_sees_a_monkeypatch():
    original = np.allclose
    assert integrity.verify() == []
    try:
        np.allclose = lambda *a, **k: True
        assert integrity.verify() == ["numpy.allclose"]
        with pytest.raises(checks.CheckFailed, match="replaced numpy.allclose"):
            checks.check_close("x", np.ones(2), np.zeros(2))
    finally:
        np.allclose = original
    assert integrity.verify() == []


def test_integrity_new_class_attributes_count_only_when_they_change_behaviour():
    import torch

    assert integrity.verify() == []
    try:
        torch.nn.Module.brand_new_helper = lambda self: None  # as transformers does on import
        assert integrity.verify() == []
        torch.nn.Linear.parameters = lambda self, recurse=True: iter(())  # shadows Module's
        assert integrity.verify() == ["torch.nn.modules.linear.Linear.parameters"]
    finally:
        del torch.nn.Module.brand_new_helper
        if "parameters" in vars(torch.nn.Linear):
            del torch.nn.Linear.parameters
    assert integrity.verify() == []


def test_integrity_accepts_torchs_own_lazy_rewrapping_only():
    """Importing torch._dynamo rebinds torch.manual_seed: not tampering. A learner's is."""
    code = """
import sys
from attn_course.grading import integrity
integrity.ensure_snapshot()
assert "torch._dynamo" not in sys.modules
import torch, torch._dynamo
assert integrity.verify() == [], integrity.verify()
torch.manual_seed = lambda seed: None
assert integrity.verify() == ["torch.manual_seed"], integrity.verify()
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


# --- assembling and scoring -----------------------------------------------------------------

def _roles(a):
    return [(c.role, c.grade_id) for c in a.cells]


def test_assemble_restores_tests_and_keeps_added_cells(sources):
    src = sources["02_softmax"]
    sub = nbf.read_notebook(EXERCISES / "02_softmax.ipynb")
    answer = next(i for i, c in enumerate(sub.cells) if nbf.grade_id(c) == "softmax-stable-answer")
    sub.cells.insert(answer + 1, nbformat.v4.new_code_cell("helper = 1"))
    sub.cells = [c for c in sub.cells if nbf.grade_id(c) != "softmax-lse-test"]
    next(c for c in sub.cells if nbf.grade_id(c) == "softmax-temperature-test").source = "pass"
    a = assemble(sub, src)
    roles = _roles(a)
    assert {role for role, _ in roles} == {"answer", "test", "locked", "added"}  # nothing added by the grader
    assert roles.index(("added", None)) == roles.index(("answer", "softmax-stable-answer")) + 1
    tests = [c for c, r in zip(a.nb.cells, a.cells, strict=False) if r.role == "test"]
    assert len(tests) == sum(nbf.is_test(c) for c in src.cells)  # the deleted one restored
    assert all("BEGIN HIDDEN TESTS" in c.source for c in tests)
    assert any("softmax-lse-test was deleted" in n for n in a.notes)
    assert any("softmax-temperature-test was edited" in n for n in a.notes)
    visible = assemble(sub, release_notebook(src), visible_only=True)
    assert not any("HIDDEN" in c.source for c in visible.nb.cells)


def test_assemble_runs_a_missing_answer_as_the_stub(sources):
    src = sources["02_softmax"]
    sub = copy.deepcopy(src)
    sub.cells = [c for c in sub.cells if nbf.grade_id(c) != "softmax-lse-answer"]
    a = assemble(sub, src)
    i = _roles(a).index(("answer", "softmax-lse-answer"))
    assert "raise NotImplementedError()" in a.nb.cells[i].source
    assert any("softmax-lse-answer is missing" in n for n in a.notes)


def _outcome(a):
    cells = {i: {"outcome": "ok", "stdout": "PASS x\n"} for i in range(len(a.cells))}
    return Outcome(cells=cells, finished=True)


def test_scoring_statuses(sources):
    src = sources["02_softmax"]
    a = assemble(copy.deepcopy(src), src)
    limits = Limits()
    r = score_run("s", "02_softmax", src, a, _outcome(a), limits)
    full = nbf.max_points(src)
    assert (r.status, r.score, r.max_score) == ("graded", full, full)
    first_test = _roles(a).index(("test", "softmax-stable-test"))
    killed = Outcome(cells={i: v for i, v in _outcome(a).cells.items() if i < first_test},
                     killed=True)
    r = score_run("s", "02_softmax", src, a, killed, limits)
    assert r.status == "timed out"
    assert r.score == 0
    assert "--timeout" in r.reason
    died = _outcome(a)
    died.cells = {i: v for i, v in died.cells.items() if i <= first_test}
    died.cells[first_test] = {"outcome": "died"}
    r = score_run("s", "02_softmax", src, a, died, limits)
    assert r.status == "kernel died"
    assert "kernel died" in r.reason
    failing = _outcome(a)
    failing.cells[first_test] = {"outcome": "error", "ename": "CheckFailed",
                                 "evalue": "FAIL softmax: NaN\n  hint: subtract", "stdout": ""}
    r = score_run("s", "02_softmax", src, a, failing, limits)
    first_points = nbf.points(next(c for c in src.cells if nbf.grade_id(c) == "softmax-stable-test"))
    assert r.score == full - first_points
    assert r.tests[0].output.startswith("FAIL softmax")


def test_only_the_best_copy_of_a_notebook_counts():
    from attn_course.grading.grader import _keep_best
    from attn_course.grading.scoring import NotebookResult

    rows: list = []
    _keep_best(rows, NotebookResult("alice", "02_softmax", 0, 7, "graded", ""))
    _keep_best(rows, NotebookResult("alice", "02_softmax", 7, 7, "graded", ""))
    _keep_best(rows, NotebookResult("alice", "01_similarity", 2, 6, "graded", ""))
    assert [(r.notebook, r.score) for r in rows] == [("02_softmax", 7), ("01_similarity", 2)]
    assert "best one counts" in rows[0].reason


def test_discover_names_nbgrader_submissions_after_the_student(tmp_path):
    from attn_course.grading.grader import discover

    for student in ("alice", "bob"):
        folder = tmp_path / "submitted" / student / "02_softmax"
        folder.mkdir(parents=True)
        (folder / "02_softmax.ipynb").write_text("{}")
    (tmp_path / "carol").mkdir()
    (tmp_path / "carol" / "work.ipynb").write_text("{}")
    args = [tmp_path / "submitted" / "alice" / "02_softmax",
            tmp_path / "submitted" / "bob" / "02_softmax", tmp_path / "carol",
            tmp_path / "carol", tmp_path / "missing.ipynb"]
    found = discover(args)
    assert [name for name, _, _ in found] == [
        "alice-02_softmax", "bob-02_softmax", "carol", "carol-2", "missing"]
    assert [len(nbs) for _, nbs, _ in found] == [1, 1, 1, 1, 0]
    assert "does not exist" in found[-1][2]
    # distinct folder names stay as they are
    assert [n for n, _, _ in discover([tmp_path / "submitted" / "alice",
                                       tmp_path / "submitted" / "bob"])] == ["alice", "bob"]


def test_call_names_an_argument_changed_in_place():
    def subtract_max(x):
        x -= x.max()
        return np.exp(x)

    def honest(x):
        return np.exp(x - x.max())

    x = np.array([1.0, np.nan, 3.0])
    checks.call(honest, x)  # NaN inputs do not count as a change
    with pytest.raises(checks.CheckFailed, match=r"changed its argument `x` in place"):
        checks.call(subtract_max, x.copy())

    def scale_(q, k, scale=1.0):
        q.mul_(scale)
        return q @ k.T

    q, k = torch.randn(2, 3), torch.randn(2, 3)
    with pytest.raises(checks.CheckFailed, match=r"`q` in place"):
        checks.call(scale_, q, k, scale=0.5)
    with pytest.raises(checks.CheckFailed, match=r"`k` in place"):
        checks.call(lambda q, k: k.zero_(), q, k)
    q = torch.randn(2, 3)
    checks.call(scale_, q, k, scale=0.5, copy_args=False)  # opted out: mutation allowed


def test_call_shows_the_hint_when_the_answer_raises():
    def broken(dt, A):
        return dt * A

    with pytest.raises(checks.CheckFailed, match=r"(?s)raised RuntimeError.*hint: dt\[:, None\]"):
        checks.call(broken, torch.ones(4), torch.ones(4, 3), hint="dt[:, None] * A")


def test_check_no_shortcut_sees_an_alias():
    ns = notebook_functions("from torch import cumsum as running_total\n"
                            "def prefix(x):\n    return running_total(x, 0)\n")
    with pytest.raises(checks.CheckFailed, match=r"uses cumsum \(as running_total\)"):
        checks.check_no_shortcut("prefix", ns["prefix"], forbidden={"cumsum"})
    import functools

    ns = notebook_functions("def prefix(x):\n    return total(x)\n",
                            total=functools.partial(torch.cumsum, dim=0))
    with pytest.raises(checks.CheckFailed, match=r"uses cumsum \(as total\)"):
        checks.check_no_shortcut("prefix", ns["prefix"], forbidden={"cumsum"})


def test_check_type():
    checks.check_type("mask", np.zeros(2, bool), "numpy")
    checks.check_type("mask", torch.zeros(2, dtype=torch.bool), "torch")
    with pytest.raises(checks.CheckFailed, match=r"returned numpy.ndarray, expected a torch"):
        checks.check_type("mask", np.zeros(2, bool), "torch")
    with pytest.raises(checks.CheckFailed, match=r"returned torch.Tensor, expected a numpy"):
        checks.check_type("mask", torch.zeros(2), "numpy")
    with pytest.raises(ValueError, match="kind must be"):
        checks.check_type("mask", torch.zeros(2), "jax")


def test_python_loop_in_finds_loops_and_looping_calls():
    ns = notebook_functions(
        "def vectorised(x):\n    return x @ x.T\n"
        "def for_loop(x):\n    return np.array([r @ r for r in x])\n"
        "def while_loop(x):\n    i = 0\n    while i < 3:\n        i += 1\n    return x\n"
        "def via_helper(x):\n    return for_loop(x)\n"
        "def mapped(x):\n    return list(map(np.sum, x))\n"
        "def branchy(x):\n    if x.sum() > 0:\n        return x\n    return -x\n")
    assert checks.python_loop_in(ns["vectorised"]) == ""
    assert checks.python_loop_in(ns["branchy"]) == ""
    assert "in for_loop" in checks.python_loop_in(ns["for_loop"])
    assert "in while_loop" in checks.python_loop_in(ns["while_loop"])
    assert "in for_loop" in checks.python_loop_in(ns["via_helper"])  # followed into helpers
    assert checks.python_loop_in(ns["mapped"]) == ""
    assert checks.python_loop_in(ns["mapped"], calls=("map",)) == "map in mapped"


def test_replaced_swaps_a_global_for_the_block_only():
    ns = notebook_functions("def helper(x):\n    return x + 1\n"
                            "def later(x):\n    return helper(x) * 2\n")
    with checks.replaced(ns["later"], "helper", lambda x: x + 10):
        assert ns["later"](1) == 22
    assert ns["later"](1) == 4  # put back
    def fail_inside():
        with checks.replaced(ns["later"], "absent", 1):
            assert ns["absent"] == 1
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        fail_inside()
    assert "absent" not in ns  # a name that did not exist is removed again, even on errors
