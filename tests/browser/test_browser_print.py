"""Print command: the command shown runs as printed, and the sd-scripts line is offered beside it."""

from __future__ import annotations

import subprocess

from playwright.sync_api import expect

from gui_helpers import needs_engine, set_field

RUN_TIMEOUT = 600  # the demo model, one epoch, on a busy 2-core machine


@needs_engine
def test_printed_command_runs_as_printed(open_page, shot, tmp_path):
    page = open_page()
    out = tmp_path / "printed run"  # a space: the command must be quoted
    set_field(page, "output_dir", out)
    set_field(page, "max_train_epochs", 1)
    set_field(page, "sample_every_n_epochs", 0)
    page.click("#print-button")
    expect(page.locator("#panel-notice")).to_contain_text("runs it as printed", timeout=30_000)
    command_box = page.locator("#command-line .cm-content")
    expect(command_box).to_contain_text("--config", timeout=15_000)
    command = command_box.inner_text().strip()
    assert str(out / "run.json") in command and (out / "run.json").is_file()
    sd_line = page.locator("#sd-scripts-line .cm-content")
    expect(sd_line).to_contain_text("accelerate launch")
    expect(sd_line).to_contain_text("train_network.py")
    expect(page.locator("#sd-scripts-notes")).to_contain_text("Every setting")
    shot(page, "printed")

    # the command, pasted into a shell somewhere else
    done = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "demo_lora.safetensors").is_file()
