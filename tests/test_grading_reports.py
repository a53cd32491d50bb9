"""What learners see in Gradescope's results.json: only the keys of Gradescope's
specification, plain-text output, and with an exam visibility no score and no pass/fail
count anywhere a learner can see before the results are released."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from attn_course.grading import reports, scoring
from attn_course.grading.scoring import GRADED, UNREADABLE, NotebookResult

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "attn-course"


def _graded() -> NotebookResult:
    """4/7 with one of three tests failed: the case that leaked through the summary."""
    tests = [scoring.TestResult("Task 1: stable_softmax", "t1", 2.0, 2.0, "PASS rows sum to 1"),
             scoring.TestResult("Task 2: temperature", "t2", 2.0, 2.0, "PASS temperature 1"),
             scoring.TestResult("Task 3: logsumexp", "t3", 0.0, 3.0,
                        "FAIL logits near 1000: got inf\nhint: factor out the maximum")]
    return NotebookResult("alice", "02_softmax", 4.0, 7.0, GRADED, "1 of 3 tests failed", tests)


def _unreadable() -> NotebookResult:
    return NotebookResult("alice", "03_attention", 0.0, 6.0, UNREADABLE,
                          "03_attention.ipynb is not valid notebook JSON (line 1)")


def _seen_now(results: dict) -> str:
    """Everything in results.json that Gradescope shows a learner at once: the top-level
    output, and the tests whose visibility is 'visible'."""
    parts = [results.get("output", "")]
    for t in results["tests"]:
        if t.get("visibility", results.get("visibility", "visible")) == "visible":
            parts += [t["name"], str(t["score"]), str(t["max_score"]), t["status"], t["output"]]
    return "\n".join(parts)


@pytest.mark.parametrize("visibility", reports.VISIBILITIES)
def test_only_the_specifications_keys_and_plain_text(visibility):
    results = reports.gradescope_results([_graded(), _unreadable()], visibility)
    json.dumps(results)  # serialisable as it is
    assert set(results) <= reports.RESULT_KEYS, set(results) - reports.RESULT_KEYS
    assert "max_score" not in results  # not a top-level key of the specification
    assert results["output_format"] == "text"
    assert results["test_output_format"] == results["test_name_format"] == "text"
    assert results["visibility"] == visibility
    assert results["stdout_visibility"] == "hidden"
    assert results["score"] == 4
    assert results["tests"]
    for t in results["tests"]:
        assert set(t) <= reports.TEST_KEYS, set(t) - reports.TEST_KEYS
        assert t["status"] in ("passed", "failed")
        assert t["output_format"] in reports.OUTPUT_FORMATS
        assert t["visibility"] in reports.VISIBILITIES
    graded = [t for t in results["tests"] if t["name"].startswith("02_softmax: ")]
    assert [(t["score"], t["max_score"], t["status"]) for t in graded] == [
        (2, 2, "passed"), (2, 2, "passed"), (0, 3, "failed")]
    assert {t["visibility"] for t in graded} == {visibility}


def test_visible_results_show_the_score_and_the_counts():
    results = reports.gradescope_results([_graded()], "visible")
    assert results["output"] == "02_softmax: 4/7 (graded): 1 of 3 tests failed"
    assert "hint: factor out the maximum" in _seen_now(results)


@pytest.mark.parametrize("visibility", reports.EXAM_VISIBILITIES)
def test_exam_visibility_shows_no_score_and_no_count(visibility):
    results = reports.gradescope_results([_graded()], visibility)
    seen = _seen_now(results)
    for leak in ("4/7", "4", "7", "1 of 3", "failed", "passed", "FAIL", "PASS",
                 "factor out the maximum", "logsumexp"):
        assert leak not in seen, (visibility, leak, seen)
    assert not re.search(r"\d", results["output"].replace("02_softmax", "")), results["output"]
    assert "02_softmax: received and graded" in results["output"]
    # Gradescope hides the total score while a test waits for its due date or for
    # publication; tests marked 'hidden' do not hide it, so one such test must exist
    assert any(t["visibility"] in ("after_due_date", "after_published")
               for t in results["tests"]), results["tests"]
    if visibility == "hidden":
        marker = results["tests"][-1]
        assert (marker["score"], marker["max_score"]) == (0, 0)
        assert marker["visibility"] == "after_published"
        assert {t["visibility"] for t in results["tests"][:-1]} == {"hidden"}


def test_exam_visibility_still_says_why_a_file_could_not_be_read():
    results = reports.gradescope_results([_unreadable()], "after_published")
    assert "03_attention: could not be graded: 03_attention.ipynb is not valid notebook JSON" \
        in results["output"]
    assert "0/6" not in results["output"]


def test_exam_visibility_keeps_a_grader_error_for_the_instructor():
    r = NotebookResult("alice", "02_softmax", 0.0, 7.0, scoring.GRADER_ERROR,
                       "the grader failed on this notebook (KeyError: 'x'); please report it")
    results = reports.gradescope_results([r], "after_due_date")
    assert "02_softmax: the autograder failed on this notebook" in results["output"]
    assert "KeyError" not in results["output"]


def test_an_unknown_visibility_is_refused_with_the_value():
    with pytest.raises(ValueError, match=r"visibility must be one of .*got 'later'"):
        reports.gradescope_results([_graded()], "later")


def test_grade_writes_an_exam_results_json_that_hides_the_score(tmp_path):
    """Through ``attn-course grade``: a naive softmax passes the visible checks and fails
    hidden ones, and results.json says neither."""
    import nbformat

    from attn_course.grading import notebooks as nbf
    from tests.grading_fixture import FIX_SOLUTIONS, SOFTMAX_SOURCE

    nb = nbf.read_notebook(SOFTMAX_SOURCE)
    answer = next(c for c in nb.cells if nbf.grade_id(c) == "softmax-stable-answer")
    answer.source = ("def stable_softmax(x, axis=-1):\n    e = np.exp(x)\n"
                     "    return e / np.sum(e, axis=axis, keepdims=True)")
    (tmp_path / "bob").mkdir()
    nbformat.write(nb, str(tmp_path / "bob" / "02_softmax.ipynb"))
    proc = subprocess.run([str(BIN), "grade", str(tmp_path / "bob"), "--source",
                           str(FIX_SOLUTIONS), "--out", str(tmp_path / "out"),
                           "--no-progress", "--visibility", "after_published"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    row = reports.read_gradebook(tmp_path / "out" / "gradebook.csv")[0]
    assert 0 < float(row["score"]) < float(row["max"]), row  # worth hiding: some tests failed
    results = json.loads((tmp_path / "out" / "bob" / "results.json").read_text())
    assert set(results) <= reports.RESULT_KEYS
    assert all(set(t) <= reports.TEST_KEYS for t in results["tests"])
    assert {t["visibility"] for t in results["tests"]} == {"after_published"}
    seen = _seen_now(results)
    assert f"/{row['max']}" not in seen
    assert not re.search(r"\d", seen.replace("02_softmax", "")), seen  # no score, no count
    for leak in ("failed", "FAIL", "passed"):
        assert leak not in seen, (leak, seen)
    assert "when your instructor publishes the grades" in results["output"]
