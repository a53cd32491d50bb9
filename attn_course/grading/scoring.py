"""Turn what the kernel did into a score, a status and feedback per test.

A test cell scores its ``points`` when it ran to the end without an error, else 0.
Its feedback is what the checks printed (``PASS ...``) followed by the failure
(``FAIL ...`` with a hint, or the exception the learner's code raised). Text on
stderr, warnings included, never fails a test.

Every notebook gets exactly one status:

- ``graded``: all cells ran (individual tests may still have failed);
- ``unreadable notebook``: not a notebook nbformat can read (corrupt, truncated, empty);
- ``test cells missing``: none of the cells carries a grade id of any source
  notebook, so the grader cannot tell the answers apart (nbgrader metadata removed);
- ``kernel died``: the kernel exited (``os._exit``, a crash, the memory limit);
  tests that ran before still count;
- ``timed out``: a cell ran past ``--cell-timeout`` (it was interrupted and the rest
  still ran) or the notebook past ``--timeout`` (it was stopped); tests that ran
  before still count.

- ``grader error``: the sandbox for the learner's code could not be started.

Test cells run in the grader's own process (:mod:`attn_course.grading.worker`), so
what a notebook does to its own libraries cannot change a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from attn_course.grading import notebooks as nbf
from attn_course.grading.assemble import Assembled
from attn_course.grading.sandbox import Limits, Outcome

GRADED, UNREADABLE, MISSING = "graded", "unreadable notebook", "test cells missing"
DIED, TIMED_OUT = "kernel died", "timed out"
GRADER_ERROR = "grader error"
STATUSES = (GRADED, UNREADABLE, MISSING, DIED, TIMED_OUT, GRADER_ERROR)


@dataclass
class TestResult:
    name: str
    grade_id: str
    score: float
    max_score: float
    output: str
    later_hints: list[str] = field(default_factory=list)  # stages 2, 3, ... (on request)
    by_hand: float = 0.0  # a written answer's points, graded by hand (score and max are 0)

    @property
    def passed(self) -> bool:
        return self.score >= self.max_score


@dataclass
class NotebookResult:
    submission: str
    notebook: str
    score: float
    max_score: float
    status: str
    reason: str
    tests: list[TestResult] = field(default_factory=list)
    seconds: float = 0.0


def written_answers(source, written: dict) -> list[TestResult]:
    """One result per written answer of ``source``: 0 of 0 points here, its points graded by
    hand, the learner's text as the output (``written``: grade id -> submitted text)."""
    out = []
    for cell in source.cells:
        if not nbf.is_manual(cell):
            continue
        gid = nbf.grade_id(cell) or "written answer"
        text = str(written.get(gid, "")).strip()
        if text in ("", "YOUR ANSWER HERE", nbf.learner_text(cell).strip()):
            text = "(no answer written)"
        pts = nbf.points(cell)
        out.append(TestResult(f"{written_title(source, cell)} (graded by hand)", gid, 0.0, 0.0,
                              f"written answer, graded by hand ({pts:g} points): not "
                              f"auto-graded.\n--- your answer ---\n{text[:3000]}", by_hand=pts))
    return out


def written_title(source, cell) -> str:
    """The heading of the markdown cell before a written answer ("Task 4: why ..."), else
    its grade id."""
    cells = source.cells
    i = next(k for k, c in enumerate(cells) if c is cell)
    for c in reversed(cells[:i]):
        if c.cell_type == "markdown":
            for line in c.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("# ").split("(")[0].strip()
            break
    return nbf.grade_id(cell) or "written answer"


def error_feedback(rec: dict) -> str:
    ename, evalue = rec.get("ename", ""), rec.get("evalue", "")
    if ename == "CheckFailed":
        return evalue
    if ename == "NameError":
        return (f"NameError: {evalue}: run the answer cell that defines it first "
                f"(and check the name's spelling)")
    if ename == "NotImplementedError":
        return "not written yet: the answer cell still raises NotImplementedError"
    if ename == "AssertionError":
        return f"FAIL: {evalue or 'an assertion in the test failed'}"
    return f"{ename}: {evalue}"


ROLE_NAMES = {"added": "a cell you added", "locked": "a set-up cell"}


def _describe(assembled: Assembled, index: int) -> str:
    cell = assembled.cells[index]
    if cell.role in ("answer", "test"):
        return f"cell {index} ({cell.role} cell {cell.grade_id})"
    return f"cell {index} ({ROLE_NAMES.get(cell.role, cell.role)})"


def score_run(submission: str, notebook: str, source, assembled: Assembled,
              outcome: Outcome, limits: Limits, written: dict | None = None) -> NotebookResult:
    """The result of one executed notebook."""
    recs = outcome.cells
    died = [i for i, r in recs.items() if r.get("outcome") == "died"]
    overran = [i for i, r in recs.items() if r.get("outcome") == "timeout"]
    ran = max(recs) if recs else -1
    if outcome.start_failed:
        status = GRADER_ERROR
        reason = (f"the grader could not start the sandbox for the learner's code "
                  f"({outcome.start_failed}); nothing was run")
    elif outcome.killed:
        status = TIMED_OUT
        reason = (f"the notebook ran longer than --timeout {limits.total_timeout:g} s and was "
                  f"stopped during {_describe(assembled, min(ran + 1, len(assembled.cells) - 1))}")
    elif died:
        status = DIED
        reason = (f"kernel died (the process running the notebook's code) in "
                  f"{_describe(assembled, died[0])}: os._exit(), a crash, or more memory than the "
                  f"{limits.memory / (1 << 30):g} GiB limit")
    elif overran:
        status = TIMED_OUT
        reason = (f"{_describe(assembled, overran[0])} ran longer than --cell-timeout "
                  f"{limits.cell_timeout:g} s (an infinite loop?) and was interrupted")
    elif not outcome.finished:
        status = DIED
        tail = outcome.stderr_tail.strip().splitlines()[-1:] or [""]
        reason = (f"the grading process stopped (exit code {outcome.returncode}) after "
                  f"{len(recs)} cells; {tail[0]}").rstrip("; ")
    else:
        status, reason = GRADED, ""

    tests, last_answer = [], None
    for i, cell in enumerate(assembled.cells):
        if cell.role == "answer":
            last_answer = i
        if cell.role != "test":
            continue
        src = source.cells[cell.source_index]
        pts = nbf.points(src)
        rec = recs.get(i)
        if rec is None:
            out, got = "not run: " + (reason or "an earlier cell stopped the notebook"), 0.0
        elif rec["outcome"] == "ok":
            out, got = rec.get("stdout", "").strip() or "PASS", pts
        elif rec["outcome"] == "timeout":
            out, got = (f"FAIL: the test ran longer than {limits.cell_timeout:g} s "
                        f"(an infinite loop in your code?)"), 0.0
        elif rec["outcome"] == "died":
            out, got = "FAIL: the notebook's process died while this test ran", 0.0
        elif rec["outcome"] == "aborted":
            out, got = "FAIL: not run (the kernel was still busy with an interrupted cell)", 0.0
        else:
            out = (rec.get("stdout", "").strip() + "\n" + error_feedback(rec)).strip()
            ans = recs.get(last_answer) if last_answer is not None else None
            if ans and ans.get("outcome") == "error":
                out += (f"\n  (your answer cell {assembled.cells[last_answer].grade_id} "
                        f"raised {ans.get('ename')}: {ans.get('evalue')})")
            got = 0.0
        title = nbf.test_title(src)
        later = ((rec or {}).get("hints") or {}).get(title.split(":")[0].strip(), [])
        tests.append(TestResult(title, cell.grade_id, got, pts, out,
                                [str(h) for h in later] if isinstance(later, list) else []))

    auto = list(tests)
    tests += written_answers(source, written or {})
    total = sum(t.score for t in tests)
    max_score = nbf.max_points(source)
    notes = "; ".join(assembled.notes)
    if status == GRADED and not reason:
        failed = [t for t in auto if not t.passed]
        reason = (f"{len(failed)} of {len(auto)} tests failed" if failed
                  else f"all {len(auto)} tests passed")
    by_hand = nbf.manual_points(source)
    if by_hand:
        notes = "; ".join(x for x in (notes, f"{by_hand:g} more points of written answers are "
                                             f"graded by hand") if x)
    reason = "; ".join(x for x in (reason, notes) if x)
    return NotebookResult(submission, notebook, total, max_score, status, reason, tests,
                          outcome.seconds)
