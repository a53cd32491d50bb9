"""The course's website (`make site`) in headless Chromium, with no network.

A session fixture builds the site from the committed notebooks into a temporary folder
(as `make site` does; SITE_DIR=build/site tests an existing build instead) and serves it
on 127.0.0.1. Every request to any other host is aborted and counted as a failure, so a
page that needs the internet (a CDN script, a web font) fails here.
"""

from __future__ import annotations

import functools
import subprocess
import threading
import urllib.error
import urllib.request
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import pytest

from tests.browser.conftest import ARTIFACTS, ROOT

pytestmark = pytest.mark.browser

LECTURES = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXERCISES = sorted(p.stem for p in (ROOT / "exercises").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="session")
def site_dir(tmp_path_factory) -> Path:
    import os

    given = os.environ.get("SITE_DIR")
    if given:
        path = Path(given)
        assert (path / "index.html").exists(), f"SITE_DIR={given} holds no built site"
        return path
    pytest.importorskip("myst_nb", reason="pip install -e '.[site]' (the 'site' extra)")
    base = tmp_path_factory.mktemp("site")
    out = base / "html"
    # the README's command, into a temporary folder
    cmd = ["make", "--no-print-directory", "site", f"SITE_DIR={out}"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"the site build failed:\n{done.stdout}\n{done.stderr}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "site-build-warnings.txt").write_text(done.stderr)
    # a link to a missing page or anchor is a Sphinx warning: none is allowed
    assert "WARNING" not in done.stderr, f"the site build warned:\n{done.stderr}"
    return out


@pytest.fixture(scope="session")
def site(site_dir):
    """The built site on a local HTTP server: yields its base URL."""
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site_dir)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Watch:
    """Console errors, failed requests and any request that leaves 127.0.0.1."""

    def __init__(self, page, base: str):
        self.errors: list[str] = []
        self.origin = urlparse(base).netloc
        page.on("console", lambda m: m.type == "error" and self.errors.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url}"))
        page.on("response", lambda r: r.status >= 400 and self.errors.append(f"HTTP {r.status}: {r.url}"))
        page.route("**/*", self._route)

    def _route(self, route):
        url = route.request.url
        if url.startswith("data:") or urlparse(url).netloc == self.origin:
            route.continue_()
        else:
            self.errors.append(f"request to the internet: {url}")
            route.abort()


def wait_for_math(page) -> int:
    """Waits until MathJax has typeset the page; returns the number of typeset formulas."""
    if page.locator("span.math, div.math").count() == 0:
        return 0
    page.wait_for_function(
        "() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=60_000)
    page.evaluate("() => MathJax.startup.promise")
    return page.locator("mjx-container").count()


def load_all_images(page) -> list[str]:
    """Loads every image (lazy ones too) and returns those that did not load."""
    page.evaluate("() => document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
    page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=60_000)
    return page.evaluate(
        "() => [...document.images].filter(i => !(i.naturalWidth > 0)).map(i => i.src.slice(0, 120))")


@pytest.mark.parametrize("lecture", LECTURES)
def test_lecture_page(page, site, lecture):
    watch = Watch(page, site)
    page.goto(f"{site}/notebooks/{lecture}.html", wait_until="load")
    typeset = wait_for_math(page)
    broken = load_all_images(page)
    assert page.locator("span.math, div.math").count() == 0 or typeset > 0, "math was not typeset"
    assert page.locator("mjx-merror").count() == 0, "MathJax reported an error"
    assert not broken, f"images that did not load: {broken}"
    images = page.locator("img")
    for i in range(images.count()):
        assert images.nth(i).get_attribute("alt"), f"image {i} of {lecture} has no alt text"
    links = page.locator(".lecture-links a")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    assert any(h.endswith(f"/notebooks/{lecture}.ipynb") for h in hrefs), hrefs
    if lecture in EXERCISES:
        assert f"../exercises/{lecture}.html" in hrefs, hrefs
    page.screenshot(path=str(ARTIFACTS / f"site-{lecture}.png"))
    assert not watch.errors, "\n".join(watch.errors)


def test_home_page_and_table_of_contents(page, site):
    watch = Watch(page, site)
    page.goto(f"{site}/index.html", wait_until="load")
    nav = page.locator("nav.bd-links a.reference.internal")
    targets = [nav.nth(i).get_attribute("href") for i in range(nav.count())]
    lectures = [t for t in targets if t.startswith("notebooks/")]
    assert lectures == [f"notebooks/{n}.html" for n in LECTURES], targets
    assert [t for t in targets if t.startswith("exercises/")] == [
        f"exercises/{n}.html" for n in EXERCISES], targets
    for doc in ("notation", "exercises", "instructors"):
        assert f"docs/{doc}.html" in targets, targets
    page.screenshot(path=str(ARTIFACTS / "site-home.png"), full_page=False)
    assert not watch.errors, "\n".join(watch.errors)


def test_widget_of_lecture_09_shows_its_picture(page, site):
    watch = Watch(page, site)
    page.goto(f"{site}/notebooks/09_flash_attention.html", wait_until="load")
    widget = page.locator(".widget-static").first
    widget.scroll_into_view_if_needed()
    img = widget.locator("img.widget-image").first
    img.wait_for(state="visible")
    assert img.evaluate("i => i.complete && i.naturalWidth") > 0
    assert widget.locator("select[disabled]").count() >= 2
    assert "needs a running kernel" in widget.locator(".widget-static-note").inner_text()
    widget.screenshot(path=str(ARTIFACTS / "site-09-widget.png"))
    assert not watch.errors, "\n".join(watch.errors)


def test_search_finds_the_flash_attention_lecture(page, site):
    watch = Watch(page, site)
    page.goto(f"{site}/search.html?q=online+softmax", wait_until="load")
    page.wait_for_selector("#search-results li a", timeout=60_000)
    hrefs = page.eval_on_selector_all("#search-results li a", "as => as.map(a => a.href)")
    assert any("notebooks/09_flash_attention.html" in h for h in hrefs), hrefs
    page.screenshot(path=str(ARTIFACTS / "site-search.png"))
    assert not watch.errors, "\n".join(watch.errors)


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        for key in ("href", "src"):
            value = attrs.get(key)
            if value and not value.startswith(("data:", "mailto:", "javascript:")):
                self.links.append(value)


def _parse(url: str) -> tuple[int, _Links]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, _Links()
    parsed = _Links()
    if url.split("?")[0].endswith(".html"):
        parsed.feed(body.decode("utf-8", "replace"))
    return status, parsed


@pytest.mark.usefixtures("browser")  # no Chromium: skipped with the rest of the tier
def test_no_broken_internal_link(site, site_dir):
    """Every same-origin href and src of every page answers 200; every #anchor exists."""
    pages = sorted(p.relative_to(site_dir).as_posix() for p in site_dir.rglob("*.html")
                   if not p.relative_to(site_dir).as_posix().startswith("_"))
    assert len(pages) >= len(LECTURES) + len(EXERCISES) + 4
    fetched: dict[str, tuple[int, _Links]] = {}

    def get(url: str) -> tuple[int, _Links]:
        if url not in fetched:
            fetched[url] = _parse(url)
        return fetched[url]

    broken = []
    for name in pages:
        url = f"{site}/{name}"
        status, parsed = get(url)
        assert status == 200, name
        for link in parsed.links:
            target = urljoin(url, link)
            if urlparse(target).netloc != urlparse(site).netloc:
                continue
            bare, fragment = urldefrag(target)
            code, target_page = get(bare.split("?")[0])
            if code != 200:
                broken.append(f"{name}: {link} -> HTTP {code}")
            elif fragment and bare.endswith(".html") and unquote(fragment) not in target_page.ids:
                broken.append(f"{name}: {link} -> no anchor #{fragment}")
    assert not broken, "broken internal links:\n" + "\n".join(broken)
