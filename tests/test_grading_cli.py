"""The learner's self-check and Gradescope's bundle, end to end through the command line."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.grading_fixture import SOFTMAX_BLANK, SOFTMAX_SOURCE

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "attn-course"


def _run(*args, env=None, timeout=180):
    return subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_self_check_passes_a_solution_and_fails_an_exercise(tmp_path):
    ok = _run("check", SOFTMAX_SOURCE, "--source", SOFTMAX_SOURCE.parent)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS Task 1: stable_softmax (3/3)" in ok.stdout
    assert "hidden" not in ok.stdout.lower()
    assert "visible tests only: more tests run when the work is graded" in ok.stdout
    assert "logits near +1000" not in ok.stdout  # a hidden check's name
    bad = _run("check", SOFTMAX_BLANK)
    assert bad.returncode == 1
    assert "FAIL Task 1: stable_softmax (0/3)" in bad.stdout
    assert "not written yet" in bad.stdout
    assert "Traceback" not in bad.stdout
    missing = _run("check", tmp_path / "nope.ipynb")
    assert missing.returncode == 2
    assert "nope.ipynb" in missing.stderr


def test_gradescope_bundle_grades_a_submission(tmp_path):
    zpath = tmp_path / "autograder.zip"
    proc = _run("gradescope", SOFTMAX_SOURCE, "--out", zpath)
    assert proc.returncode == 0, proc.stderr
    root = tmp_path / "autograder"
    with zipfile.ZipFile(zpath) as z:
        names = set(z.namelist())
        for name in ("setup.sh", "run_autograder"):
            assert name in names
            assert z.getinfo(name).external_attr >> 16 & stat.S_IXUSR
        assert {"solutions/02_softmax.ipynb", "attn-course/pyproject.toml",
                "attn-course/constraints.txt", "attn-course/attn_course/grading/grader.py"} <= names
        z.extractall(root / "source")
    os.chmod(root / "source" / "run_autograder", 0o755)
    (root / "submission").mkdir()
    shutil.copy(SOFTMAX_BLANK, root / "submission")
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "ATTN_COURSE_PYTHON": sys.executable}
    run = subprocess.run([str(root / "source" / "run_autograder")], env=env,
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == 0
    from attn_course.grading import notebooks as nbf

    source = nbf.read_notebook(SOFTMAX_SOURCE)
    auto = [t for t in results["tests"] if "status" in t]  # written answers: by hand
    assert sum(t["max_score"] for t in auto) == nbf.max_points(source)
    assert len(auto) == sum(nbf.is_test(c) for c in source.cells)
    for t in auto:
        assert set(t) >= {"name", "score", "max_score", "status", "output"}
        assert t["status"] == "failed"
        assert "FAIL" in t["output"]
    assert "NotImplementedError" in auto[0]["output"]


def test_gradescope_needs_a_notebook_with_test_cells(tmp_path):
    proc = _run("gradescope", ROOT / "README.md", "--out", tmp_path / "b.zip")
    assert proc.returncode == 2
    assert "README.md" in proc.stderr


def test_a_released_copy_is_refused_as_a_grading_source(tmp_path):
    exercise = SOFTMAX_BLANK
    bundle = _run("gradescope", exercise, "--out", tmp_path / "a.zip")
    assert bundle.returncode == 2
    assert "released copy" in bundle.stderr
    assert not (tmp_path / "a.zip").exists()
    graded = _run("grade", exercise, "--source", SOFTMAX_BLANK.parent, "--out", tmp_path / "g")
    assert graded.returncode == 2
    assert "released copy" in graded.stderr
    assert "solutions/" in graded.stderr


def test_gradescope_visibility_reaches_every_test(tmp_path):
    from attn_course.grading import commands, reports
    from attn_course.grading.scoring import NotebookResult, TestResult

    assert commands.VISIBILITIES == reports.VISIBILITIES
    r = NotebookResult("s", "02_softmax", 1.0, 2.0, "graded", "",
                       tests=[TestResult("Task 1", "t1", 1.0, 2.0, "FAIL x")])
    for vis in reports.VISIBILITIES:
        tests = reports.gradescope_results([r], vis)["tests"]
        assert {t["visibility"] for t in tests if t["name"].startswith("02_softmax: ")} == {vis}
    with pytest.raises(ValueError, match="visibility must be one of"):
        reports.gradescope_results([r], "later")
    proc = _run("gradescope", SOFTMAX_SOURCE, "--out",
                tmp_path / "a.zip", "--visibility", "after_published")
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(tmp_path / "a.zip") as z:
        assert "--visibility after_published" in z.read("run_autograder").decode()
