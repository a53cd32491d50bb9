"""``attn-course gradescope``: Gradescope's autograder bundle for one exercise.

Gradescope unpacks the zip into ``/autograder/source``, runs ``setup.sh`` once to
build the image, then ``run_autograder`` for every submission, which must leave
``/autograder/results/results.json``
(https://gradescope-autograders.readthedocs.io/en/latest/specs/). The bundle holds

- ``setup.sh``: installs Python >= 3.11 if the image lacks it, a virtual environment
  with CPU-only torch and this course package with the versions of
  ``constraints.txt``;
- ``run_autograder``: ``attn-course grade /autograder/submission`` with the source
  notebook, copying the result to where Gradescope reads it (and writing a score-0
  result with the reason if the grader itself failed);
- ``attn-course/``: this package's source (pyproject.toml, constraints.txt, attn_course/);
- ``solutions/NOTEBOOK.ipynb``: the source notebook with its solutions and hidden tests.

The submission runs in the same container as these files: see the threat model in
``docs/instructors.md``.
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

from attn_course.grading import notebooks as nbf

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, to build the autograder image.
set -euo pipefail
SRC=/autograder/source
PY=""
for v in python3.13 python3.12 python3.11; do
  if command -v "$v" >/dev/null; then PY="$v"; break; fi
done
if [ -z "$PY" ]; then
  apt-get update
  apt-get install -y --no-install-recommends python3.11 python3.11-venv
  PY=python3.11
fi
if ! "$PY" -c "import ensurepip, venv" >/dev/null 2>&1; then  # Debian splits venv out
  apt-get update
  apt-get install -y --no-install-recommends "$PY-venv"
fi
"$PY" -m venv /autograder/venv
/autograder/venv/bin/pip install --upgrade pip
# CPU-only torch: the grader needs no GPU, and the CUDA build is gigabytes larger.
TORCH=$(grep -i '^torch==' "$SRC/attn-course/constraints.txt" || echo torch)
/autograder/venv/bin/pip install --index-url https://download.pytorch.org/whl/cpu "$TORCH"
/autograder/venv/bin/pip install -c "$SRC/attn-course/constraints.txt" "$SRC/attn-course[grading]"
/autograder/venv/bin/attn-course doctor
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission; it must leave results/results.json.
set -uo pipefail
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
BIN="${{ATTN_COURSE_BIN:-$ROOT/venv/bin/attn-course}}"
OUT="$(mktemp -d)"
mkdir -p "$ROOT/results"
"$BIN" grade "$ROOT/submission" --source "$ROOT/source/solutions" --out "$OUT" \\
  --jobs 1 --cell-timeout {cell_timeout:g} --timeout {timeout:g} --no-progress \\
  --visibility {visibility}
if [ -f "$OUT/submission/results.json" ]; then
  cp "$OUT/submission/results.json" "$ROOT/results/results.json"
else
  printf '%s\\n' '{{"score": 0, "output": "The autograder could not grade this submission (it stopped before writing a result). Please tell your instructor."}}' > "$ROOT/results/results.json"
fi
"""

PACKAGE_FILES = ("pyproject.toml", "constraints.txt", "README.md")


def course_root() -> Path:
    """The checkout that holds this package's pyproject.toml."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise FileNotFoundError(
            f"attn-course gradescope bundles the course's source, but {root} has no "
            f"pyproject.toml: run it from a checkout installed with pip install -e")
    return root


def build_bundle(notebook, out, cell_timeout: float = 60, timeout: float = 600,
                 visibility: str = "visible") -> Path:
    """Write the zip for source ``notebook`` to ``out``; return its path."""
    notebook, out = Path(notebook), Path(out)
    nb = nbf.read_notebook(notebook)
    if not any(nbf.is_test(c) for c in nb.cells):
        raise ValueError(f"{notebook} has no nbgrader test cell: pass a source notebook from "
                         f"solutions/, not an exercise")
    problem = nbf.released_copy_problem(nb, notebook)
    if problem:
        raise ValueError(problem)
    root = course_root()
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        def add(name: str, data: bytes, executable: bool = False) -> None:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            mode = 0o755 if executable else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)

        add("setup.sh", SETUP_SH.encode(), executable=True)
        add("run_autograder", RUN_AUTOGRADER.format(cell_timeout=cell_timeout, visibility=visibility,
                                                    timeout=timeout).encode(), executable=True)
        for name in PACKAGE_FILES:
            if (root / name).is_file():
                add(f"attn-course/{name}", (root / name).read_bytes())
        for path in sorted((root / "attn_course").rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                add(f"attn-course/{path.relative_to(root).as_posix()}", path.read_bytes())
        add(f"solutions/{notebook.name}", notebook.read_bytes())
    return out
