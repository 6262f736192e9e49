"""Open TensorBoard: the button under the logging folder starts a real TensorBoard server and links to it."""

from __future__ import annotations

import re
import urllib.request

from playwright.sync_api import expect

from gui_helpers import set_field

START_TIMEOUT_MS = 150_000  # TensorBoard starts in seconds on a quiet machine, much slower on a busy one


def test_open_tensorboard_links_to_a_server_on_the_logging_folder(open_page, tmp_path):
    page = open_page()
    set_field(page, "logging_dir", tmp_path / "logs")
    page.click("#open-tensorboard")
    link = page.locator("#tensorboard-link a")
    expect(link).to_contain_text("TensorBoard on the logging folder", timeout=START_TIMEOUT_MS)
    url = link.get_attribute("href")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url)
    with urllib.request.urlopen(url, timeout=30) as answer:
        assert answer.status == 200 and b"TensorBoard" in answer.read()
