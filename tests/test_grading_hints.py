"""Hints in stages: a failing check shows hint 1; later hints come on request, in the
notebook (show_hint) and from the shell (attn-course check --hint N)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat

from attn_course.grading import checks
from attn_course.grading import notebooks as nbf
from tests.grading_fixture import SOFTMAX_SOURCE

ROOT = Path(__file__).resolve().parents[1]


def test_show_hint_in_the_notebook(capsys, monkeypatch):
    monkeypatch.setattr(checks, "HINTS", {})
    checks.show_hint(1)
    assert "run its test cell first" in capsys.readouterr().out
    checks.hints("Task 1", "look at the axis", "keepdims=True keeps it broadcastable")
    checks.show_hint(1)
    assert capsys.readouterr().out.strip() == "hint 2 for Task 1: look at the axis"
    checks.show_hint("Task 1", 3)
    assert "keepdims=True" in capsys.readouterr().out
    checks.show_hint(1, 4)
    assert "hints 1 to 3" in capsys.readouterr().out


def test_check_shows_later_hints_of_failed_tests_on_request(tmp_path):
    nb = nbf.read_notebook(SOFTMAX_SOURCE)
    for c in nb.cells:
        if nbf.grade_id(c) == "softmax-stable-answer":
            c.source = "def stable_softmax(x, axis=-1):\n    return x"
        if nbf.grade_id(c) == "softmax-stable-test":
            c.source = c.source.replace(
                "# Tests for Task 1: stable_softmax\n",
                "# Tests for Task 1: stable_softmax\n"
                "from attn_course.grading.checks import hints\n"
                "hints('Task 1', 'STAGE-TWO text', 'STAGE-THREE text')\n", 1)
    path = tmp_path / "02_softmax.ipynb"
    nbformat.write(nb, str(path))

    def check(*extra):
        return subprocess.run([sys.executable, "-m", "attn_course.cli", "check", str(path),
                               *extra], capture_output=True, text=True, timeout=300).stdout

    plain = check()
    assert "FAIL Task 1" in plain
    assert "STAGE-TWO" not in plain
    more = check("--hint", "3")
    assert "hint 2: STAGE-TWO text" in more
    assert "hint 3: STAGE-THREE text" in more
    assert "PASS Task 2" in more
    assert more.count("hint 2:") == 1  # only the failed test


def _with_written_task(path: Path) -> Path:
    """solutions/02_softmax.ipynb with a written answer (nbgrader's manually graded cell)."""
    nb = nbf.read_notebook(SOFTMAX_SOURCE)
    meta = {"grade": True, "solution": True, "locked": False, "points": 2, "schema_version": 3,
            "grade_id": "softmax-why"}
    nb.cells += [
        nbformat.v4.new_markdown_cell("## Task 4: why subtract the maximum? (2 points)",
                                      metadata={"nbgrader": {"grade": False, "solution": False,
                                                             "locked": True, "schema_version": 3,
                                                             "grade_id": "softmax-why-task"}}),
        nbformat.v4.new_markdown_cell("exp(x - m) <= 1, so nothing overflows; the ratio is the same.",
                                      metadata={"nbgrader": meta}),
    ]
    nbformat.write(nb, str(path))
    return path


def test_written_answers_are_reported_for_grading_by_hand(tmp_path):
    import json

    from attn_course.grading.release import release_notebook

    src_dir = tmp_path / "source"
    src_dir.mkdir()
    source = _with_written_task(src_dir / "02_softmax.ipynb")
    learner = release_notebook(nbf.read_notebook(source))
    written = next(c for c in learner.cells if nbf.grade_id(c) == "softmax-why")
    assert "exp(x - m)" not in written.source  # the model answer is not handed out
    written.source = "MY-OWN-WORDS: the largest term becomes exp(0) = 1"
    (tmp_path / "alice").mkdir()
    nbformat.write(learner, str(tmp_path / "alice" / "02_softmax.ipynb"))
    out = tmp_path / "graded"
    proc = subprocess.run([sys.executable, "-m", "attn_course.cli", "grade",
                           str(tmp_path / "alice"), "--source", str(src_dir), "--out", str(out),
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "alice" / "results.json").read_text())
    entry = next(t for t in results["tests"] if "graded by hand" in t["name"])
    assert entry["name"] == "02_softmax: Task 4: why subtract the maximum? (graded by hand)"
    assert (entry["score"], entry["max_score"]) == (0, 0)
    assert "status" not in entry
    assert "MY-OWN-WORDS" in entry["output"]
    assert "2 points" in entry["output"]
    row = (out / "gradebook.csv").read_text()
    assert "2 more points of written answers are graded by hand" in row
    selfcheck = subprocess.run([sys.executable, "-m", "attn_course.cli", "check",
                                str(tmp_path / "alice" / "02_softmax.ipynb")],
                               capture_output=True, text=True, timeout=300).stdout
    assert "WRITTEN Task 4: why subtract the maximum? (graded by hand): 2 points" in selfcheck
