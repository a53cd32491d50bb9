"""The lectures' slide metadata and the offline slides build (without a browser; the
browser tier opens lecture 09's deck and steps through it)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import nbformat
import pytest

from attn_course import slides

ROOT = Path(__file__).resolve().parents[1]
LECTURES = sorted((ROOT / "notebooks").glob("*.ipynb"))
KINDS = {"slide", "subslide", "fragment", "skip", "notes", "-"}


@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.stem)
def test_every_lecture_cell_has_a_slide_type(path):
    nb = nbformat.read(path, as_version=4)
    kinds = [c.metadata.get("slideshow", {}).get("slide_type") for c in nb.cells]
    assert set(kinds) <= KINDS, set(kinds) - KINDS
    first = next(i for i, c in enumerate(nb.cells) if kinds[i] != "skip")
    assert kinds[first] == "slide"  # the title opens the deck
    assert nb.cells[first].source.startswith("# ")


def test_stamper_has_nothing_left_to_do():
    assert slides.stamp_all(ROOT, check=True, out=io.StringIO()) == []


def test_default_layout_rules():
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    long_code = code("\n".join(f"x{i} = {i}" for i in range(40)))
    nb = nbformat.v4.new_notebook(cells=[
        md("[Open in Colab](x)"), code("pass"), md("# Title\n\ntext"), md("## Section"),
        code("a = 1"), md("### Detail"), md("more"), long_code, md("## Next")])
    nb.cells[0].metadata["attn_course"] = {"role": "colab-link"}
    nb.cells[1].metadata["attn_course"] = {"role": "colab-setup"}
    assert slides.default_slide_types(nb) == [
        "skip", "skip", "slide", "slide", "-", "subslide", "-", "subslide", "slide"]
    nb.cells[4].metadata["slideshow"] = {"slide_type": "fragment"}  # set by hand: kept
    assert slides.stamp_defaults(nb) == 8
    assert nb.cells[4].metadata["slideshow"]["slide_type"] == "fragment"
    assert slides.stamp_defaults(nb) == 0


def test_widgets_show_their_saved_picture_and_text():
    nb = nbformat.read(ROOT / "notebooks" / "09_flash_attention.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "TilingStepper()" in c.source)
    slides.freeze_widgets(nb)
    mimes = [m for out in cell.outputs for m in out.get("data", {})]
    assert mimes == ["text/html", "image/png"], mimes
    assert "widgets" not in nb.metadata


def test_built_deck_loads_nothing_from_the_network(tmp_path):
    (deck,) = slides.build([ROOT / "notebooks" / "02_softmax.ipynb"], tmp_path,
                           out=io.StringIO())
    html = deck.read_text()
    loaded = re.findall(r'<(?:script|link|img)\b[^>]*?(?:src|href)="([^"]+)"', html)
    loaded += re.findall(r"@import\s+url\(([^)]+)\)", html)
    assert loaded
    assert not [u for u in loaded if re.match(r"(https?:)?//", u)], loaded
    for rel in ("reveal.js/dist/reveal.js", "reveal.js/plugin/notes/notes.js",
                "reveal.js/dist/theme/white.css", "mathjax/tex-svg.js"):
        assert (tmp_path / rel).is_file(), rel
        assert rel in html or rel.startswith("reveal.js/dist/theme"), rel
