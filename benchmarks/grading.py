"""How fast the autograder grades, and that a large batch loses no result.

Two measurements, both through the ``attn-course grade`` command as an instructor or
Gradescope runs it:

- **one submission**: ``--single`` runs of ``attn-course grade`` on one submission
  each (command start, kernel start, all cells, reports), cycling through the solution
  notebooks; the median wall time is what one Gradescope run costs;
- **each exercise**: ``--per-notebook`` runs of each solution notebook alone, its median
  (target 3 s, 30 s for exercise 09, whose Triton task runs under the CPU interpreter);
- **a batch**: ``--submissions`` N one-notebook submissions (solutions and exercises,
  alternately, so half score full marks and half 0) graded by one command with
  ``--jobs``; reports the wall time and checks that every submission has a gradebook
  row and a results.json with the expected score.

Each learner notebook runs in the grading sandbox (bubblewrap where installed, see
``attn-course doctor``), which the machine row records. Targets (on 2 cores): median for one submission <= 3 s; 100 submissions with
``--jobs 2`` <= 120 s with no result lost. The machine's load average is recorded,
since other processes on the same cores slow every number down.

Writes ``benchmarks/results/grading.csv`` (one row per measurement, with the machine).
Run from the repository root::

    .venv/bin/python benchmarks/grading.py                   # about 2 minutes
    .venv/bin/python benchmarks/grading.py --submissions 20  # a quick look
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "attn_course.cli"]


def machine() -> dict:
    from attn_course.grading.isolation import detect

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "isolation": detect().mode,
            "load_average_1min": os.getloadavg()[0]}


def grade(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([*CLI, "grade", *args, "--no-progress"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def single(runs: int, work: Path) -> list[float]:
    sols = sorted((ROOT / "solutions").glob("*.ipynb"))
    times = []
    for i in range(runs):
        sub = work / f"single{i}"
        sub.mkdir()
        shutil.copy(sols[i % len(sols)], sub)
        times.append(grade([str(sub), "--source", str(ROOT / "solutions"),
                            "--out", str(work / f"single{i}-out")]))
    return times


def per_notebook(runs: int, work: Path) -> dict[str, list[float]]:
    """``runs`` gradings of each solution notebook alone: {notebook: seconds}."""
    out = {}
    for sol in sorted((ROOT / "solutions").glob("*.ipynb")):
        times = []
        for i in range(runs):
            sub = work / f"{sol.stem}-{i}"
            sub.mkdir()
            shutil.copy(sol, sub)
            times.append(grade([str(sub), "--source", str(ROOT / "solutions"),
                                "--out", str(work / f"{sol.stem}-{i}-out")]))
        out[sol.stem] = times
    return out


def batch(n: int, jobs: int, work: Path) -> tuple[float, int]:
    """Returns (wall seconds, number of results lost or wrong)."""
    sols = [p for p in sorted((ROOT / "solutions").glob("*.ipynb"))
            if (ROOT / "exercises" / p.name).is_file()]
    subs, expected = [], {}
    for i in range(n):
        kind = "solutions" if i % 2 == 0 else "exercises"
        src = ROOT / kind / sols[(i // 2) % len(sols)].name
        sub = work / "batch" / f"student{i:03d}"
        sub.mkdir(parents=True)
        shutil.copy(src, sub)
        subs.append(str(sub))
        expected[sub.name] = kind == "solutions"
    out = work / "batch-out"
    wall = grade([*subs, "--source", str(ROOT / "solutions"), "--out", str(out),
                  "--jobs", str(jobs)])
    wrong, rows = 0, {}
    with open(out / "gradebook.csv", newline="") as f:
        for row in csv.DictReader(f):
            rows[row["submission"]] = row
    for name, full in expected.items():
        row, res = rows.get(name), out / name / "results.json"
        if row is None or not res.is_file() or row["status"] != "graded":
            wrong += 1
            continue
        score = json.loads(res.read_text())["score"]
        if (score == float(row["max"])) != full or (not full and score != 0):
            wrong += 1
    return wall, wrong


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--single", type=int, default=10, help="runs of one submission (default 10)")
    p.add_argument("--submissions", type=int, default=100, help="batch size (default 100)")
    p.add_argument("--jobs", type=int, default=2, help="--jobs for the batch (default 2)")
    p.add_argument("--per-notebook", type=int, default=3, metavar="R",
                   help="runs of each solution notebook alone (default 3; 0 to skip)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "grading.csv"))
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="attn-grading-bench-") as tmp:
        work = Path(tmp)
        load = os.getloadavg()[0]
        times = single(args.single, work)
        med = statistics.median(times)
        print(f"one submission: median {med:.2f} s over {len(times)} runs "
              f"(min {min(times):.2f}, max {max(times):.2f}; load average {load:.1f})")
        rows.append({"measurement": "one submission, median wall s", "value": round(med, 3),
                     "n": len(times), "jobs": 1, "target": 3.0, **machine()})
        slow = []
        for name, ts in per_notebook(args.per_notebook, work).items():
            m, limit = statistics.median(ts), 30.0 if name.startswith("09") else 3.0
            print(f"  {name}: median {m:.2f} s over {len(ts)} runs (min {min(ts):.2f}, "
                  f"max {max(ts):.2f}; target {limit:g} s)")
            rows.append({"measurement": f"{name} alone, median wall s", "value": round(m, 3),
                         "n": len(ts), "jobs": 1, "target": limit, **machine()})
            if m > limit:
                slow.append(name)
        load = os.getloadavg()[0]
        wall, wrong = batch(args.submissions, args.jobs, work)
        print(f"{args.submissions} submissions with --jobs {args.jobs}: {wall:.1f} s "
              f"({wall / args.submissions:.2f} s each), {wrong} lost or wrong "
              f"(load average {load:.1f})")
        target = 120.0 * args.submissions / 100
        rows.append({"measurement": f"{args.submissions} submissions, wall s",
                     "value": round(wall, 2), "n": args.submissions, "jobs": args.jobs,
                     "target": target, **machine()})
        rows.append({"measurement": "results lost or wrong", "value": wrong,
                     "n": args.submissions, "jobs": args.jobs, "target": 0, **machine()})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out}")
    ok = med <= 3.0 and wall <= target and wrong == 0 and not slow
    print("targets met" if ok else "a target was missed (see above; check the load average)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
