"""Gradescope's bundle unpacked into an /autograder-like folder and run end to end, as
Gradescope does: a correct, a blank and a hostile submission (one that appends a line
to run_autograder and forges results/results.json from inside the notebook, and leaves a
daemon behind that keeps forging it). And setup.sh's choice of Python."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import nbformat
import pytest

from attn_course.grading import notebooks as nbf
from attn_course.grading import reports
from attn_course.grading.gradescope import SETUP_SH, build_bundle
from tests.grading_fixture import SOFTMAX_BLANK, SOFTMAX_SOURCE

ROOT = Path(__file__).resolve().parents[1]
SOFTMAX = "02_softmax.ipynb"
FORGED = {"score": 99, "output": "FORGED", "tests": []}
SOURCE = nbf.read_notebook(SOFTMAX_SOURCE)
MAX = nbf.max_points(SOURCE)  # the exercise's points
N_TESTS = sum(nbf.is_test(c) for c in SOURCE.cells)  # its auto-graded tests

HOSTILE = '''import json, os, time
root = {root!r}
forged = json.dumps({forged!r})
try:  # a line bash would run once the grader is done, if it were still reading the file
    with open(os.path.join(root, "run_autograder"), "a") as f:
        f.write("\\ntouch " + os.path.join(root, "appended-line-ran") + "\\n"
                "echo '" + forged + "' > " + os.path.join(root, "results", "results.json") + "\\n")
    os.makedirs(os.path.join(root, "results"), exist_ok=True)
    with open(os.path.join(root, "results", "results.json"), "w") as f:
        f.write(forged)
except OSError as exc:
    print("could not reach the autograder's files:", exc)
if os.fork() == 0:  # a daemon in its own session that keeps forging the result
    os.setsid()
    if os.fork() == 0:
        for _ in range(600):
            try:
                with open(os.path.join(root, "results", "results.json"), "w") as f:
                    f.write(forged)
            except OSError:
                pass
            time.sleep(0.05)
    os._exit(0)
os.wait()
'''


def _unpack(bundle: Path, root: Path, notebook: nbformat.NotebookNode | Path) -> None:
    """The layout Gradescope builds: source/ (the zip), run_autograder copied out of it,
    submission/ with the learner's upload, results/."""
    with zipfile.ZipFile(bundle) as z:
        z.extractall(root / "source")
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")
    os.chmod(root / "run_autograder", 0o755)
    (root / "submission").mkdir()
    (root / "results").mkdir()
    if isinstance(notebook, Path):
        shutil.copy(notebook, root / "submission" / SOFTMAX)
    else:
        nbformat.write(notebook, str(root / "submission" / SOFTMAX))


def _hostile(root: Path) -> nbformat.NotebookNode:
    """The blank exercise with one added cell, after the first answer, so that it runs."""
    nb = nbf.read_notebook(SOFTMAX_BLANK)
    i = next(k for k, c in enumerate(nb.cells) if nbf.grade_id(c) == "softmax-stable-answer")
    nb.cells.insert(i + 1, nbformat.v4.new_code_cell(
        HOSTILE.format(root=str(root), forged=FORGED)))
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The three submissions, each in its own /autograder, run at once."""
    d = tmp_path_factory.mktemp("gradescope")
    bundle = build_bundle(SOFTMAX_SOURCE, d / "autograder.zip")
    roots = {name: d / name for name in ("correct", "blank", "hostile")}
    _unpack(bundle, roots["correct"], SOFTMAX_SOURCE)
    _unpack(bundle, roots["blank"], SOFTMAX_BLANK)
    _unpack(bundle, roots["hostile"], _hostile(roots["hostile"]))
    procs = {}
    for name, root in roots.items():
        env = {**os.environ, "AUTOGRADER_ROOT": str(root), "ATTN_COURSE_PYTHON": sys.executable}
        procs[name] = subprocess.Popen([str(root / "run_autograder")], cwd=root, env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True)
    logs = {name: p.communicate(timeout=240)[0] for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, (name, logs[name])
    return bundle, roots, logs


def _results(root: Path) -> dict:
    return json.loads((root / "results" / "results.json").read_text())


def _auto(results: dict) -> list[dict]:
    """The auto-graded tests (written answers are graded by hand, with no status)."""
    return [t for t in results["tests"] if "status" in t]


def test_bundle_layout_and_run_autograder_only_hands_over(graded):
    bundle, _, _ = graded
    with zipfile.ZipFile(bundle) as z:
        names = set(z.namelist())
        for name in ("setup.sh", "run_autograder"):
            assert z.getinfo(name).external_attr >> 16 & stat.S_IXUSR, name
        assert {f"solutions/{SOFTMAX}", "attn-course/pyproject.toml",
                "attn-course/attn_course/grading/gradescope_run.py"} <= names
        script = z.read("run_autograder").decode()
    lines = [line for line in script.splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) == 1, lines
    assert lines[0].startswith('exec "${ATTN_COURSE_PYTHON:-${AUTOGRADER_ROOT:-/autograder}'
                               '/venv/bin/python}" -P -m attn_course.grading.gradescope_run '), lines
    assert lines[0].endswith("--cell-timeout 60 --timeout 600 --visibility visible"), lines


def test_a_correct_submission_gets_full_marks(graded):
    _, roots, logs = graded
    results = _results(roots["correct"])
    assert results["score"] == MAX, logs["correct"]
    assert [t["status"] for t in _auto(results)] == ["passed"] * N_TESTS
    assert set(results) <= reports.RESULT_KEYS


def test_a_blank_submission_gets_zero(graded):
    _, roots, logs = graded
    results = _results(roots["blank"])
    assert results["score"] == 0, logs["blank"]
    assert [t["status"] for t in _auto(results)] == ["failed"] * N_TESTS
    assert "NotImplementedError" in results["tests"][0]["output"]


def test_a_hostile_submission_forges_nothing(graded):
    _, roots, logs = graded
    root = roots["hostile"]
    results = _results(root)
    assert results != FORGED
    assert results["output"] != "FORGED"
    assert results["score"] == 0, logs["hostile"]
    assert len(_auto(results)) == N_TESTS
    if "appended-line-ran" in (root / "run_autograder").read_text():  # the notebook reached it
        assert not (root / "appended-line-ran").exists()
    # the daemon it left is gone: the result stays as the grader wrote it
    before = (root / "results" / "results.json").read_bytes()
    time.sleep(1.0)
    assert (root / "results" / "results.json").read_bytes() == before
    assert "processes left after grading and killed" in logs["hostile"]


def test_a_link_is_not_followed(tmp_path):
    """A submission that is a link to the source notebook (full marks if followed)."""
    bundle = build_bundle(SOFTMAX_SOURCE, tmp_path / "autograder.zip")
    root = tmp_path / "ag"
    _unpack(bundle, root, SOFTMAX_BLANK)
    (root / "submission" / SOFTMAX).unlink()
    (root / "submission" / SOFTMAX).symlink_to(root / "source" / "solutions" / SOFTMAX)
    (root / "results" / "results.json").symlink_to(root / "source" / "setup.sh")
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "ATTN_COURSE_PYTHON": sys.executable}
    run = subprocess.run([str(root / "run_autograder")], cwd=root, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert not (root / "results" / "results.json").is_symlink()
    assert (root / "source" / "setup.sh").read_text() == SETUP_SH  # not written through
    results = _results(root)
    assert results["score"] == 0
    assert "02_softmax.ipynb could not be opened" in results["output"]
    assert "it is a link" in results["output"]


# --- setup.sh ---------------------------------------------------------------------------

def _fake(path: Path, script: str) -> None:
    path.write_text(script)
    path.chmod(0o755)


def _find_python(tmp_path: Path, bindir: Path) -> subprocess.CompletedProcess:
    setup = tmp_path / "setup.sh"
    setup.write_text(SETUP_SH)
    return subprocess.run(["/bin/bash", str(setup), "--find-python"], capture_output=True,
                          text=True, env={"PATH": str(bindir)}, timeout=30)


def test_setup_skips_a_broken_pyenv_shim_and_an_old_python(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _fake(bindir / "python3.13", "#!/bin/sh\necho 'pyenv: python3.13: command not found' >&2\n"
                                 "exit 127\n")
    _fake(bindir / "python3.12", "#!/bin/sh\nexit 1\n")  # runs, but says it is too old
    (bindir / "python3.11").symlink_to(sys.executable)  # this test's Python is >= 3.11
    found = _find_python(tmp_path, bindir)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == str(bindir / "python3.11")


def test_setup_finds_nothing_when_nothing_runs(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("python3.13", "python3.12", "python3.11", "python3"):
        _fake(bindir / name, "#!/bin/sh\nexit 127\n")
    found = _find_python(tmp_path, bindir)
    assert found.returncode == 1
    assert found.stdout == ""


def test_setup_installs_only_the_packages_it_names():
    apt = re.findall(r"^\s*(?:.*\|\|\s*)?apt_install (.+)$", SETUP_SH, re.MULTILINE)
    assert apt == ["python3.11 python3.11-venv",
                   '"python$("$PY" -c \'import sys; print("%d.%d" % sys.version_info[:2])\')-venv"',
                   "bubblewrap"], apt
    apt_get = re.findall(r"apt-get install[^\n]*", SETUP_SH)
    assert apt_get == ['apt-get install -y -qq --no-install-recommends "$@"'], apt_get
    for line in SETUP_SH.splitlines():
        if "pip install" in line:
            assert line.startswith('"$ROOT/venv/bin/python" -m pip install'), line


def test_the_grader_outlives_and_ends_a_daemon_that_left_its_session(tmp_path):
    """gradescope_run's own guard, whatever the sandbox does: as the subreaper of what it
    starts, it still finds a double-forked daemon in a new session, and ends it."""
    script = '''
import os, sys, time
from attn_course.grading import gradescope_run as g
assert g.become_subreaper()
pidfile = sys.argv[1]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        with open(pidfile, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)
    os._exit(0)
os.wait()
while not os.path.getsize(pidfile) if os.path.exists(pidfile) else True:
    time.sleep(0.05)
print(g.end_descendants())
'''
    pidfile = tmp_path / "daemon.pid"
    run = subprocess.run([sys.executable, "-c", script, str(pidfile)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "1", run.stdout
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_grader_failure_still_leaves_a_result(tmp_path):
    bundle = build_bundle(SOFTMAX_SOURCE, tmp_path / "autograder.zip")
    root = tmp_path / "ag"
    _unpack(bundle, root, SOFTMAX_SOURCE)
    shutil.rmtree(root / "source" / "solutions")  # the grader cannot find its source
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "ATTN_COURSE_PYTHON": sys.executable}
    run = subprocess.run([str(root / "run_autograder")], cwd=root, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    results = _results(root)
    assert set(results) <= reports.RESULT_KEYS
    assert results["score"] == 0
    assert results["output"].startswith("The autograder could not grade this submission "
                                        "(FileNotFoundError: --source must be a directory")
    assert "grader error: FileNotFoundError" in run.stdout


def test_a_line_appended_to_run_autograder_never_runs(tmp_path):
    """Whatever reaches run_autograder while it runs, sandbox or not: here the program
    it hands over to appends the line itself (a shell that still read the file after
    its command would run it)."""
    bundle = build_bundle(SOFTMAX_SOURCE, tmp_path / "autograder.zip")
    root = tmp_path / "ag"
    _unpack(bundle, root, SOFTMAX_SOURCE)
    marker = tmp_path / "appended-line-ran"
    grader = tmp_path / "grader"
    _fake(grader, f"#!/bin/sh\nprintf '\\ntouch {marker}\\n' >> {root / 'run_autograder'}\n")
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "ATTN_COURSE_PYTHON": str(grader)}
    run = subprocess.run([str(root / "run_autograder")], cwd=root, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert f"touch {marker}" in (root / "run_autograder").read_text()
    assert not marker.exists()
