"""Training through the page: the demo run, Stop, and reloading mid-run."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import expect

from gui_helpers import (get_field, needs_engine, progress_step, set_field, show_field, start_run, status,
                         wait_status, wait_step)

RUN_TIMEOUT = 900  # a busy 2-core machine; the demo alone takes well under a minute


@needs_engine
def test_demo_preset_trains_to_the_end(open_page, shot, tmp_path):
    page = open_page()
    # the page opens with the demo preset and the shipped toy model
    expect(page.locator("#preset-select input")).to_have_value("cpu_demo")
    model = page.locator("#field-pretrained_model_name_or_path textarea").input_value()
    assert model.replace("\\", "/").endswith("toyworld/model")
    expect(page.locator("#field-pretrained_model_name_or_path-issues")).to_contain_text("Stable Diffusion 1.x")
    shot(page, "1-opened")

    out = tmp_path / "out"
    set_field(page, "output_dir", out)  # a fresh folder: the demo's own may hold an earlier run
    expect(page.locator("#dataset-summary [data-total-steps]")).to_have_attribute("data-total-steps", "240")
    shot(page, "2-folders")

    start_run(page)
    expect(page.locator("#panel-notice")).to_contain_text("Training started")
    wait_step(page, 1, RUN_TIMEOUT)
    shot(page, "3-running")
    assert wait_status(page, ("completed", "failed", "stopped"), RUN_TIMEOUT) == "completed", \
        page.inner_text("#run-status")

    expect(page.locator("#run-progress .lg-progress-text")).to_have_text("100 %")
    expect(page.locator("#run-progress .lg-progress")).to_have_attribute("aria-valuenow", "100")
    assert int(page.get_attribute("#loss-chart svg", "data-points")) >= 100
    expect(page.locator("#sample-gallery img").first).to_be_visible()
    assert "step" in page.inner_text("#sample-gallery")
    expect(page.locator("#saved-files")).to_contain_text("demo_lora.safetensors")
    expect(page.locator("#saved-files")).to_contain_text("KB")
    assert (out / "demo_lora.safetensors").exists()
    page.wait_for_timeout(1500)
    shot(page, "4-completed")


@needs_engine
def test_stop_mid_run_saves_a_file(open_page, shot, tmp_path):
    page = open_page()
    set_field(page, "output_dir", tmp_path / "out")
    set_field(page, "output_name", "stop_me")
    set_field(page, "max_train_epochs", 50)  # 2000 steps: long enough to stop
    start_run(page)
    wait_step(page, 3, RUN_TIMEOUT)
    expect(page.locator("#resource-line")).to_contain_text(re.compile(r"RAM \d+\.\d GiB · CPU \d+ %"),
                                                           timeout=30_000)  # the engine's use of this machine
    page.click("#save-now-button")  # answered after the current step: a step LoRA in the files
    expect(page.locator("#panel-notice")).to_contain_text("Save requested")
    expect(page.locator("#saved-files")).to_contain_text("stop_me-step", timeout=RUN_TIMEOUT * 1000)
    before = page.locator("#sample-gallery img").count()
    page.click("#sample-now-button")  # the demo's 5 prompts drawn now
    expect(page.locator("#panel-notice")).to_contain_text("Samples requested")
    page.wait_for_function(f"document.querySelectorAll('#sample-gallery img').length > {before}",
                           timeout=RUN_TIMEOUT * 1000)
    page.click("#stop-button")
    expect(page.locator("#panel-notice")).to_contain_text("Stop requested")
    assert wait_status(page, ("stopped", "completed", "failed"), RUN_TIMEOUT) == "stopped", \
        page.inner_text("#run-status")
    expect(page.locator("#run-status")).to_contain_text("Stopped")
    expect(page.locator("#saved-files")).to_contain_text("stop_me-stopped.safetensors")
    assert (tmp_path / "out" / "stop_me-stopped.safetensors").exists()
    page.wait_for_timeout(1000)
    shot(page, "stopped")
    stopped_at = progress_step(page)

    # Resume: the output folder's states are listed under the resume field; Resume continues the run under its
    # own name (its files are not an "output exists" error then), from the step it stopped at
    set_field(page, "output_name", "something_else")  # the state's own settings come back with it
    show_field(page, "resume")
    page.click("#find-states")
    expect(page.locator("#resume-states input")).to_have_value(
        re.compile(rf"stop_me: stopped at step {stopped_at} "), timeout=30_000)
    start_run(page, "#resume-button")
    expect(page.locator("#panel-notice")).to_contain_text("Training started")
    assert get_field(page, "output_name") == "stop_me"
    assert get_field(page, "resume") == str(tmp_path / "out" / "stop_me-stopped-state")
    wait_step(page, stopped_at + 2, RUN_TIMEOUT)
    page.click("#stop-button")
    assert wait_status(page, ("stopped", "completed", "failed"), RUN_TIMEOUT) == "stopped", \
        page.inner_text("#run-status")


@needs_engine
def test_reload_mid_run_reattaches(open_page, shot, tmp_path):
    page = open_page()
    out = tmp_path / "out"
    set_field(page, "output_dir", out)
    set_field(page, "max_train_epochs", 50)
    start_run(page)
    before = wait_step(page, 2, RUN_TIMEOUT)

    page.reload()
    page.wait_for_selector("#run-progress .lg-progress", timeout=30_000)
    assert status(page) in ("running", "starting")
    wait_step(page, before + 3, RUN_TIMEOUT)  # the progress goes on after the reload
    # the form shows the running job's settings, not the page's defaults
    page.click("#tab-folders-button")
    expect(page.locator("#field-output_dir textarea")).to_have_value(str(out))
    shot(page, "after-reload")

    # a second page sees the same run, and a second Start is refused with a reason
    other = open_page()
    assert progress_step(other) >= before
    expect(other.locator("#start-button")).to_be_disabled(timeout=15_000)  # one run at a time

    page.click("#stop-button")
    assert wait_status(page, ("stopped", "completed", "failed"), RUN_TIMEOUT) == "stopped"
    assert Path(out / "demo_lora-stopped.safetensors").exists()
