"""Open each widget notebook in JupyterLab, run it, move a control, see the picture change."""

from __future__ import annotations

import pytest

from tests.browser.conftest import ARTIFACTS

pytestmark = pytest.mark.browser


def open_and_run(page, lab, name: str) -> None:
    base, token, _ = lab
    page.goto(f"{base}/lab/tree/{name}?reset&token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", state="attached")
    page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=90_000)
    page.locator("#jp-MainMenu").get_by_text("Run", exact=True).click()
    page.locator(".lm-Menu-content").get_by_text("Run All Cells", exact=True).click()
    # Every cell has run when no prompt shows [*] and the kernel is idle again.
    page.wait_for_function(
        """() => [...document.querySelectorAll('.jp-InputPrompt')]
                 .every(p => !p.textContent.includes('*'))""", timeout=120_000)
    page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=90_000)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
    assert not tracebacks, f"{name} raised while running: {tracebacks[0][:500]}"


def image_of(widget):
    """The PNG the widget shows now (its <img> element's pixels)."""
    img = widget.locator("img.widget-image").first
    img.wait_for(state="visible")
    return img.screenshot()


def wait_until_changed(widget, before: bytes, what: str, timeout_s: float = 30) -> bytes:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = image_of(widget)
        if now != before:
            return now
        time.sleep(0.3)
    raise AssertionError(f"the picture did not change after {what}")


def widget_box(page, class_name: str):
    """The output area holding the widget whose controls include ``class_name``."""
    box = page.locator(".jp-OutputArea-output").filter(has=page.locator(f".{class_name}")).filter(
        has=page.locator("img.widget-image")).first
    box.scroll_into_view_if_needed()
    return box


def move_slider(box, description: str, key: str) -> None:
    """Focus the slider's handle and press a key (End: maximum, Home: minimum, arrows: a step)."""
    slider = box.locator(".widget-slider").filter(has_text=description).first
    handle = slider.locator(".noUi-handle").first
    handle.focus()
    handle.press(key)


def test_softmax_temperature_in_notebook_02(page, lab):
    open_and_run(page, lab, "02_softmax.ipynb")
    box = widget_box(page, "widget-slider")
    before = image_of(box)
    box.screenshot(path=str(ARTIFACTS / "02-before.png"))
    move_slider(box, "d_k", "End")
    after = wait_until_changed(box, before, "moving the d_k slider")
    box.screenshot(path=str(ARTIFACTS / "02-after-d_k.png"))
    move_slider(box, "temperature", "Home")
    wait_until_changed(box, after, "moving the temperature slider")
    box.screenshot(path=str(ARTIFACTS / "02-after-temperature.png"))


def test_attention_explorer_in_notebook_04(page, lab):
    open_and_run(page, lab, "04_masks.ipynb")
    box = widget_box(page, "widget-toggle-buttons")
    before = image_of(box)
    box.screenshot(path=str(ARTIFACTS / "04-before.png"))
    box.locator(".widget-toggle-button").nth(2).click()  # select the third token as query
    after = wait_until_changed(box, before, "selecting a query token")
    assert "weight of" in box.locator(".widget-html").first.inner_text()
    box.locator(".widget-checkbox input").first.check()  # causal mask on
    wait_until_changed(box, after, "switching the causal mask on")
    box.screenshot(path=str(ARTIFACTS / "04-after.png"))


def test_head_viewer_in_notebook_05(page, lab):
    open_and_run(page, lab, "05_multihead.ipynb")
    box = widget_box(page, "widget-dropdown")
    before = image_of(box)
    box.screenshot(path=str(ARTIFACTS / "05-before.png"))
    box.locator(".widget-dropdown select").nth(1).select_option(label="1")  # head 1 up close
    wait_until_changed(box, before, "picking head 1")
    box.screenshot(path=str(ARTIFACTS / "05-after.png"))
