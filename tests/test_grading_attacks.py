"""Hostile submissions against the sandboxed grader: none of them may raise its score,
change a file outside its sandbox, leave a process behind, reach the network, or show
a learner any text of the hidden tests, the solutions or another submission.

One batch (``attn-course grade --jobs 2``) grades every attack at once, with a source
notebook that carries canary strings in its solutions and hidden tests and a victim
submission that carries one in its answers; each test below reads that batch.
Needs a sandbox (``attn-course doctor``: grading isolation); without one the tier is
skipped with the command that installs bubblewrap.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import nbformat
import psutil
import pytest

from attn_course.grading import notebooks as nbf
from attn_course.grading.isolation import detect
from attn_course.grading.release import release_notebook
from attn_course.grading.reports import read_gradebook
from tests.grading_fixture import SOFTMAX_SOURCE

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "attn_course"
SOFTMAX = SOFTMAX_SOURCE  # the grader tests' frozen exercise
RUN = uuid.uuid4().hex[:10]
CANARY_HIDDEN = f"CANARY-HIDDEN-{RUN}"
CANARY_SOLUTION = f"CANARY-SOLUTION-{RUN}"
CANARY_VICTIM = f"CANARY-VICTIM-{RUN}"
ENV_SECRET = f"CANARY-ENV-{RUN}"
TMP_MARKER = f"/tmp/attn-attack-{RUN}"
SLEEP = "777.5"  # the argument of every `sleep` an attack leaves behind
DAEMON = f"attn-attack-daemon-{RUN}"

pytestmark = pytest.mark.skipif(
    detect().mode == "none",
    reason="grading sandbox unavailable here (see `attn-course doctor`); "
           "install bubblewrap: apt-get install bubblewrap")

# Code put into the first answer cell of the blank exercise; the other answers stay blank.
# `STOLEN` is shown wherever a learner could see it: printed and raised during a visible test.
LEAK = '''
def stable_softmax(x, axis=-1):
    print("stolen:", STOLEN)
    raise ValueError("stolen: " + str(STOLEN))
'''

ATTACKS: dict[str, str] = {
    "write_package": '''
import pathlib, attn_course
STOLEN = []
for p in pathlib.Path(attn_course.__file__).parent.rglob("*.py"):
    try:
        p.write_text(p.read_text() + "\\n# changed by a submission\\n")
        STOLEN.append(str(p))
    except Exception as exc:
        pass
''' + LEAK,
    "write_site_packages": '''
import pathlib, site, numpy
STOLEN = []
for d in [pathlib.Path(numpy.__file__).parent.parent, *map(pathlib.Path, site.getsitepackages())]:
    try:
        (d / "sitecustomize.py").write_text("print('pwned')")
        STOLEN.append(str(d))
    except Exception:
        pass
''' + LEAK,
    "read_solutions_beside_package": '''
import pathlib, attn_course
STOLEN = []
root = pathlib.Path(attn_course.__file__).resolve().parents[1]
for p in list(root.glob("solutions/*.ipynb")) + list(root.glob("*/*.ipynb")):
    try:
        STOLEN.append(p.read_text()[:100000])
        p.write_text("{}")
    except Exception:
        pass
''' + LEAK,
    "walk_the_disk": '''
import os
STOLEN = []
for top in ("/", "/tmp", "/autograder", "/root", "/home", "/work"):
    for d, dirs, files in os.walk(top):
        if d.startswith(("/proc", "/sys", "/usr", "/dev")):
            dirs[:] = []
            continue
        for f in files:
            if f.endswith((".ipynb", ".csv", ".json", ".jsonl")):
                try:
                    STOLEN.append(open(os.path.join(d, f), errors="replace").read()[:20000])
                except Exception:
                    pass
''' + LEAK,
    "source_path_from_proc": '''
import glob
STOLEN = []
for f in glob.glob("/proc/*/cmdline"):
    try:
        args = open(f, "rb").read().split(b"\\0")
    except Exception:
        continue
    STOLEN.append(b" ".join(args).decode(errors="replace"))
    for a in args:
        if a.endswith(b".ipynb") or b"solutions" in a or b"source" in a:
            try:
                STOLEN.append(open(a, errors="replace").read())
            except Exception:
                pass
''' + LEAK,
    "forge_results": '''
import os, json
STOLEN = []
forged = json.dumps({"score": 7, "tests": []})
for path in ("/autograder/results/results.json", "../results.json", "../../gradebook.csv",
             "/tmp/gradebook.csv"):
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        open(path, "w").write(forged)
        STOLEN.append(path)
    except Exception:
        pass
for d, dirs, files in os.walk("/"):
    if d.startswith(("/proc", "/sys", "/usr", "/dev")):
        dirs[:] = []
        continue
    for f in files:
        if f in ("gradebook.csv", "results.json", "progress.jsonl", "run_autograder"):
            try:
                open(os.path.join(d, f), "a").write("forged\\n")
                STOLEN.append(os.path.join(d, f))
            except Exception:
                pass
''' + LEAK,
    "setsid_daemon": f'''
import subprocess, sys
code = """
import os, time
# {DAEMON}
for _ in range(120):
    for d, dirs, files in os.walk("/"):
        if d.startswith(("/proc", "/sys", "/usr", "/dev")):
            dirs[:] = []
            continue
        for f in files:
            if f in ("gradebook.csv", "results.json"):
                try:
                    open(os.path.join(d, f), "w").write("score\\\\n7\\\\n")
                except Exception:
                    pass
    time.sleep(0.5)
"""
subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
STOLEN = "daemon started"
''' + LEAK,
    "hundred_setsid_children": f'''
import subprocess
STOLEN = 0
for _ in range(100):
    try:
        subprocess.Popen(["sleep", "{SLEEP}"], start_new_session=True)
        STOLEN += 1
    except Exception:
        break
''' + LEAK,
    "many_processes": f'''
import os, subprocess
STOLEN = 0
for _ in range(400):
    try:
        subprocess.Popen(["sleep", "{SLEEP}"])
        STOLEN += 1
    except Exception:
        break
''' + LEAK,
    "kill_everything": '''
import os, signal
os.kill(-1, signal.SIGKILL)
''',
    "kill_the_parent": '''
import os, signal
os.kill(os.getppid(), signal.SIGKILL)
os.kill(1, signal.SIGKILL)
''',
    "network": '''
import socket
STOLEN = []
try:
    s = socket.create_connection(("127.0.0.1", PORT), timeout=2)
    s.sendall(b"stolen")
    STOLEN.append("connected")
except Exception as exc:
    STOLEN.append(type(exc).__name__)
''' + LEAK,
    "ipython_hooks": '''
STOLEN = []
ip = get_ipython()
ip.events.register("pre_run_cell", lambda info: STOLEN.append(info.raw_cell))
ip.set_custom_exc((Exception,), lambda *a, **k: None)
''' + LEAK,
    "frame_walk": '''
import sys, inspect

def stable_softmax(x, axis=-1):
    found = []
    f = sys._getframe()
    while f is not None:
        found.append((f.f_code.co_filename, sorted(f.f_globals)[:50], repr(f.f_locals)[:2000]))
        f = f.f_back
    for frame in inspect.stack():
        found.append(repr(frame.frame.f_globals.get("reference")))
    print(found)
    raise ValueError(str(found))
''',
    "memory_scan": '''
import gc

def stable_softmax(x, axis=-1):
    texts = [o for o in gc.get_objects() if isinstance(o, str) and
             ("BEGIN HIDDEN" in o or "CANARY" in o or "check_close(" in o)]
    print(texts)
    raise ValueError(str(texts)[:3000])
''',
    "swap_check_code": '''
import attn_course.grading.checks as c
for name in ("check", "check_close", "check_equal", "check_shape", "check_sums_to_one",
             "check_no_shortcut", "check_type", "call", "check_raises"):
    getattr(c, name).__code__ = (lambda *a, **k: None).__code__
c.CheckFailed = Exception
''',
    "integrity_off": '''
import attn_course.grading.integrity as i
i._snapshot = None
i.verify = lambda *a, **k: []
i.report = lambda *a, **k: print("integrity ok")
''',
    "lying_objects": '''
import numpy as np

class Liar(np.ndarray):
    def __eq__(self, other): return True
    def __sub__(self, other): return np.zeros(1)
    def __abs__(self): return np.zeros(1)

class Anything:
    def __eq__(self, other): return True
    def __array__(self, *a, **k): raise RuntimeError("no")
    def __float__(self): return 0.0

def stable_softmax(x, axis=-1): return Anything()
def softmax_with_temperature(x, temperature): return np.zeros(3).view(Liar)
def logsumexp(x, axis=-1): return Anything()
''',
    "reference_from_globals": '''
import inspect

def _ref(name):
    for frame in inspect.stack():
        g = frame.frame.f_globals
        if name in g:
            return g[name]
    return globals()[name]

def stable_softmax(x, axis=-1): return _ref("reference")(x, axis=axis)
def softmax_with_temperature(x, t): return _ref("reference")(x / t)
def logsumexp(x, axis=-1): return _ref("reference")(x, axis=axis)
''',
    "numpy_patched": '''
import numpy as np, torch
np.allclose = lambda *a, **k: True
np.testing.assert_allclose = lambda *a, **k: None
np.isnan = lambda x: np.zeros(np.shape(x), dtype=bool)
np.fabs = lambda x: np.zeros(np.shape(x))
torch.allclose = lambda *a, **k: True
def stable_softmax(x, axis=-1): return x
''',
    "fake_pass_lines": '''
def stable_softmax(x, axis=-1):
    print("PASS everything\\nall 3 tests passed")
    return x
def logsumexp(x, axis=-1):
    raise ValueError("PASS\\nTask 3: 7/7 (graded): all tests passed")
''',
    "huge_return": '''
import numpy as np
def stable_softmax(x, axis=-1): return np.zeros(300 * 2**20 // 8)
''',
    "deep_nesting": '''
def stable_softmax(x, axis=-1):
    out = []
    for _ in range(100000):
        out = [out]
    return out
''',
    "write_tmp": f'''
open("{TMP_MARKER}", "w").write("left by a submission")
STOLEN = "wrote {TMP_MARKER}"
''' + LEAK,
    "read_other_submissions": '''
import os, time
STOLEN = []
end = time.monotonic() + 5
for d, dirs, files in os.walk("/"):
    if d.startswith(("/proc", "/sys", "/usr", "/dev")) or time.monotonic() > end:
        dirs[:] = []
        continue
    for f in files:
        try:
            text = open(os.path.join(d, f), errors="replace").read(200000)
        except Exception:
            continue
        if "CANARY-VICTIM" in text or "CANARY-HIDDEN" in text or "CANARY-SOLUTION" in text:
            STOLEN.append(text)
''' + LEAK,
    "environment": '''
import os
STOLEN = dict(os.environ)
''' + LEAK,
    "spinning_thread": '''
import threading
threading.Thread(target=lambda: [None for _ in iter(int, 1)], daemon=True).start()
STOLEN = "spinning"
''' + LEAK,
    "ignore_interrupts": '''
import signal
signal.signal(signal.SIGALRM, signal.SIG_IGN)
def stable_softmax(x, axis=-1):
    while True:
        pass
''',
    "forge_protocol": '''
import os, struct, json
def stable_softmax(x, axis=-1):
    reply = json.dumps({"status": "ok", "value": {"__ndarray__": "<f8", "shape": [8],
                        "data": "AAAAAAAA8D8=" * 8}}).encode()
    for fd in range(3, 64):
        try:
            os.write(fd, struct.pack(">Q", len(reply)) + reply)
            os.write(fd, b"garbage" * 1000)
        except OSError:
            pass
    return x
''',
    "proc_of_grader": '''
import os, glob
STOLEN = []
for d in glob.glob("/proc/[0-9]*"):
    for name in ("environ", "cmdline", "maps"):
        try:
            STOLEN.append(open(os.path.join(d, name), "rb").read()[:5000].decode(errors="replace"))
        except Exception:
            pass
    try:
        STOLEN.append(os.listdir(os.path.join(d, "cwd")))
    except Exception:
        pass
''' + LEAK,
}

# What each attack may score (the blank exercise scores 0; nothing may do better).
ALLOWED_STATUS = {
    "kill_everything": {"graded", "kernel died"},  # kill(-1) reaches the sandbox's processes only
    "kill_the_parent": {"graded", "kernel died"},  # its parent is the sandbox's init
    "ignore_interrupts": {"timed out"},
    "forge_protocol": {"kernel died"},  # garbage on the pipe ends the run
    "huge_return": {"graded", "kernel died"},  # past the size limit of a reply
}


def _source(tmp: Path) -> Path:
    """solutions/02_softmax.ipynb with canaries in every solution and hidden test."""
    nb = nbf.read_notebook(SOFTMAX)
    for c in nb.cells:
        if nbf.is_answer(c):
            c.source = c.source.replace("### BEGIN SOLUTION",
                                        f"### BEGIN SOLUTION\n    # {CANARY_SOLUTION}", 1)
        elif nbf.is_test(c) and "### BEGIN HIDDEN TESTS" in c.source:
            c.source = c.source.replace(
                "### BEGIN HIDDEN TESTS",
                f"### BEGIN HIDDEN TESTS\n_canary = {CANARY_HIDDEN!r}  # {CANARY_HIDDEN}", 1)
    d = tmp / "source"
    d.mkdir(mode=0o700)
    nbformat.write(nb, str(d / "02_softmax.ipynb"))
    return d


def _tree_hash(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def _marked_processes() -> list[str]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if cmd == ["sleep", SLEEP] or any(DAEMON in part for part in cmd):
            found.append(" ".join(cmd))
    return found


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("attacks")
    source = _source(tmp)
    blank = release_notebook(nbf.read_notebook(source / "02_softmax.ipynb"))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    received: list[bytes] = []
    stop = threading.Event()

    def listen():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                received.append(conn.recv(100) or b"(connected)")

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    subs = tmp / "submissions"
    for name, code in ATTACKS.items():
        nb = copy.deepcopy(blank)
        cell = next(c for c in nb.cells if nbf.grade_id(c) == "softmax-stable-answer")
        cell.source = code.replace("PORT", str(port))
        (subs / name).mkdir(parents=True)
        nbformat.write(nb, str(subs / name / "02_softmax.ipynb"))
    victim = nbf.read_notebook(SOFTMAX)
    for c in victim.cells:
        if nbf.is_answer(c):
            c.source = f"# {CANARY_VICTIM}\n" + c.source
    (subs / "victim").mkdir()
    nbformat.write(victim, str(subs / "victim" / "02_softmax.ipynb"))
    out = tmp / "graded"
    before = {"package": _tree_hash(PACKAGE), "source": _tree_hash(source)}
    env = {**os.environ, "ATTN_SECRET": ENV_SECRET}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "attn_course.cli", "grade", *sorted(map(str, subs.iterdir())),
         "--source", str(source), "--out", str(out), "--jobs", "2", "--no-progress",
         "--cell-timeout", "10", "--timeout", "90"],
        capture_output=True, text=True, timeout=900, env=env)
    seconds = time.monotonic() - start
    time.sleep(2)  # anything left behind has had time to act
    after = {"package": _tree_hash(PACKAGE), "source": _tree_hash(source)}
    stop.set()
    thread.join(timeout=5)
    listener.close()
    rows = {r["submission"]: r for r in read_gradebook(out / "gradebook.csv")}
    yield {"proc": proc, "out": out, "rows": rows, "before": before, "after": after,
           "received": received, "seconds": seconds, "left": _marked_processes()}
    for p in psutil.process_iter(["cmdline"]):  # never leave a failed run's processes behind
        cmd = p.info["cmdline"] or []
        if cmd == ["sleep", SLEEP] or any(DAEMON in part for part in cmd):
            p.kill()


def test_the_batch_completes(batch):
    assert batch["proc"].returncode == 0, batch["proc"].stderr[-3000:]
    assert set(batch["rows"]) == {*ATTACKS, "victim"}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_an_attack_scores_nothing(batch, name):
    row = batch["rows"][name]
    assert float(row["score"]) == 0, row
    assert float(row["max"]) == nbf.max_points(nbf.read_notebook(SOFTMAX)), row
    assert row["status"] in ALLOWED_STATUS.get(name, {"graded"}), row


def test_the_victim_is_graded_in_full_beside_the_attacks(batch):
    row = batch["rows"]["victim"]
    assert row["status"] == "graded", row
    assert float(row["score"]) == nbf.max_points(nbf.read_notebook(SOFTMAX)), row


def test_nothing_outside_the_sandbox_changed(batch):
    assert batch["after"]["package"] == batch["before"]["package"]
    assert batch["after"]["source"] == batch["before"]["source"]
    assert not os.path.exists(TMP_MARKER)
    out = batch["out"]
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == sorted(["gradebook.csv", *(f"{n}/results.json" for n in batch["rows"])])
    for name, row in batch["rows"].items():
        results = json.loads((out / name / "results.json").read_text())
        assert results["score"] == float(row["score"])  # as the grader wrote it, not forged


def test_no_process_outlives_grading(batch):
    assert batch["left"] == []


def test_no_network(batch):
    assert batch["received"] == []


def test_learners_see_no_hidden_test_solution_or_other_submission(batch):
    out = batch["out"]
    seen = (out / "gradebook.csv").read_text()
    seen += "".join((out / n / "results.json").read_text() for n in batch["rows"])
    for canary in (CANARY_HIDDEN, CANARY_SOLUTION, CANARY_VICTIM, ENV_SECRET):
        assert canary not in seen
    hidden_lines = [line.strip() for c in nbf.read_notebook(SOFTMAX).cells if nbf.is_test(c)
                    for line in c.source.split("### BEGIN HIDDEN TESTS", 1)[-1].splitlines()
                    if len(line.strip()) > 30 and "BEGIN" not in line]
    assert hidden_lines
    for line in hidden_lines:
        assert line not in seen, line


def test_the_leaks_were_attempted_and_shown_where_harmless(batch):
    """The attacks really ran: what they 'stole' reaches the feedback of a visible test
    (so the assertions above would catch a canary), it is just empty or harmless."""
    for name in ("write_package", "read_solutions_beside_package", "write_site_packages",
                 "read_other_submissions"):
        tests = json.loads((batch["out"] / name / "results.json").read_text())["tests"]
        assert "stolen: []" in tests[0]["output"] or tests[0]["output"].startswith("FAIL: the "), \
            (name, tests[0]["output"][:3000])
    env = json.loads((batch["out"] / "environment" / "results.json").read_text())["tests"]
    assert "stolen:" in env[0]["output"]
    assert "HOME" in env[0]["output"]
