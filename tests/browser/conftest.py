"""JupyterLab in headless Chromium: the course as a learner's browser shows it.

Needs Debian's chromium at /usr/bin/chromium (or $CHROMIUM) and the Python package
playwright; no browser is ever downloaded. Without them these tests are skipped with
the command that installs them (`make browser-deps`).

A fixture starts JupyterLab on 127.0.0.1 on a free port, with a temporary root folder
(holding copies of the notebooks) and a temporary workspaces folder, and always stops
it, even when a test fails. Screenshots go to test-artifacts/browser/.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_args(port: int, token: str) -> list[str]:
    """JupyterLab's flags for a test server on 127.0.0.1 (and --allow-root as root)."""
    args = ["--no-browser", "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={token}"]
    return [*args, "--allow-root"] if os.geteuid() == 0 else args


@contextlib.contextmanager
def running_lab(cmd: list[str], cwd: Path, port: int, token: str, log_name: str):
    """Start JupyterLab with ``cmd``, wait until it answers, yield its base URL; always
    stop it (its whole process group), even when a test fails. Its log goes to
    test-artifacts/browser/``log_name``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = open(ARTIFACTS / log_name, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    json.load(r)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start; see {ARTIFACTS / log_name}") from None
                time.sleep(0.5)
        yield base
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """A running JupyterLab: yields (base_url, token, root_dir)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: run `make browser-deps` (apt-get install chromium)")
    pytest.importorskip("playwright", reason="pip install playwright (the 'browser' extra)")
    root = tmp_path_factory.mktemp("lab-root")
    workspaces = tmp_path_factory.mktemp("lab-workspaces")
    source = Path(os.environ.get("BROWSER_NOTEBOOKS", ROOT / "notebooks"))
    for nb in source.glob("*.ipynb"):
        shutil.copy(nb, root / nb.name)
    port, token = free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyterlab", *server_args(port, token),
           f"--ServerApp.root_dir={root}", f"--LabApp.workspaces_dir={workspaces}",
           "--ServerApp.disable_check_xsrf=True"]
    with running_lab(cmd, root, port, token, "jupyterlab.log") as base:
        yield base, token, root


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (one per session, shared by JupyterLab's tests and the website's)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: run `make browser-deps` (apt-get install chromium)")
    pytest.importorskip("playwright", reason="pip install playwright (the 'browser' extra)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}-FAILED.png"))
    context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
