"""Lectures as slideshows: ``make slides`` (``attn-course slides``) writes one reveal.js
deck per lecture into ``build/slides/``, from the same notebooks, offline.

Each cell's ``metadata.slideshow.slide_type`` (Jupyter's own: ``slide``, ``subslide``,
``fragment``, ``skip``, ``notes``, ``-`` to continue) decides where it goes. Lecture 09 is
laid out by hand; :func:`default_slide_types` gives the others a default, stamped by
``attn-course slides --stamp``: each ``#``/``##`` heading starts a slide, a ``###``
heading a subslide, and a cell that would overflow the current slide starts a subslide
below it. Cells that already have a slide type keep it. A code cell whose
``metadata.attn_course.slides`` is ``"output"`` shows its output only.

Offline: nbconvert's reveal template loads reveal.js, jQuery, require.js, Mermaid,
MathJax and the widget manager from CDNs. The course's template
(``attn_course/slides_template/reveal_offline``) drops what the slides do not need and
loads reveal.js (5.x, as shipped by the PyPI package ``sphinx-revealjs``) and MathJax
(3.x, from ``django-static-mathjax``, the copy the website uses) from copies written
next to the decks. Widgets need a kernel; a slide shows the picture and the text a
widget showed when the notebook was saved (from the widget state stored in it).

Present: open ``build/slides/09_flash_attention.slides.html``; arrows move, ``S`` opens
the speaker view with the notes, ``Esc`` the overview. Live slides in JupyterLab are
RISE's job (``jupyterlab-rise``), which reads the same metadata.
"""

from __future__ import annotations

import base64
import re
import shutil
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = Path(__file__).resolve().parent / "slides_template"
TEMPLATE = "reveal_offline"
REVEAL_DIR, MATHJAX_DIR = "reveal.js", "mathjax"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
#: Lecture notebooks whose slide types were set by hand: the stamper leaves them alone.
BY_HAND = ("09_flash_attention.ipynb",)
#: About how many lines of text fit one slide at nbconvert's 960 x 700 (code is smaller).
SLIDE_LINES = 22


def reveal_source() -> Path:
    """reveal.js as shipped by ``sphinx-revealjs`` (``dist/`` and ``plugin/``)."""
    try:
        import sphinx_revealjs
    except ImportError:
        raise RuntimeError("reveal.js comes from the PyPI package sphinx-revealjs: "
                           "pip install 'attn-course[slides]' (make setup installs it)") from None
    path = Path(sphinx_revealjs.__file__).parent / "_static" / "revealjs"
    if not (path / "dist" / "reveal.js").is_file():
        raise RuntimeError(f"no dist/reveal.js under {path}: sphinx-revealjs changed its layout")
    return path


def mathjax_source() -> Path:
    """MathJax 3's ``es5`` folder as shipped by ``django-static-mathjax``."""
    try:
        import mathjax
    except ImportError:
        raise RuntimeError("MathJax comes from the PyPI package django-static-mathjax: "
                           "pip install 'attn-course[slides]' (make setup installs it)") from None
    path = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (path / "tex-svg.js").is_file():
        raise RuntimeError(f"no tex-svg.js under {path}: django-static-mathjax changed its layout")
    return path


def _lines(cell) -> int:
    """A rough height of the cell on a slide, in lines of text."""
    n = len(cell.source.splitlines())
    if cell.cell_type == "markdown":
        n += cell.source.count("$$") * 2  # display math is taller than a line
    else:
        n = (n + 1) // 2 + 1  # code is set in a smaller font
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "image/png" in data or WIDGET_VIEW in data:
                n += 14
            else:
                text = out.get("text", "") or data.get("text/plain", "")
                n += (len(text.splitlines()) + 1) // 2
    return n


def default_slide_types(nb) -> list[str]:
    """The automatic layout of a lecture: one slide type per cell (see the module)."""
    types, height = [], 0
    for cell in nb.cells:
        first = cell.source.lstrip().split("\n", 1)[0]
        info = cell.metadata.get("attn_course", {})
        if isinstance(info, dict) and str(info.get("role", "")).startswith("colab"):
            kind = "skip"
        elif cell.cell_type == "markdown" and re.match(r"#{1,2} ", first):
            kind, height = "slide", 0
        elif cell.cell_type == "markdown" and first.startswith("### "):
            kind, height = "subslide", 0
        elif height and height + _lines(cell) > SLIDE_LINES:
            kind, height = "subslide", 0
        else:
            kind = "-"
        if kind != "skip":
            height += _lines(cell)
        types.append(kind)
    return types


def stamp_defaults(nb, force: bool = False) -> int:
    """Give every cell without a slide type its default; returns how many changed."""
    changed = 0
    for cell, kind in zip(nb.cells, default_slide_types(nb), strict=True):
        show = cell.metadata.setdefault("slideshow", {})
        if force or "slide_type" not in show:
            if show.get("slide_type") != kind:
                show["slide_type"] = kind
                changed += 1
    return changed


def stamp_all(root: Path = ROOT, check: bool = False, out=sys.stdout) -> list[str]:
    """Stamp the default slide types into every lecture not laid out by hand."""
    changed = []
    for file in sorted((root / "notebooks").glob("*.ipynb")):
        if file.name in BY_HAND:
            continue
        text = file.read_text(encoding="utf-8")
        nb = nbformat.reads(text, as_version=4)
        if stamp_defaults(nb):
            changed.append(file.name)
            if not check:
                file.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")
            print(f"{'no slide types' if check else 'slide types stamped'}: {file.name}", file=out)
    return changed


def _widget_parts(state: dict, model_id: str, parts: list) -> None:
    model = state.get(model_id)
    if not isinstance(model, dict):
        return
    name, values = model.get("model_name"), model.get("state", {})
    if name == "ImageModel":
        for buf in model.get("buffers", []):
            if buf.get("path") == ["value"] and buf.get("encoding") == "base64":
                parts.append(("image/png", buf["data"]))
    elif name in ("HTMLModel", "LabelModel") and values.get("value"):
        parts.append(("text/html", values["value"]))
    for child in values.get("children", []) or []:
        _widget_parts(state, str(child).removeprefix("IPY_MODEL_"), parts)


def freeze_widgets(nb) -> None:
    """Replace each widget's output by the picture and text it showed when saved."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        outputs = []
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(WIDGET_VIEW)
            if view is None:
                outputs.append(out)
                continue
            parts: list = []
            _widget_parts(state, view.get("model_id", ""), parts)
            for mime, value in parts:
                if mime == "image/png":
                    base64.b64decode(value, validate=True)  # a broken buffer fails here
                outputs.append(nbformat.v4.new_output("display_data", data={mime: value}))
        if "outputs" in cell:
            cell.outputs = outputs
    nb.metadata.pop("widgets", None)


def prepare(nb) -> None:
    """The notebook as the slides show it (a copy is changed, never the file)."""
    freeze_widgets(nb)
    for cell in nb.cells:
        info = cell.metadata.get("attn_course", {})
        if cell.cell_type == "code" and isinstance(info, dict) and info.get("slides") == "output":
            cell.metadata["transient"] = {"remove_source": True}  # as nbconvert's tag filter


def build(notebooks, out_dir: Path, out=sys.stdout) -> list[Path]:
    """Write ``out_dir/NAME.slides.html`` for each notebook, with reveal.js and MathJax
    copied into ``out_dir`` once."""
    from nbconvert import SlidesExporter

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reveal, mathjax = reveal_source(), mathjax_source()
    if not (out_dir / REVEAL_DIR / "dist" / "reveal.js").is_file():
        for part in ("dist", "plugin/notes", "LICENSE"):
            src, dst = reveal / part, out_dir / REVEAL_DIR / part
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True)
            else:
                shutil.copy(src, dst)
    if not (out_dir / MATHJAX_DIR / "tex-svg.js").is_file():
        shutil.copytree(mathjax, out_dir / MATHJAX_DIR, dirs_exist_ok=True)
    exporter = SlidesExporter(extra_template_basedirs=[str(TEMPLATES)], template_name=TEMPLATE,
                              reveal_url_prefix=REVEAL_DIR, reveal_theme="white",
                              mathjax_url=f"{MATHJAX_DIR}/tex-svg.js",
                              exclude_input_prompt=True, exclude_output_prompt=True)
    written = []
    for path in notebooks:
        path = Path(path)
        nb = nbformat.read(path, as_version=4)
        prepare(nb)
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
        target = out_dir / f"{path.stem}.slides.html"
        target.write_text(body, encoding="utf-8")
        written.append(target)
        print(f"wrote {target}", file=out)
    return written


def main(args) -> int:
    if args.stamp or args.check:
        changed = stamp_all(Path(args.root), check=args.check)
        if args.check and changed:
            print("run `attn-course slides --stamp`", file=sys.stderr)
            return 1
        return 0
    notebooks = args.notebooks or sorted((Path(args.root) / "notebooks").glob("*.ipynb"))
    try:
        build(notebooks, Path(args.out))
    except RuntimeError as exc:
        print(f"attn-course slides: {exc}", file=sys.stderr)
        return 2
    return 0


def register(sub) -> None:
    p = sub.add_parser("slides", help="write the lectures as reveal.js slides (offline)")
    p.add_argument("notebooks", nargs="*", help="lecture notebooks (default: notebooks/*)")
    p.add_argument("--out", default="build/slides", help="folder for the decks")
    p.add_argument("--root", default=".", help="the course folder (default: here)")
    p.add_argument("--stamp", action="store_true",
                   help="stamp default slide types into the lectures not laid out by hand")
    p.add_argument("--check", action="store_true",
                   help="with --stamp's rules, change nothing; exit 1 if a cell has no type")
    p.set_defaults(func=main)
