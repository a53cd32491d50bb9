"""Sphinx configuration of the course's website (`make site`).

The source folder is the repository root: the README is the home page, and the pages
are the committed lecture notebooks, the exercise notebooks and docs/. Nothing is
executed (outputs are committed) and nothing is fetched, at build time or when a page is
read: MathJax, the theme, its fonts and the widget pictures are all in the build.
The course's own pieces (the table of contents, the links on each lecture, the static
widgets, alt text, local MathJax) are in _ext/course_site.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomllib

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "_ext"))

_pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
repository_url = _pyproject["project"]["urls"]["Repository"]

project = "attn-course"
author = "attn-course"
copyright = "the attn-course authors"  # noqa: A001 - Sphinx's name for it
release = _pyproject["project"]["version"]

extensions = ["myst_nb", "sphinx.ext.mathjax", "course_site"]

root_doc = "README"
include_patterns = ["README.md", "docs/*.md", "notebooks/*.ipynb", "exercises/*.ipynb"]
exclude_patterns = [".venv", "build", "site", "solutions", "tests", "attn_course", "benchmarks",
                    "test-artifacts", "gpu-check", "**/.ipynb_checkpoints", ".git", ".*"]
html_static_path = [str(HERE / "_static")]
html_css_files = ["course.css"]
html_favicon = str(HERE / "_static" / "favicon.svg")

# Notebooks are shown with their committed outputs, never run.
nb_execution_mode = "off"
# myst-nb would load require.js and @jupyter-widgets/html-manager from a CDN for pages
# with widget state; course_site renders the widgets statically instead.
nb_ipywidgets_js: dict = {}
nb_merge_streams = True

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "attrs_block"]
myst_heading_anchors = 3
myst_update_mathjax = False

# MathJax 3.2.2 from the PyPI package django-static-mathjax (the MathJax distribution
# itself; Django is not needed), copied into _static/mathjax by course_site.
mathjax_path = "mathjax/tex-mml-chtml.js"
mathjax3_config = {
    "tex": {
        "inlineMath": [["$", "$"], ["\\(", "\\)"]],
        "displayMath": [["$$", "$$"], ["\\[", "\\]"]],
        "processEscapes": True,
    },
    # only math nodes and notebook outputs, never prose that happens to hold a "$"
    "options": {
        "ignoreHtmlClass": "tex2jax_ignore|mathjax_ignore|document",
        "processHtmlClass": "tex2jax_process|mathjax_process|math|output|cell_output",
    },
}

html_theme = "sphinx_book_theme"
html_title = "attn-course: self-attention, from dot products to FlashAttention"
html_theme_options = {
    "repository_url": repository_url,
    "repository_branch": "main",
    "path_to_docs": "",
    "use_repository_button": True,
    "use_source_button": False,
    "use_download_button": False,
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "navigation_with_keys": False,
    # no analytics, no external icons or fonts
    "icon_links": [],
}
# light pages, like the notebooks' figures (pydata-sphinx-theme reads it from the context)
html_context = {"default_mode": "light"}
html_show_sourcelink = False
html_copy_source = False
html_last_updated_fmt = None
suppress_warnings = ["mystnb.unknown_mime_type"]
