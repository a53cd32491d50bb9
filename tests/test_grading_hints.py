"""Hints in stages: a failing check shows hint 1; later hints come on request, in the
notebook (show_hint) and from the shell (attn-course check --hint N)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat

from attn_course.grading import checks
from attn_course.grading import notebooks as nbf

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
    nb = nbf.read_notebook(ROOT / "solutions" / "02_softmax.ipynb")
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
