"""`make lab` opens on the course's landing page (README.md rendered), with no news prompt.

JupyterLab starts with :func:`attn_course.lab.lab_command`, exactly what `make lab` runs
(``attn-course lab``), in a copy of the course folder; its own user settings and
workspaces folders are empty temporary ones, so that no setting on this machine decides
the result.
"""

from __future__ import annotations

import json
import secrets
import shutil
import urllib.request

import pytest

from attn_course.lab import LANDING, SETTINGS, lab_command
from tests.browser.conftest import ARTIFACTS, ROOT, free_port, running_lab, server_args

pytestmark = pytest.mark.browser
NEWS = "official Jupyter news"


@pytest.fixture(scope="module")
def course_lab(tmp_path_factory):
    """JupyterLab as `make lab` starts it: yields (base_url, token)."""
    root = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / LANDING, root / LANDING)
    for folder in ("notebooks", "exercises"):
        shutil.copytree(ROOT / folder, root / folder)
    port, token = free_port(), secrets.token_hex(16)
    extra = [*server_args(port, token),
             f"--LabApp.user_settings_dir={tmp_path_factory.mktemp('user-settings')}",
             f"--LabApp.workspaces_dir={tmp_path_factory.mktemp('workspaces')}"]
    with running_lab(lab_command(root, extra), root, port, token, "lab-landing.log") as base:
        yield base, token


def _news_shown(page) -> bool:
    return page.get_by_text(NEWS).count() > 0


def _toasts(page) -> int:
    """Notifications on screen (JupyterLab shows them as react-toastify toasts)."""
    return page.locator(".Toastify__toast").count()


def _open_landing(page, base: str, token: str):
    # the address `make lab` opens in the browser: the server's root, with the token
    page.goto(f"{base}/?token={token}")
    preview = page.locator(".jp-MarkdownViewer .jp-RenderedMarkdown")
    preview.get_by_role("heading", name="Syllabus").wait_for()
    # the notifications arrive once JupyterLab is restored: give them time to show
    page.wait_for_selector("#jp-main-statusbar")
    page.wait_for_timeout(3000)
    return preview


def test_make_lab_opens_the_rendered_readme_without_news_prompt(page, course_lab):
    base, token = course_lab
    preview = _open_landing(page, base, token)
    page.screenshot(path=str(ARTIFACTS / "lab-landing.png"))
    assert "/lab/tree/README.md" in page.url
    assert page.locator(".jp-MainAreaWidget .jp-FileEditor").count() == 0  # not the editor
    assert not _news_shown(page), "JupyterLab asked about its news"
    assert _toasts(page) == 0, page.locator(".Toastify__toast").all_inner_texts()
    # the syllabus links open the lectures and exercises in JupyterLab
    preview.get_by_role("link", name="dot-product similarity").click()
    page.wait_for_selector(".jp-Notebook .jp-Cell", state="attached")
    page.get_by_role("tab", name="01_similarity.ipynb").wait_for()
    assert not _news_shown(page)


def test_without_the_course_settings_the_prompt_shows(page, course_lab):
    """The check above can fail: with the setting at JupyterLab's default, the prompt
    appears (set here in the temporary user settings, which win over the course's)."""
    base, token = course_lab
    url = f"{base}/lab/api/settings/@jupyterlab/apputils-extension:notification?token={token}"
    body = json.dumps({"raw": json.dumps({"fetchNews": "none", "checkForUpdates": False})})
    req = urllib.request.Request(url, data=body.encode(), method="PUT",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 204
    try:
        _open_landing(page, base, token)
        page.get_by_text(NEWS).first.wait_for(timeout=15_000)
        assert _toasts(page) >= 1  # what the first test counts is what shows the prompt
    finally:
        req = urllib.request.Request(url, data=json.dumps({"raw": "{}"}).encode(), method="PUT",
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).close()


def test_make_lab_uses_the_shared_command():
    makefile = (ROOT / "Makefile").read_text()
    lab_rule = makefile.split("\nlab:", 1)[1].split("\n\n", 1)[0]
    assert "attn-course lab" in lab_rule, lab_rule
    assert f"--LabApp.app_settings_dir={SETTINGS}" in lab_command()
    assert (SETTINGS / "overrides.json").is_file()
