"""Write grading results: a CSV gradebook, Gradescope's results.json, readable text.

``results.json`` follows Gradescope's autograder results format
(https://gradescope-autograders.readthedocs.io/en/latest/specs/): a top-level
``score`` and ``output``, and one entry in ``tests`` per test cell with ``name``,
``score``, ``max_score``, ``status`` ("passed"/"failed") and ``output``. A submission
with several notebooks gets one file with the tests of all of them.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from attn_course.grading.scoring import NotebookResult

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


def gradescope_results(results: list[NotebookResult], visibility: str = "visible") -> dict:
    """Gradescope's results.json content for one submission's notebooks; ``visibility``
    says when learners see each test's result (one of :data:`VISIBILITIES`)."""
    require_visibility(visibility)
    tests, lines = [], []
    for r in results:
        lines.append(f"{r.notebook}: {_num(r.score)}/{_num(r.max_score)} ({r.status})"
                     + (f": {r.reason}" if r.reason else ""))
        for t in r.tests:
            tests.append({"name": f"{r.notebook}: {t.name}", "score": _num(t.score),
                          "max_score": _num(t.max_score),
                          "status": "passed" if t.passed else "failed",
                          "output": t.output, "visibility": visibility})
    return {
        "score": _num(sum(r.score for r in results)),
        "max_score": _num(sum(r.max_score for r in results)),
        "output": "\n".join(lines),
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


def format_result(r: NotebookResult) -> str:
    """The self-check's text: one block per test, then the total."""
    lines = []
    for t in r.tests:
        mark = "PASS" if t.passed else "FAIL"
        lines.append(f"{mark} {t.name} ({_num(t.score)}/{_num(t.max_score)})")
        for line in t.output.splitlines():
            lines.append(f"    {line}")
    lines.append(f"{r.notebook}: {_num(r.score)}/{_num(r.max_score)} points ({r.status})"
                 + (f": {r.reason}" if r.reason else ""))
    return "\n".join(lines)
