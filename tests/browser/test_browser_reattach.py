"""The page after the server was killed mid-training: a restarted server shows the run and stops it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from playwright.sync_api import expect

from gui_helpers import ROOT, get_field, needs_engine, progress_step, set_field, start_run, wait_ready, wait_status, wait_step

RUN_TIMEOUT = 900  # a busy 2-core machine


@contextmanager
def app_server(data_dir: Path, log_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """app.py on a free loopback port with its own data folder (the job record)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, LORA_GUI_DATA=str(data_dir), PYTHONUNBUFFERED="1")
    with open(log_path, "w", encoding="utf-8") as log:
        server = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--no-demo"], cwd=ROOT,
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while not _listening(port):
            assert server.poll() is None and time.time() < deadline, log_path.read_text(encoding="utf-8")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}", server
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _open(browser, url: str):
    ctx = browser.new_context(locale="en-US", viewport={"width": 1300, "height": 1000})
    page = ctx.new_page()
    page.set_default_timeout(30_000)
    page.goto(url)
    wait_ready(page)
    return ctx, page


@needs_engine
def test_a_restarted_server_reattaches_the_page_to_the_training(browser, shot, tmp_path):
    data = tmp_path / "data"
    with app_server(data, tmp_path / "app1.log") as (url, server):
        ctx, page = _open(browser, url)
        set_field(page, "output_dir", tmp_path / "out")
        set_field(page, "output_name", "survivor")
        set_field(page, "max_train_epochs", 50)  # 2000 steps: still running after the restart
        start_run(page)
        seen = wait_step(page, 2, RUN_TIMEOUT)
        server.send_signal(signal.SIGKILL)  # the server dies; the engine goes on
        server.wait(timeout=30)
        ctx.close()

    with app_server(data, tmp_path / "app2.log") as (url, _server):
        ctx, page = _open(browser, url)
        wait_step(page, seen + 1, RUN_TIMEOUT)  # following the live engine
        expect(page.locator("#stop-button")).to_be_enabled()
        assert get_field(page, "output_name") == "survivor"  # the form shows the running job's settings
        shot(page, "reattached")
        expect(page.locator("#start-button")).to_be_disabled(timeout=15_000)  # one run at a time
        page.click("#stop-button")
        assert wait_status(page, ("stopped", "completed", "failed"), RUN_TIMEOUT) == "stopped", \
            page.inner_text("#run-status")
        expect(page.locator("#saved-files")).to_contain_text("survivor-stopped.safetensors")
        assert progress_step(page) > seen
        ctx.close()
    assert (tmp_path / "out" / "survivor-stopped.safetensors").exists()
