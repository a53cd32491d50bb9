"""The course's own additions to the Sphinx + myst-nb website.

- the table of contents, in syllabus order, added to the home page (the README) as a
  hidden toctree: lectures 01..14, the exercises, then the guides in docs/;
- on every lecture and exercise page, under its title, links to its notebook in the
  course's repository (``[project.urls] Repository`` in pyproject.toml), to Colab, and to
  its exercise page (or its lecture); the Colab-only cells at the top are left out;
- every saved ipywidgets view rendered statically from the notebook's saved widget state
  (widget_html.py), with a line saying the live widget needs a kernel; myst-nb's widget
  state script (and its CDN loaders, switched off in conf.py) are left out;
- figure outputs shown 1.4 times their saved size (at most the column's width), with
  alt text: the figure's title when the cell sets one as a plain
  string, otherwise "Figure N of lecture X (title), section: heading";
- links from the pages to repository files that are not pages (README's or docs' links
  to a script, a folder) point to the file in the repository instead of a download, and
  so do links to files this copy lacks (with a warning);
- MathJax 3 copied from the package django-static-mathjax into _static/mathjax, and
  index.html written as a copy of the home page (README.html).
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import struct
from pathlib import Path
from urllib.parse import quote

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging
from widget_html import VIEW_MIME, WidgetRenderer, saved_state

logger = logging.getLogger(__name__)

#: Notebook figures are saved at matplotlib's 72 dpi, small next to a page's text: shown
#: this much larger (at most the column's width), their labels are legible.
FIGURE_ZOOM = 1.4
MATHJAX_COMPONENT = "tex-mml-chtml.js"
MATHJAX_PARTS = [MATHJAX_COMPONENT, "input", "output/chtml", "ui", "a11y", "sre"]

NUMBERED = re.compile(r"^\d\d_[A-Za-z0-9_]+$")
_WIDGET_SCRIPT = re.compile(
    r'<script type="' + re.escape(VIEW_MIME) + r'">(?P<body>.*?)</script>', re.S)
_TITLE_CALL = re.compile(
    r"\b(?:suptitle|set_title|title)\(\s*(?P<lit>[rRbB]?(?:\"[^\"\n]*\"|'[^'\n]*'))")


def _numbered(srcdir: Path, folder: str) -> list[str]:
    return sorted(f"{folder}/{p.stem}" for p in (srcdir / folder).glob("*.ipynb")
                  if NUMBERED.match(p.stem))


def _toctree(caption: str, entries: list[str]) -> str:
    body = "\n".join(entries)
    return f"\n\n```{{toctree}}\n:hidden:\n:caption: {caption}\n:maxdepth: 1\n\n{body}\n```\n"


def page_links(app: Sphinx, docname: str) -> str:
    """The MyST line under a notebook page's title: the notebook in the repository, Colab,
    and the lecture's exercises (or the exercise's lecture)."""
    repo = app.config.repository_url.rstrip("/")
    folder, stem = docname.split("/", 1)
    path = f"{folder}/{stem}.ipynb"
    owner_repo = repo.split("github.com/", 1)[-1]
    parts = [f"[source notebook `{path}`]({repo}/blob/main/{path})",
             f"[open in Colab](https://colab.research.google.com/github/{owner_repo}/blob/main/{path})"]
    other = "exercises" if folder == "notebooks" else "notebooks"
    if (Path(app.srcdir) / other / f"{stem}.ipynb").exists():
        what = "its exercises" if folder == "notebooks" else "its lecture"
        parts.append(f"[{what}](../{other}/{stem}.ipynb)")
    parts.append("to run the code and move the widgets, open the notebook in JupyterLab or Colab")
    return "{.lecture-links}\n" + " · ".join(parts) + "\n"


#: the pages of docs/, in this order (a learner's copy has no instructors' guide)
GUIDES = ["docs/notation", "docs/exercises", "docs/instructors"]

#: cells that only matter in Colab (attn_course/colab.py stamps them); the site links to
#: Colab under each title instead
COLAB_ROLES = {"colab-link", "colab-setup"}


def add_to_source(app: Sphinx, docname: str, source: list[str]) -> None:
    """The home page gets the table of contents; each notebook page, its links under the title."""
    srcdir = Path(app.srcdir)
    if docname == app.config.root_doc:
        source[0] += (_toctree("Lectures", _numbered(srcdir, "notebooks"))
                      + _toctree("Exercises", _numbered(srcdir, "exercises"))
                      + _toctree("Guides", [d for d in GUIDES if (srcdir / f"{d}.md").exists()]))
        return
    folder, _, stem = docname.partition("/")
    if folder not in ("notebooks", "exercises") or not NUMBERED.match(stem):
        return
    nb = json.loads(source[0])
    nb["cells"] = [c for c in nb["cells"]
                   if (c.get("metadata", {}).get("attn_course") or {}).get("role") not in COLAB_ROLES]
    source[0] = json.dumps(nb)
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        lines = "".join(cell["source"]).split("\n")
        for i, line in enumerate(lines):
            if line.startswith("# "):
                lines[i + 1:i + 1] = ["", page_links(app, docname)]
                cell["source"] = "\n".join(lines)
                source[0] = json.dumps(nb)
                return
    logger.warning("no '# ' title in %s: its links to the notebook are missing", docname)


# -- static widgets and alt text (on each notebook's doctree, once it is read) -----------
def _notebook(app: Sphinx, docname: str) -> dict | None:
    path = Path(app.env.doc2path(docname))
    if path.suffix != ".ipynb":
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _lecture_label(doctree: nodes.document, docname: str) -> str:
    title = next(iter(doctree.findall(nodes.title)), None)
    name = title.astext() if title is not None else docname
    kind = "lecture" if docname.startswith("notebooks/") else "exercise"
    return f"{kind} {name}"


def _section_heading(node: nodes.Node) -> str:
    parent = node.parent
    while parent is not None:
        if isinstance(parent, nodes.section) and parent.children and isinstance(
                parent[0], nodes.title):
            return parent[0].astext()
        parent = parent.parent
    return ""


def _cell(node: nodes.Node) -> nodes.Element | None:
    parent = node.parent
    while parent is not None:
        if isinstance(parent, nodes.container) and parent.get("nb_element") == "cell_code":
            return parent
        parent = parent.parent
    return None


def _png_width(path: Path) -> int | None:
    """The width in pixels of a PNG file, from its header; None for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return None
    if len(head) < 24 or not head.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    return struct.unpack(">I", head[16:20])[0]


def figure_title(code: str) -> str | None:
    """The title a cell gives its figure, when it is a plain string literal (not an f-string)."""
    titles = []
    for m in _TITLE_CALL.finditer(code):
        try:
            value = ast.literal_eval(m.group("lit"))
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, str) and value.strip():
            titles.append(value.replace("$", "").replace("\\", "").strip())
    return "; ".join(dict.fromkeys(titles)) or None


def _cell_code(cell: nodes.Element | None) -> str:
    if cell is None:
        return ""
    for block in cell.findall(nodes.literal_block):
        return block.astext()
    return ""


def process_notebook(app: Sphinx, doctree: nodes.document) -> None:
    docname = app.env.docname
    if not (docname.startswith("notebooks/") or docname.startswith("exercises/")):
        return
    # myst-nb's copy of the whole widget state (a script the page does not need)
    meta = getattr(app.env, "nb_metadata", {}).get(docname, {})
    meta.get("js_files", {}).pop("ipywidgets_state", None)
    label = _lecture_label(doctree, docname)

    figures = 0
    for image in list(doctree.findall(nodes.image)):
        if image.get("alt") or _cell(image) is None:
            continue
        figures += 1
        width = _png_width(Path(app.srcdir) / image["uri"].lstrip("/"))
        if width and "width" not in image:
            image["width"] = f"{round(width * FIGURE_ZOOM)}px"  # the page's CSS caps it at 100%
        title = figure_title(_cell_code(_cell(image)))
        heading = _section_heading(image)
        if title:
            image["alt"] = f"Figure {figures} of {label}: {title}"
        else:
            image["alt"] = f"Figure {figures} of {label}" + (f", section: {heading}" if heading else "")

    raws = [r for r in doctree.findall(nodes.raw) if VIEW_MIME in r.astext()]
    if not raws:
        return
    state = saved_state(_notebook(app, docname) or {})
    for n, raw in enumerate(raws, start=1):
        m = _WIDGET_SCRIPT.search(raw.astext())
        try:
            view = json.loads(m.group("body")) if m else {}
            if isinstance(view, str):
                view = json.loads(view)
            model_id = view["model_id"]
        except (ValueError, KeyError, TypeError):
            logger.warning("%s: a widget view this site cannot read", docname, location=raw)
            continue
        heading = _section_heading(raw)
        alt = f"Widget {n} of {label}" + (f", section: {heading}" if heading else "") \
            + ": its first picture, as saved"
        renderer = WidgetRenderer(state, alt=alt)
        html = renderer.render_view(model_id)
        if model_id not in state:
            logger.warning("%s: widget %s has no saved state; re-save the notebook with "
                           "its widget state", docname, model_id, location=raw)
        raw.replace_self(nodes.raw("", html, format="html"))


# -- links to repository files that are not pages -------------------------------------
class RepositoryLinks(SphinxPostTransform):
    """A relative link to a repository file that is not a page goes to the repository."""

    default_priority = 5
    formats = ("html",)

    def run(self, **kwargs) -> None:
        repo = self.config.repository_url.rstrip("/")
        root = Path(self.env.srcdir)
        for node in list(self.document.findall(addnodes.download_reference)):
            target = node.get("reftarget", "")
            if "://" in target:
                continue
            docdir = Path(self.env.doc2path(self.env.docname)).parent
            path = (docdir / target).resolve() if not target.startswith("/") else root / target[1:]
            try:
                rel = path.relative_to(root.resolve()).as_posix()
            except ValueError:
                continue
            kind = "tree" if path.is_dir() else "blob"
            ref = nodes.reference("", "", *node.children, refuri=f"{repo}/{kind}/main/{quote(rel)}",
                                  classes=["repository-link"])
            node.replace_self(ref)


class MissingFileLinks(SphinxPostTransform):
    """A relative link to a folder goes to the folder in the course's repository; so does
    a link to a file this copy of the course lacks (a learner's copy has no instructors'
    guide), with a warning."""

    default_priority = 8  # before MyST turns it into a dead "#..." link (9)
    formats = ("html",)

    def run(self, **kwargs) -> None:
        repo = self.config.repository_url.rstrip("/")
        root = Path(self.env.srcdir).resolve()
        for node in list(self.document.findall(addnodes.pending_xref)):
            target = node.get("reftarget", "")
            if node.get("reftype") != "myst" or node.get("refdomain") == "doc" \
                    or not re.fullmatch(r"[\w.-]*/[\w./-]*|[\w.-]+\.[a-z]{1,5}", target):
                continue
            docdir = Path(self.env.doc2path(node.get("refdoc", self.env.docname))).parent
            path = (docdir / target).resolve()
            if not path.is_relative_to(root) or path.is_file():
                continue
            rel = path.relative_to(root).as_posix()
            if path.is_dir():
                uri = f"{repo}/tree/main/{quote(rel)}"
            elif path.suffix:
                logger.warning("%s is not in this copy of the course: linked to the repository",
                               rel, location=node)
                uri = f"{repo}/blob/main/{quote(rel)}"
            else:
                continue
            node.replace_self(nodes.reference("", "", *node.children, refuri=uri,
                                              classes=["repository-link"]))


# -- build assets -----------------------------------------------------------------------
def copy_assets(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    import mathjax  # the PyPI package django-static-mathjax: MathJax's own distribution

    out = Path(app.outdir)
    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    target = out / "_static" / "mathjax"
    if not (target / MATHJAX_COMPONENT).exists():
        # the component the pages load, and what it loads on demand: TeX extensions, the
        # CommonHTML fonts, the menu and its accessibility tools
        for part in MATHJAX_PARTS:
            src = es5 / part
            if src.is_dir():
                shutil.copytree(src, target / part, dirs_exist_ok=True)
            else:
                (target / part).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target / part)
    home = out / f"{app.config.root_doc}.html"
    if home.exists() and app.config.root_doc != "index":
        shutil.copyfile(home, out / "index.html")


def setup(app: Sphinx) -> dict:
    app.add_config_value("repository_url", "", "env", types=frozenset({str}))
    app.connect("source-read", add_to_source)
    app.connect("doctree-read", process_notebook)
    app.add_post_transform(RepositoryLinks)
    app.add_post_transform(MissingFileLinks)
    app.connect("build-finished", copy_assets)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
