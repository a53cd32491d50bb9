"""The nbgrader route as docs/instructors.md writes it: nbgrader's own commands in an
nbgrader course directory with the course's environment activated, feedback that keeps
the hidden tests out with the configuration the guide gives, ``attn-course grade
--source source`` on that course's folder; and the Makefile's learner-facing targets."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from attn_course.grading import notebooks as nbf
from attn_course.grading.reports import read_gradebook

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "instructors.md"
VENV_BIN = Path(sys.executable).parent
SOFTMAX = "02_softmax"
HIDDEN_CODE = ("BEGIN HIDDEN TESTS", "998.0", "x3 = ")  # text of 02_softmax's hidden tests

pytestmark = pytest.mark.skipif(
    not (VENV_BIN / "activate").is_file() or not (VENV_BIN / "nbgrader").is_file(),
    reason="needs the course's virtual environment with nbgrader (make setup)")


def _guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def _config_from_guide() -> str:
    """The guide's nbgrader_config.py block, as an instructor would copy it."""
    blocks = re.findall(r"```python\n(.*?)```", _guide(), re.DOTALL)
    found = [b for b in blocks if "c.GenerateFeedback.preprocessors" in b]
    assert len(found) == 1, f"expected one nbgrader_config.py block in {GUIDE}, got {len(found)}"
    return found[0]


def _nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    """``nbgrader ARGS`` the way the guide says: the course's environment activated in a
    shell whose PATH has nothing of it yet (nbgrader runs ``alembic`` from PATH)."""
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    env.pop("VIRTUAL_ENV", None)
    script = f'source "{VENV_BIN}/activate" && nbgrader {" ".join(args)}'
    return subprocess.run(["/bin/bash", "-c", script], cwd=course, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """An nbgrader course directory: generate_assignment, a learner's naive answer
    (passes the visible tests, fails hidden ones), autograde, generate_feedback."""
    course = tmp_path_factory.mktemp("course")
    (course / "source" / SOFTMAX).mkdir(parents=True)
    shutil.copy(ROOT / "solutions" / f"{SOFTMAX}.ipynb", course / "source" / SOFTMAX)
    (course / "nbgrader_config.py").write_text(_config_from_guide())
    gen = _nbgrader(course, "generate_assignment", SOFTMAX)
    assert gen.returncode == 0, gen.stderr[-3000:]
    nb = nbformat.read(course / "release" / SOFTMAX / f"{SOFTMAX}.ipynb", as_version=4)
    solution = nbf.read_notebook(ROOT / "solutions" / f"{SOFTMAX}.ipynb")
    answers = {nbf.grade_id(c): c.source for c in solution.cells if nbf.is_answer(c)}
    for c in nb.cells:
        if nbf.is_answer(c):
            c.source = answers[nbf.grade_id(c)]
    answer = next(c for c in nb.cells if nbf.grade_id(c) == "softmax-stable-answer")
    answer.source = ("def stable_softmax(x, axis=-1):\n    e = np.exp(x)\n"
                     "    return e / np.sum(e, axis=axis, keepdims=True)")
    (course / "submitted" / "alice" / SOFTMAX).mkdir(parents=True)
    nbformat.write(nb, str(course / "submitted" / "alice" / SOFTMAX / f"{SOFTMAX}.ipynb"))
    auto = _nbgrader(course, "autograde", SOFTMAX)
    assert auto.returncode == 0, auto.stderr[-3000:]
    feedback = _nbgrader(course, "generate_feedback", SOFTMAX)
    assert feedback.returncode == 0, feedback.stderr[-3000:]
    return course


def test_the_guide_gives_the_commands_this_test_runs():
    guide = _guide()
    for command in ("source .venv/bin/activate", f"nbgrader generate_assignment {SOFTMAX}",
                    f"nbgrader autograde {SOFTMAX}", f"nbgrader generate_feedback {SOFTMAX}",
                    "attn-course grade submitted/*/02_softmax --source source"):
        assert command in guide, command
    assert "ClearHiddenTests" in _config_from_guide()


def test_feedback_keeps_the_hidden_tests_out(course):
    autograded = (course / "autograded" / "alice" / SOFTMAX / f"{SOFTMAX}.ipynb").read_text()
    for text in HIDDEN_CODE:  # nbgrader put the hidden tests back to grade: they were there
        assert text in autograded, text
    html = (course / "feedback" / "alice" / SOFTMAX / f"{SOFTMAX}.html").read_text()
    for text in HIDDEN_CODE:
        assert text not in html, text
    assert "FAIL logits near +1000 and -1000" in html  # the hidden test's result and hint stay
    assert "subtract each row" in html


def test_grade_accepts_an_nbgrader_source_folder(course, tmp_path):
    out = tmp_path / "graded"
    proc = subprocess.run(
        [str(VENV_BIN / "attn-course"), "grade", str(course / "submitted" / "alice" / SOFTMAX),
         "--source", str(course / "source"), "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (row,) = read_gradebook(out / "gradebook.csv")
    assert (row["notebook"], row["status"]) == (SOFTMAX, "graded"), row
    source = nbf.read_notebook(ROOT / "solutions" / f"{SOFTMAX}.ipynb")
    assert 0 < float(row["score"]) < float(row["max"]) == nbf.max_points(source), row


def test_source_notebooks_looks_one_folder_down(tmp_path):
    for name in ("02_softmax", "03_attention"):
        (tmp_path / "source" / name).mkdir(parents=True)
        (tmp_path / "source" / name / f"{name}.ipynb").write_text("{}")
    (tmp_path / "source" / "02_softmax" / ".ipynb_checkpoints").mkdir()
    found = nbf.source_notebooks(tmp_path / "source")
    assert found == {n: tmp_path / "source" / n / f"{n}.ipynb"
                     for n in ("02_softmax", "03_attention")}
    (tmp_path / "source" / "03_attention" / "02_softmax.ipynb").write_text("{}")
    with pytest.raises(ValueError, match=r"two notebooks named 02_softmax.ipynb"):
        nbf.source_notebooks(tmp_path / "source")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"contains no .ipynb file.*folder per assignment"):
        nbf.source_notebooks(tmp_path / "empty")


# --- the Makefile's learner-facing targets ---------------------------------------------------

def test_make_check_without_nb_prints_its_usage_before_installing(tmp_path):
    """In a folder where setup would have to install (no .venv), with a Python that
    fails: the usage comes first and nothing is attempted."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    for name in ("pyproject.toml", "constraints.txt"):
        (tmp_path / name).write_text("")
    proc = subprocess.run(["make", "--no-print-directory", "check", "PYTHON=/bin/false"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "usage: make check NB=exercises/02_softmax.ipynb", proc.stdout
    assert not (tmp_path / ".venv").exists()


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="make learner-copy exports the git checkout")
def test_learner_copy_leaves_out_the_instructors_guide(tmp_path):
    dest = tmp_path / "learners"
    proc = subprocess.run(["make", "--no-print-directory", "learner-copy", f"DEST={dest}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (dest / "exercises" / f"{SOFTMAX}.ipynb").is_file()
    assert (dest / "Makefile").is_file()
    for gone in ("solutions", "tests", ".ci", "docs/instructors.md"):
        assert not (dest / gone).exists(), gone
