"""The website's static widgets (site/_ext/widget_html.py) against the notebooks' real
saved widget state, and the site extension's page additions (site/_ext/course_site.py)."""

from __future__ import annotations

import base64
import json
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "site" / "_ext"))

import widget_html  # noqa: E402 - from site/_ext, put on the path above

WIDGET_LECTURES = ["02_softmax", "04_masks", "05_multihead", "09_flash_attention",
                   "12_interpretability", "14_distributed"]
PNG = b"\x89PNG\r\n\x1a\n"


class Tags(HTMLParser):
    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def all(self, tag: str) -> list[dict]:
        return [a for t, a in self.tags if t == tag]


def notebook(name: str) -> dict:
    return json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))


def views(nb: dict) -> list[str]:
    return [o["data"][widget_html.VIEW_MIME]["model_id"]
            for c in nb["cells"] for o in c.get("outputs", [])
            if widget_html.VIEW_MIME in o.get("data", {})]


def png_images(html: str) -> list[bytes]:
    out = []
    for img in Tags(html).all("img"):
        src = img.get("src", "")
        assert src.startswith("data:image/png;base64,"), src[:60]
        out.append(base64.b64decode(src.split(",", 1)[1]))
    return out


@pytest.mark.parametrize("name", WIDGET_LECTURES)
def test_every_saved_widget_view_shows_a_picture_and_the_kernel_note(name):
    nb = notebook(name)
    state = widget_html.saved_state(nb)
    ids = views(nb)
    assert ids, f"{name} has no widget view"
    for model_id in ids:
        assert model_id in state, f"{name}: view {model_id} has no saved state"
        html = widget_html.render_view(state, model_id, alt=f"widget of {name}")
        images = png_images(html)
        assert images
        assert all(img.startswith(PNG) and len(img) > 1000 for img in images)
        assert all(img.get("alt") for img in Tags(html).all("img"))
        assert widget_html.LIVE_NOTE in html.replace("&#x27;", "'")
        assert "widget-unknown" not in html
        assert "widget-missing" not in html


def test_lecture_09_widget_shows_its_saved_controls_and_picture():
    nb = notebook("09_flash_attention")
    state = widget_html.saved_state(nb)
    (model_id,) = views(nb)
    html = widget_html.render_view(state, model_id)
    tags = Tags(html)
    assert len(png_images(html)) == 1
    selects = tags.all("select")
    assert len(selects) == 2
    assert all("disabled" in a for a in selects)
    dropdowns = [m["state"] for m in state.values() if m["model_name"] == "DropdownModel"]
    for dd in dropdowns:
        selected = dd["_options_labels"][dd["index"]]
        assert f"{dd['description']}</label>" in html
        assert f"<option selected>{selected}</option>" in html
    (slider,) = [a for a in tags.all("input") if a.get("type") == "range"]
    saved = next(m["state"] for m in state.values() if m["model_name"] == "IntSliderModel")
    assert slider["value"] == str(saved["value"])
    assert "disabled" in slider
    assert "HBM traffic so far <b>" in html  # the HTML widget's saved text, as HTML


def test_controls_of_every_kind_render_disabled_with_their_saved_value():
    def model(name, **state):
        return {"model_name": name, "model_module": "@jupyter-widgets/controls", "state": state}

    state = {
        "box": model("VBoxModel", children=[f"IPY_MODEL_{k}" for k in
                                            ("sel", "log", "tb", "cb", "out", "odd", "gone", "box")]),
        "sel": model("SelectionSliderModel", description="d_k", _options_labels=["1", "2", "4"],
                     index=2),
        "log": model("FloatLogSliderModel", description="temp", base=10.0, min=-2.0, max=2.0,
                     step=0.05, value=0.1, readout_format=".3g"),
        "tb": model("ToggleButtonsModel", description="<b>query</b>", _options_labels=["a", "b"],
                    index=1),
        "cb": model("CheckboxModel", description="causal", value=True),
        "out": model("OutputModel", outputs=[
            {"output_type": "stream", "name": "stdout", "text": "hello <world>\n"},
            {"output_type": "display_data", "data": {"image/png": base64.b64encode(PNG).decode()}}]),
        "odd": model("FancyNewModel"),
    }
    html = widget_html.render_view(state, "box", alt="pic")
    assert '<output class="widget-readout">4</output>' in html
    assert 'value="2"' in html  # the selection slider's position is its index
    assert '<output class="widget-readout">0.1</output>' in html
    assert 'value="-1.0"' in html
    assert "&lt;b&gt;query&lt;/b&gt;" in html  # descriptions are text unless allowed as HTML
    assert 'mod-active" aria-pressed="true">b</button>' in html
    assert '<input type="checkbox" disabled checked>' in html
    assert "hello &lt;world&gt;" in html
    assert len(png_images(html)) == 1
    assert "(FancyNew widget)" in html  # an unknown widget is named, not dropped
    assert "widget-missing" in html  # a child without saved state says so
    assert html.count("widget-vbox") == 1  # a box inside itself is not followed


def test_a_notebook_without_widget_state_has_none():
    assert widget_html.saved_state(notebook("01_similarity")) == {}


# -- the site extension ----------------------------------------------------------------
@pytest.fixture
def course_site():
    pytest.importorskip("sphinx", reason="pip install -e '.[site]' (the 'site' extra)")
    import course_site

    return course_site


def fake_app(course_site):
    import tomllib

    url = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    return SimpleNamespace(srcdir=str(ROOT),
                           config=SimpleNamespace(root_doc="README", repository_url=url)), url


def test_home_page_gets_the_table_of_contents_in_syllabus_order(course_site):
    app, _ = fake_app(course_site)
    source = ["# home\n"]
    course_site.add_to_source(app, "README", source)
    entries = [line for line in source[0].splitlines() if line.startswith(("notebooks/", "exercises/"))]
    lectures = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert entries[:len(lectures)] == [f"notebooks/{n}" for n in lectures]
    assert entries[len(lectures):] == [f"exercises/{n}" for n in lectures]
    assert "docs/notation" in source[0]
    assert "docs/instructors" in source[0]


def test_lecture_page_links_to_its_notebook_and_exercises_without_colab_cells(course_site):
    app, url = fake_app(course_site)
    source = [(ROOT / "notebooks" / "09_flash_attention.ipynb").read_text(encoding="utf-8")]
    course_site.add_to_source(app, "notebooks/09_flash_attention", source)
    nb = json.loads(source[0])
    roles = {(c.get("metadata", {}).get("attn_course") or {}).get("role") for c in nb["cells"]}
    assert not roles & course_site.COLAB_ROLES
    title_cell = next(c for c in nb["cells"] if "# 09" in "".join(c["source"]))
    text = "".join(title_cell["source"])
    assert f"({url}/blob/main/notebooks/09_flash_attention.ipynb)" in text
    assert "(../exercises/09_flash_attention.ipynb)" in text
    assert text.index("# 09") < text.index("{.lecture-links}")


@pytest.mark.parametrize(("code", "title"), [
    ('ax.set_title("score variance grows like D unless scaled")\nplt.show()',
     "score variance grows like D unless scaled"),
    ('ax.set_title("softmax(logits / $\\\\tau$)")', "softmax(logits / tau)"),
    ('ax.set_title(f"layer {layer}, head {head}", fontsize=9)', None),
    ("plt.show()", None),
])
def test_figure_title_is_taken_from_plain_string_titles_only(course_site, code, title):
    assert course_site.figure_title(code) == title
