"""``attn-course release``: generate ``exercises/`` from the sources in ``solutions/``.

The learner's copy of each source notebook is made by nbgrader's own preprocessors,
in the order of nbgrader's ``generate_assignment``: check the cell metadata, replace
each solution region with a stub that raises ``NotImplementedError``, remove hidden
tests, clear outputs, lock the read-only and test cells, record checksums. Then the
answer and test cells get nbval's ``raises-exception`` tag, because in the released
copy a stub or a test that calls it raises by design.

``--check`` writes nothing and fails when a file in ``exercises/`` differs from what
would be generated, or has no source (``make test`` runs it, so a source edited
without re-releasing fails CI).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import nbformat

from attn_course.grading import notebooks

TAG = "raises-exception"


def release_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The learner's version of source notebook ``nb`` (a new object)."""
    from nbgrader.preprocessors import (
        CheckCellMetadata,
        ClearHiddenTests,
        ClearOutput,
        ClearSolutions,
        ComputeChecksums,
        LockCells,
    )

    nb = copy.deepcopy(nb)
    resources: dict = {}
    for pre in (CheckCellMetadata(), ClearSolutions(), ClearHiddenTests(), ClearOutput(),
                LockCells(), ComputeChecksums(), CheckCellMetadata()):
        nb, resources = pre.preprocess(nb, resources)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code" and (notebooks.is_answer(cell) or notebooks.is_test(cell)):
            tags = cell.metadata.setdefault("tags", [])
            if TAG not in tags:
                tags.append(TAG)
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def release(source_dir, out_dir, check: bool = False, out=sys.stdout) -> list[str]:
    """Write (or with ``check``, compare) one exercise per source notebook.

    Returns the problems found in check mode (an empty list when up to date) or the
    files written.
    """
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    if not source_dir.is_dir():
        raise FileNotFoundError(
            f"source directory {str(source_dir)!r} does not exist; run from the course's "
            f"root (which has solutions/) or pass --source DIR")
    sources = sorted(source_dir.glob("*.ipynb"))
    if not sources:
        raise FileNotFoundError(f"source directory {str(source_dir)!r} has no .ipynb file")
    problems, written = [], []
    expected_names = set()
    for src in sources:
        nb = notebooks.read_notebook(src)
        text = render(release_notebook(nb))
        target = out_dir / src.name
        expected_names.add(src.name)
        current = target.read_text(encoding="utf-8") if target.is_file() else None
        if current == text:
            continue
        if check:
            problems.append(f"{target} is {'missing' if current is None else 'out of date'}")
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            written.append(str(target))
            print(f"wrote {target}", file=out)
    if out_dir.is_dir():
        for extra in sorted(out_dir.glob("*.ipynb")):
            if extra.name not in expected_names:
                if check:
                    problems.append(f"{extra} has no source {source_dir / extra.name}")
                else:
                    extra.unlink()
                    print(f"removed {extra} (no source)", file=out)
    if check:
        for p in problems:
            print(p, file=out)
        if problems:
            print(f"{out_dir}/ is stale: run `attn-course release` and commit the result",
                  file=out)
        else:
            print(f"{out_dir}/ is up to date with {source_dir}/ ({len(sources)} notebooks)",
                  file=out)
        return problems
    if not written:
        print(f"{out_dir}/ already up to date ({len(sources)} notebooks)", file=out)
    return written
