"""``attn-course gradescope``: Gradescope's autograder bundle for one exercise.

Gradescope unpacks the zip into ``/autograder/source``, runs ``setup.sh`` once to
build the image, then ``run_autograder`` for every submission, which must leave
``/autograder/results/results.json``
(https://gradescope-autograders.readthedocs.io/en/latest/specs/). The bundle holds

- ``setup.sh``: finds a Python >= 3.11 that runs (a broken pyenv shim on ``PATH`` is
  not one), else installs Debian's ``python3.11`` and ``python3.11-venv``; installs
  ``bubblewrap`` (the grader's sandbox); then, into ``/autograder/venv`` only,
  CPU-only torch and this course package with the versions of ``constraints.txt``.
  Nothing else is installed system-wide. ``setup.sh --find-python`` prints the Python
  it would use (exit 1: none);
- ``run_autograder``: a single ``exec`` of
  ``python -m attn_course.grading.gradescope_run`` with the time limits and the
  visibility, so that nothing the submission appends to it is ever run; that program
  grades a private copy of ``/autograder/submission`` with ``attn-course grade``'s
  Python API and writes ``results.json`` itself once no process of the submission is
  left (:mod:`attn_course.grading.gradescope_run`);
- ``attn-course/``: this package's source (pyproject.toml, constraints.txt, attn_course/);
- ``solutions/NOTEBOOK.ipynb``: the source notebook with its solutions and hidden tests.

``AUTOGRADER_ROOT`` (default ``/autograder``) and ``ATTN_COURSE_PYTHON`` (default
``$AUTOGRADER_ROOT/venv/bin/python``) move the layout and the Python, for tests. The
submission runs in the same container as these files: see the threat model in
``docs/instructors.md``.
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

from attn_course.grading import notebooks as nbf
from attn_course.grading.reports import require_visibility

SETUP_SH = r"""#!/usr/bin/env bash
# Gradescope runs this once, as root, to build the autograder image. System-wide it
# installs only what it names with apt-get: python3.11 and python3.11-venv where no
# Python >= 3.11 runs, the found Python's venv module where Debian split it out, and
# bubblewrap (the grader's sandbox). Everything else goes into $ROOT/venv.
set -euo pipefail

# A Python >= 3.11 that really runs: a pyenv shim for a version that is not installed
# is on PATH but fails, so each candidate is run, not just found.
python_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }
find_python() {
  local name cand
  for name in python3.13 python3.12 python3.11 python3; do
    while IFS= read -r cand; do
      if [ -n "$cand" ] && python_ok "$cand"; then printf '%s
' "$cand"; return 0; fi
    done < <(type -ap "$name" 2>/dev/null || true)
  done
  return 1
}
if [ "${1:-}" = "--find-python" ]; then find_python; exit $?; fi

ROOT="${AUTOGRADER_ROOT:-/autograder}"
SRC="$ROOT/source"
apt_install() {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}
if ! PY="$(find_python)"; then
  apt_install python3.11 python3.11-venv
  PY="$(find_python)" || { echo "setup.sh: no Python >= 3.11 runs, even after installing python3.11" >&2; exit 1; }
fi
echo "setup.sh: using $PY ($("$PY" --version 2>&1))"
if ! "$PY" -c "import ensurepip, venv" >/dev/null 2>&1; then  # Debian splits venv out
  apt_install "python$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"
fi
command -v bwrap >/dev/null 2>&1 || apt_install bubblewrap

"$PY" -m venv "$ROOT/venv"
"$ROOT/venv/bin/python" -m pip install --quiet --upgrade pip
# CPU-only torch: the grader needs no GPU, and the CUDA build is gigabytes larger.
TORCH=$(grep -i '^torch==' "$SRC/attn-course/constraints.txt" || echo torch)
"$ROOT/venv/bin/python" -m pip install --quiet --index-url https://download.pytorch.org/whl/cpu "$TORCH"
"$ROOT/venv/bin/python" -m pip install --quiet -c "$SRC/attn-course/constraints.txt" "$SRC/attn-course[grading]"
# The package is installed (copied) into the venv: the sources, with the solutions and
# hidden tests, need to be readable by root only.
chmod -R go-rwx "$SRC"
"$ROOT/venv/bin/attn-course" doctor
"""

RUN_AUTOGRADER = """#!/bin/sh
# Gradescope runs this for every submission. It hands over at once to the course's
# grader, which writes results/results.json itself; after this exec nothing more of this
# file is read, so nothing a submission appends to it can run.
exec "${{ATTN_COURSE_PYTHON:-${{AUTOGRADER_ROOT:-/autograder}}/venv/bin/python}}" -P -m attn_course.grading.gradescope_run --cell-timeout {cell_timeout:g} --timeout {timeout:g} --visibility {visibility}
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
    require_visibility(visibility)
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
