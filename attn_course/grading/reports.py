"""Write grading results: a CSV gradebook, Gradescope's results.json, readable text.

``results.json`` keeps to Gradescope's autograder results format
(https://gradescope-autograders.readthedocs.io/en/latest/specs/) and uses only the
keys it defines (:data:`RESULT_KEYS`, :data:`TEST_KEYS`): a top-level ``score``,
``output``, ``output_format``, ``visibility`` and ``stdout_visibility``, and one entry
in ``tests`` per test cell with ``name``, ``score``, ``max_score``, ``status``
("passed"/"failed"), ``output``, ``output_format`` and ``visibility``. Every text is
plain text (``output_format: "text"``): feedback can quote what the learner's code
raised, which must not be read as HTML or Markdown. A submission with several
notebooks gets one file with the tests of all of them.

With an exam visibility (``after_due_date``, ``after_published``, ``hidden``), learners
see no score and no pass/fail count until the results are released: the tests carry
that visibility, and the top-level ``output``, which Gradescope always shows, says only
that the notebook was received (or why it could not be read). Gradescope hides the
total score while a test is waiting for its due date or for publication, but not for
tests that are ``hidden`` (its specification); with ``hidden``, one more test of 0
points, released when grades are published, keeps the total hidden as well.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from attn_course.grading.scoring import GRADER_ERROR, MISSING, UNREADABLE, NotebookResult

GRADEBOOK_FIELDS = ("submission", "notebook", "score", "max", "status", "reason")


def _num(x: float):
    return int(x) if float(x).is_integer() else round(x, 4)


#: Gradescope's values for a test's ``visibility``: when learners see its result.
VISIBILITIES = ("visible", "after_due_date", "after_published", "hidden")


def require_visibility(visibility: str) -> None:
    """Raise ValueError unless ``visibility`` is one of :data:`VISIBILITIES`."""
    if visibility not in VISIBILITIES:
        raise ValueError(f"visibility must be one of {', '.join(VISIBILITIES)}, "
                         f"got {visibility!r}")


#: The top-level keys of results.json in Gradescope's specification.
RESULT_KEYS = frozenset({"score", "execution_time", "output", "output_format",
                         "test_output_format", "test_name_format", "visibility",
                         "stdout_visibility", "extra_data", "tests", "leaderboard"})
#: The keys of one test in results.json in Gradescope's specification.
TEST_KEYS = frozenset({"score", "max_score", "status", "name", "name_format", "number",
                       "output", "output_format", "tags", "visibility", "extra_data"})
#: Gradescope's values for ``output_format`` (its "Output String Formatting").
OUTPUT_FORMATS = ("text", "html", "simple_format", "md", "ansi")
#: Visibilities that keep results from learners until later (or for ever).
EXAM_VISIBILITIES = ("after_due_date", "after_published", "hidden")
#: Statuses decided before any of the notebook's code runs: saying them reveals nothing
#: about the tests, and a learner needs them to submit a readable file.
_BEFORE_RUNNING = (UNREADABLE, MISSING)

_WHEN_SHOWN = {
    "after_due_date": "Your score and each test's result are shown after the due date.",
    "after_published": "Your score and each test's result are shown when your instructor "
                       "publishes the grades.",
    "hidden": "Your score and the tests' results are not shown here: your instructor "
              "will tell you your grade.",
}


def _exam_summary(r: NotebookResult) -> str:
    name = r.notebook or "submission"
    if r.status in _BEFORE_RUNNING:
        return f"{name}: could not be graded: {r.reason}"
    if r.status == GRADER_ERROR:  # its reason is for the instructor
        return f"{name}: the autograder failed on this notebook; your instructor can see why"
    return f"{name}: received and graded"


def gradescope_results(results: list[NotebookResult], visibility: str = "visible") -> dict:
    """Gradescope's results.json content for one submission's notebooks; ``visibility``
    says when learners see each test's result (one of :data:`VISIBILITIES`)."""
    require_visibility(visibility)
    exam = visibility in EXAM_VISIBILITIES
    tests, lines = [], []
    for r in results:
        if exam:
            lines.append(_exam_summary(r))
        else:
            lines.append(f"{r.notebook or 'submission'}: {_num(r.score)}/{_num(r.max_score)} "
                         f"({r.status})" + (f": {r.reason}" if r.reason else ""))
        for t in r.tests:
            entry = {"name": f"{r.notebook}: {t.name}", "score": _num(t.score),
                     "max_score": _num(t.max_score),
                     "status": "passed" if t.passed else "failed",
                     "output": t.output, "output_format": "text", "visibility": visibility}
            if t.by_hand:  # graded by hand in Gradescope's outline: no pass or fail here
                del entry["status"]
            tests.append(entry)
    if exam:
        lines.append(_WHEN_SHOWN[visibility])
    if visibility == "hidden":  # see the module's docstring
        tests.append({"name": "Results", "score": 0, "max_score": 0, "status": "passed",
                      "output": "Your instructor releases the results of this assignment.",
                      "output_format": "text", "visibility": "after_published"})
    return {
        "score": _num(sum(r.score for r in results)),
        "output": "\n".join(lines),
        "output_format": "text",
        "test_output_format": "text",
        "test_name_format": "text",
        "visibility": visibility,
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_results_json(out_dir: Path, submission: str, results: list[NotebookResult],
                       visibility: str = "visible") -> Path:
    path = Path(out_dir) / submission / "results.json"
    _atomic_write(path, json.dumps(gradescope_results(results, visibility), indent=2) + "\n")
    return path


def write_gradebook(out_dir: Path, results: list[NotebookResult]) -> Path:
    path = Path(out_dir) / "gradebook.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("gradebook.csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(GRADEBOOK_FIELDS)
        for r in sorted(results, key=lambda r: (r.submission, r.notebook)):
            w.writerow([r.submission, r.notebook, _num(r.score), _num(r.max_score), r.status,
                        r.reason])
    os.replace(tmp, path)
    return path


def read_gradebook(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def format_result(r: NotebookResult, hint: int = 1) -> str:
    """The self-check's text: one block per test, then the total. With ``hint`` >= 2, each
    failed test also shows its later hints up to that stage."""
    lines = []
    for t in r.tests:
        if t.by_hand:
            lines.append(f"WRITTEN {t.name}: {_num(t.by_hand)} points, graded by hand by your "
                         f"instructor (not auto-graded)")
            continue
        mark = "PASS" if t.passed else "FAIL"
        lines.append(f"{mark} {t.name} ({_num(t.score)}/{_num(t.max_score)})")
        for line in t.output.splitlines():
            lines.append(f"    {line}")
        if not t.passed and hint >= 2:
            shown = t.later_hints[: hint - 1]
            for stage, text in enumerate(shown, start=2):
                lines.append(f"    hint {stage}: {text}")
            if len(shown) < hint - 1:
                lines.append(f"    (this test has hints 1 to {len(t.later_hints) + 1})")
    lines.append(f"{r.notebook}: {_num(r.score)}/{_num(r.max_score)} points ({r.status})"
                 + (f": {r.reason}" if r.reason else ""))
    return "\n".join(lines)
