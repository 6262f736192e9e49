"""Browser tests: the real app in a subprocess, driven by headless Chromium through Playwright.

Chromium comes from the system (Debian: `apt-get install chromium`, /usr/bin/chromium); Playwright
never downloads a browser here. Set LORA_GUI_SKIP_BROWSER=1 to skip these tests, or
LORA_GUI_CHROMIUM=/path/to/chrome to use another binary. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = os.environ.get("LORA_GUI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
START_TIMEOUT = 900  # the first start creates the demo model (a minute or more on a busy 2-core machine)

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover
    sync_playwright = None

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gui_helpers import ROOT, stop_if_running, wait_ready  # noqa: E402


def pytest_collection_modifyitems(config, items):
    reason = None
    if os.environ.get("LORA_GUI_SKIP_BROWSER") == "1":
        reason = "LORA_GUI_SKIP_BROWSER=1"
    elif sync_playwright is None:
        reason = "playwright is not installed"
    elif not Path(CHROMIUM).exists():
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if reason:
        for item in items:
            if "tests/browser" in str(item.fspath).replace("\\", "/"):
                item.add_marker(pytest.mark.skip(reason=reason))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def hub_url(tiny_sd1) -> Iterator[str]:
    """A hub-shaped local server (tests/hub_server.py) serving the tiny SD1 model as TEST_REPO."""
    sys.path.insert(0, str(ROOT / "tests"))
    from hub_server import TEST_REPO, HubServer

    with HubServer() as hub:
        hub.add_folder(TEST_REPO, tiny_sd1)
        yield hub.url


@pytest.fixture(scope="session")
def app_url(tmp_path_factory, hub_url) -> Iterator[str]:
    """The app on a free localhost port, with a private copy of the presets folder; its Hugging Face Hub is
    the local hub server, with a private cache."""
    presets = tmp_path_factory.mktemp("presets")
    for preset in (ROOT / "presets").glob("*.json"):
        shutil.copy(preset, presets / preset.name)
    os.environ["LORA_GUI_TEST_PRESETS"] = str(presets)  # the tests look at what the app saved there
    port = free_port()
    log = open(tmp_path_factory.mktemp("app") / "app.log", "w", encoding="utf-8")
    # a private data folder too: the job record of another test session's app is not this one's job
    env = dict(os.environ, LORA_GUI_PRESETS=str(presets), LORA_GUI_DATA=str(tmp_path_factory.mktemp("data")),
               PYTHONUNBUFFERED="1", HF_ENDPOINT=hub_url, HF_HOME=str(tmp_path_factory.mktemp("hf-home")))
    for offline in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # the tests' engine setting; the app is online when asked
        env.pop(offline, None)
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + START_TIMEOUT
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode}; see {log.name}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError(f"the app did not start in {START_TIMEOUT}s; see {log.name}")
    yield f"http://127.0.0.1:{port}"
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="session")
def browser() -> Iterator["Browser"]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def open_page(browser, app_url, request):
    """open_page(locale="en-US") -> a page with the app loaded; runs left behind are stopped afterwards."""
    contexts = []

    def _open(locale: str = "en-US", query: str = "") -> "Page":
        ctx = browser.new_context(locale=locale, viewport={"width": 1300, "height": 1000})
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(30_000)
        page.goto(app_url + query)
        wait_ready(page)
        return page

    yield _open
    for ctx in contexts:
        for page in ctx.pages:
            stop_if_running(page)
        ctx.close()


UNSTICK = """() => { const s = document.createElement('style'); s.id = 'lg-unstick';
  s.textContent = '#action-bar { position: static !important; }'; document.head.appendChild(s); }"""
RESTICK = "() => { const s = document.getElementById('lg-unstick'); if (s) s.remove(); }"


@pytest.fixture
def shot(request):
    """shot(page, "state") saves test-artifacts/<test>-<state>.png (the whole page; full_page=False: the window)."""
    ARTIFACTS.mkdir(exist_ok=True)

    def _shot(page: "Page", state: str, *, full_page: bool = True) -> Path:
        name = request.node.name.replace("[", "-").replace("]", "")  # test_x[en] -> test_x-en
        path = ARTIFACTS / f"{name}-{state}.png"
        if not full_page:
            page.screenshot(path=str(path))
            return path
        # the action bar sticks to the window's bottom edge; in a whole-page picture it would cover
        # whatever lies there, so it is shown in its place under the tabs for the picture
        page.evaluate(UNSTICK)
        try:
            page.screenshot(path=str(path), full_page=True)
        finally:
            page.evaluate(RESTICK)
        return path

    return _shot
