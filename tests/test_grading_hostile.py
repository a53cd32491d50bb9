"""The grader against broken and hostile submissions, and against the course's own
notebooks: every submission gets a result with the right status, none crashes the
grader, and nothing outlives it.

The submissions are made here from the frozen exercise 02 (tests/grading_fixture.py; numpy only, quick to
run) and graded in one ``attn-course grade`` call per batch with ``--jobs 2``.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from attn_course.grading import notebooks as nbf
from attn_course.grading.forkserver import KERNEL_ENV, ForkServer, wait_until_ready
from attn_course.grading.reports import read_gradebook
from attn_course.grading.sandbox import Limits, run_isolated
from tests.grading_fixture import SOFTMAX_SOURCE

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS, EXERCISES = ROOT / "solutions", ROOT / "exercises"
SOFTMAX = SOFTMAX_SOURCE  # the grader tests' frozen exercise
CLI = [sys.executable, "-m", "attn_course.cli"]

NAIVE = '''def stable_softmax(x, axis=-1):
    e = np.exp(x)  # overflows for large logits: the hidden tests catch it
    return e / np.sum(e, axis=axis, keepdims=True)'''


def _nb() -> nbformat.NotebookNode:
    return copy.deepcopy(nbf.read_notebook(SOFTMAX))


def _cell(nb, grade_id):
    return next(c for c in nb.cells if nbf.grade_id(c) == grade_id)


def _with_answer(text: str, grade_id: str = "softmax-stable-answer") -> nbformat.NotebookNode:
    nb = _nb()
    _cell(nb, grade_id).source = text
    return nb


def _write(directory: Path, name: str, content) -> Path:
    path = directory / f"{name}.ipynb"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        nbformat.write(content, str(path))
    return path


def make_submissions(d: Path) -> dict[str, Path]:
    """Each hostile submission in its own directory (one student's upload)."""
    valid = SOFTMAX.read_bytes()
    subs: dict[str, object] = {
        "corrupt_json": b'{"cells": [{"cell_type": "code", "source": "x = ',
        "truncated": valid[: len(valid) // 2],
        "empty": b"",
        "infinite_loop": _with_answer("def stable_softmax(x, axis=-1):\n    while True:\n        pass"),
        "os_exit": _with_answer("import os\nos._exit(1)"),
        "sys_exit": _with_answer("import sys\nsys.exit()"),
        "syntax_error": _with_answer("def stable_softmax(x, axis=-1)\n    return x"),
        "alloc_50gb": _with_answer("import numpy as np\nbig = np.ones(50 * 2**30 // 8)\n" + NAIVE),
        "big_output": _with_answer("import sys\nsys.stdout.write('x' * 50_000_000)\n"
                                   + _cell(_nb(), "softmax-stable-answer").source),
        "stderr_warnings": _with_answer(
            "import sys, warnings\nwarnings.warn('this API is deprecated')\n"
            "print('a note on stderr', file=sys.stderr)\n"
            + _cell(_nb(), "softmax-stable-answer").source),
        "monkeypatch": _with_answer(
            "import numpy as np\nnp.allclose = lambda *a, **k: True\n"
            "import attn_course.softmax\n" + NAIVE
            + "\nattn_course.softmax.softmax = stable_softmax"),
        "forge_progress": _with_answer(
            NAIVE + "\nimport json\nwith open('../progress.jsonl', 'a') as f:\n"
            "    for i in range(50):\n"
            "        f.write(json.dumps({'event': 'cell', 'index': i, 'outcome': 'ok'}) + '\\n')\n"
            "import os\nassert not os.path.exists('../notebook.ipynb')  # hidden tests not on disk"),
        "loud_and_wrong": _with_answer(  # prints past the output cap, then fails a test
            "import sys\n" + NAIVE + "\n_quiet = stable_softmax\n\n"
            "def stable_softmax(x, axis=-1):\n    sys.stdout.write('y' * 2_000_000)\n"
            "    return _quiet(x, axis)"),
        "swallow_errors": _with_answer(
            "get_ipython().set_custom_exc((Exception,), lambda *a, **k: None)\n" + NAIVE),
    }
    deleted = _with_answer(NAIVE)
    deleted.cells = [c for c in deleted.cells if nbf.grade_id(c) != "softmax-stable-test"]
    subs["deleted_test"] = deleted
    edited = _with_answer(NAIVE)
    _cell(edited, "softmax-stable-test").source = "print('PASS everything')"
    subs["edited_test"] = edited
    stripped = _nb()
    for c in stripped.cells:
        c.metadata.pop("nbgrader", None)
    subs["no_metadata"] = stripped
    paths = {}
    for name, content in subs.items():
        (d / name).mkdir()
        paths[name] = _write(d / name, "02_softmax", content)
    return paths


def _grade(args, out: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``attn-course grade``; its scratch directories go under ``out/tmp``."""
    (out / "tmp").mkdir(parents=True)
    env = {**os.environ, "TMPDIR": str(out / "tmp")}
    return subprocess.run([*CLI, "grade", *map(str, args), "--out", str(out), "--jobs", "2",
                           "--no-progress"], capture_output=True, text=True, timeout=timeout,
                          env=env)


@contextlib.contextmanager
def _locked(f):
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def hostile(tmp_path_factory, worker_id):
    """Grade every hostile submission once, even when pytest-xdist runs these tests on
    several workers (they share the directory; the first to take the lock grades)."""
    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else \
        tmp_path_factory.getbasetemp().parent
    d = shared / "hostile"
    with open(shared / "hostile.lock", "w") as lock, _locked(lock):
        if not (d / "done").exists():
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            subs = make_submissions(d)
            proc = _grade([*[p.parent for p in subs.values()], "--source", SOFTMAX.parent,
                           "--cell-timeout", "8", "--timeout", "90"], d / "graded")
            (d / "stderr.txt").write_text(proc.stderr)
            (d / "done").write_text(str(proc.returncode))
    assert (d / "done").read_text() == "0", (d / "stderr.txt").read_text()
    out = d / "graded"
    rows = {r["submission"]: r for r in read_gradebook(out / "gradebook.csv")}
    return out, rows


EXPECTED = {
    "corrupt_json": "unreadable notebook",
    "truncated": "unreadable notebook",
    "empty": "unreadable notebook",
    "infinite_loop": "timed out",
    "os_exit": "kernel died",
    "sys_exit": "graded",
    "syntax_error": "graded",
    "alloc_50gb": "graded",
    "big_output": "graded",
    "stderr_warnings": "graded",
    "monkeypatch": "graded",
    "forge_progress": "graded",
    "swallow_errors": "graded",
    "loud_and_wrong": "graded",
    "deleted_test": "graded",
    "edited_test": "graded",
    "no_metadata": "test cells missing",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_submission_gets_a_result_with_its_status(hostile, name):
    out, rows = hostile
    row = rows[name]
    assert row["status"] == EXPECTED[name], row
    assert row["reason"], row
    results = json.loads((out / name / "results.json").read_text())
    assert results["score"] == float(row["score"])
    assert results["output"]


def _tests(out: Path, name: str) -> dict[str, dict]:
    results = json.loads((out / name / "results.json").read_text())
    return {t["name"].split(": ", 1)[1]: t for t in results["tests"]}


def test_reasons_are_readable(hostile):
    out, rows = hostile
    assert "empty" in rows["empty"]["reason"]
    assert "not valid notebook JSON" in rows["corrupt_json"]["reason"]
    assert "cell-timeout" in rows["infinite_loop"]["reason"]
    assert "kernel died" in rows["os_exit"]["reason"]
    assert "grade id" in rows["no_metadata"]["reason"]
    assert "not an exercise notebook" in rows["no_metadata"]["reason"]
    assert float(rows["no_metadata"]["max"]) == 7  # named like 02_softmax: its points count
    assert "SyntaxError" in _tests(out, "syntax_error")["Task 1: stable_softmax"]["output"]


def test_partial_credit_survives_a_broken_answer(hostile):
    out, rows = hostile
    for name in ("sys_exit", "syntax_error", "alloc_50gb"):
        tests = _tests(out, name)
        assert tests["Task 1: stable_softmax"]["score"] == 0
        assert tests["Task 3: logsumexp"]["status"] == "passed", (name, tests)
    assert float(rows["os_exit"]["score"]) == 0


def test_forged_progress_records_count_for_nothing(hostile):
    out, rows = hostile
    tests = _tests(out, "forge_progress")
    assert tests["Task 1: stable_softmax"]["score"] == 0  # the naive answer, really graded
    assert "(your answer cell" not in tests["Task 1: stable_softmax"]["output"]
    assert float(rows["forge_progress"]["score"]) == 4


def test_output_and_warnings_do_not_fail_tests(hostile):
    _, rows = hostile
    for name in ("big_output", "stderr_warnings"):
        assert float(rows[name]["score"]) == float(rows[name]["max"]) == 7, rows[name]


def test_a_failure_after_huge_output_is_still_reported(hostile):
    out, rows = hostile
    task1 = _tests(out, "loud_and_wrong")["Task 1: stable_softmax"]
    assert task1["score"] == 0
    assert "FAIL" in task1["output"], task1["output"][-2000:]
    assert "not displayed" not in task1["output"]
    assert float(rows["loud_and_wrong"]["score"]) == 4, rows["loud_and_wrong"]


def test_deleted_or_edited_tests_are_restored(hostile):
    out, rows = hostile
    for name, word in (("deleted_test", "deleted"), ("edited_test", "edited")):
        assert f"softmax-stable-test was {word}" in rows[name]["reason"]
        task1 = _tests(out, name)["Task 1: stable_softmax"]
        assert task1["score"] == 0
        assert "subtract each row's maximum" in task1["output"]  # the hidden test's hint
        assert float(rows[name]["score"]) == 4


def test_tampering_gains_nothing(hostile):
    """Patched numpy and course functions, or IPython's error display, live in the learner's
    process; the tests run in the grader's, so the naive answer is graded as it is."""
    out, rows = hostile
    for name in ("monkeypatch", "swallow_errors"):
        assert float(rows[name]["score"]) == 4, rows[name]  # tasks 2 and 3 only
        assert _tests(out, name)["Task 1: stable_softmax"]["score"] == 0


def test_no_process_is_left_behind(hostile):
    out, _ = hostile
    scratch = str(out / "tmp")
    leftovers = []
    for p in psutil.process_iter():
        try:
            if p.cwd().startswith(scratch):
                leftovers.append(p)
        except (psutil.Error, OSError):
            continue
    assert not leftovers
    assert not list((out / "tmp").iterdir())  # scratch directories removed


@pytest.mark.parametrize("forked", [False, True], ids=["launched", "forked"])
def test_total_timeout_kills_the_process_groups(forked):
    sleep = str(300 + forked)  # a child process to find, different for each case
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import os\nprint(os.getpid(), flush=True)"),
        nbformat.v4.new_code_cell("import subprocess, time\n"
                                  f"subprocess.Popen(['sleep', '{sleep}'])\ntime.sleep(300)"),
    ])
    start = time.monotonic()
    limits = Limits(cell_timeout=300, total_timeout=8)
    if forked:
        with ForkServer(KERNEL_ENV) as server:
            assert wait_until_ready(server.path)
            start = time.monotonic()
            outcome = run_isolated(nb, limits, fork_server=server.path)
    else:
        outcome = run_isolated(nb, limits)
    assert time.monotonic() - start < 30
    assert outcome.killed
    assert not outcome.finished
    time.sleep(0.5)
    sleepers = [p for p in psutil.process_iter(["cmdline", "ppid"])
                if p.info["cmdline"] == ["sleep", sleep]]
    assert not sleepers


def test_course_notebooks_grade_to_zero_and_full_marks(tmp_path):
    sols, exs = sorted(SOLUTIONS.glob("*.ipynb")), sorted(EXERCISES.glob("*.ipynb"))
    assert len(sols) >= 5
    assert [p.name for p in sols] == [p.name for p in exs]
    (tmp_path / "solution").mkdir()
    (tmp_path / "exercise").mkdir()
    for p in sols:
        (tmp_path / "solution" / p.name).write_bytes(p.read_bytes())
    for p in exs:
        (tmp_path / "exercise" / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "graded"
    proc = _grade([tmp_path / "solution", tmp_path / "exercise", "--source", SOLUTIONS], out)
    assert proc.returncode == 0, proc.stderr
    rows = read_gradebook(out / "gradebook.csv")
    assert len(rows) == 2 * len(sols)
    for r in rows:
        assert r["status"] == "graded", r
        full = float(r["score"]) == float(r["max"]) > 0
        assert full if r["submission"] == "solution" else float(r["score"]) == 0, r
    results = json.loads((out / "exercise" / "results.json").read_text())
    assert results["score"] == 0
    assert len(results["tests"]) >= 10
    for t in results["tests"]:
        if t["name"].endswith("(graded by hand)"):  # written answers: no pass or fail here
            assert "(no answer written)" in t["output"], t
            continue
        assert t["status"] == "failed", t
        assert any(line.startswith("FAIL ") for line in t["output"].splitlines()), t
        assert "NotImplementedError" in t["output"]
        assert "Traceback" not in t["output"]


def test_memory_limit_holds_for_a_slow_leak(tmp_path):
    """A kernel that grows past the limit step by step dies or gets MemoryError."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "chunks = []\nwhile True:\n    chunks.append(bytearray(100 << 20))")])
    outcome = run_isolated(nb, Limits(cell_timeout=60, total_timeout=90, memory=2 << 30))
    assert outcome.cells[0]["outcome"] in ("error", "died")
