"""Lecture 09's slides, built as `make slides` builds them, open offline in Chromium: three
steps forward move through the deck, with no console error and no request that fails or
leaves the machine."""

from __future__ import annotations

import re

import pytest

from attn_course import slides
from tests.browser.conftest import ARTIFACTS, ROOT

pytestmark = pytest.mark.browser
LECTURE = ROOT / "notebooks" / "09_flash_attention.ipynb"


@pytest.fixture(scope="module")
def deck(tmp_path_factory):
    out = tmp_path_factory.mktemp("slides")
    (path,) = slides.build([LECTURE], out)
    return path


def test_makefile_builds_the_slides_with_the_course_command():
    makefile = (ROOT / "Makefile").read_text()
    rule = makefile.split("\nslides:", 1)[1].split("\n\n", 1)[0]
    assert "attn-course slides" in rule, rule


def test_lecture_09_slides_step_offline(page, deck):
    errors, failed, outside = [], [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: failed.append(f"{r.url} {r.failure}"))

    def offline(route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:  # the deck must not need the network
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", offline)
    page.goto(deck.as_uri())
    page.wait_for_function("() => window.Reveal && Reveal.isReady()")
    # MathJax typeset the formulas (as SVG, no web fonts needed)
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
    page.evaluate("() => MathJax.startup.promise")
    assert page.locator("mjx-container svg").count() > 10
    total = page.evaluate("() => Reveal.getTotalSlides()")
    assert total >= 12, total
    seen = [page.evaluate("() => Reveal.getIndices()")]
    page.screenshot(path=str(ARTIFACTS / "slides-09-0.png"))
    page.locator(".reveal").click()
    for step in range(1, 4):
        page.keyboard.press("ArrowRight")
        page.wait_for_function("(prev) => JSON.stringify(Reveal.getIndices()) !== prev",
                               arg=str(seen[-1]).replace("'", '"').replace(" ", ""))
        seen.append(page.evaluate("() => Reveal.getIndices()"))
        # the transition has ended: the new slide sits inside the window
        page.wait_for_function(ON_SCREEN)
        page.screenshot(path=str(ARTIFACTS / f"slides-09-{step}.png"))
    horizontal = [s["h"] for s in seen]
    assert horizontal == sorted(horizontal), seen
    assert horizontal[-1] > horizontal[0], seen
    assert re.search(r"#/\d+", page.url), page.url  # the slide is in the address
    assert not outside, f"the deck requested {outside[:3]}"
    assert not failed, failed[:3]
    assert not errors, errors[:3]


ON_SCREEN = """() => {
    const r = document.querySelector('.reveal .slides > section.present').getBoundingClientRect();
    return r.width > 0 && r.left >= -1 && r.right <= window.innerWidth + 1;
}"""


def test_lecture_09_is_laid_out_by_hand():
    import nbformat

    nb = nbformat.read(LECTURE, as_version=4)
    kinds = [c.metadata.get("slideshow", {}).get("slide_type") for c in nb.cells]
    assert None not in kinds
    assert {"slide", "subslide", "fragment", "notes", "skip"} <= set(kinds)
    assert kinds != slides.default_slide_types(nb)
