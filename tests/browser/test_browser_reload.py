"""Reloading the page: unsaved fields come back; during a run the form shows the run's settings."""

from __future__ import annotations

from playwright.sync_api import expect

from gui_helpers import field_input, is_checked, needs_engine, set_checkbox, set_field, start_run, wait_ready, wait_status, wait_step

STORED = "() => localStorage.getItem('lora_gui_form_v1')"  # lora_gui.form_store.STORAGE_KEY
RESTORE_WAIT = 30_000  # the load event may queue behind form checks on a busy machine
RUN_TIMEOUT = 900


def test_reload_keeps_unsaved_fields(open_page, shot):
    page = open_page()
    set_field(page, "network_dim", 24)
    set_field(page, "noise_offset", 0.05)  # in a closed Advanced group
    set_checkbox(page, "flip_aug", True)
    set_field(page, "sample_prompts", "a green square --w 64 --h 64")
    before = page.evaluate(STORED)
    set_field(page, "output_name", "unsaved_name")
    # the browser copies the form after each change; a busy browser may take a moment
    page.wait_for_function(f"before => ({STORED})() !== before", arg=before, timeout=RESTORE_WAIT)
    page.reload()
    wait_ready(page)
    expect(field_input(page, "network_dim")).to_have_value("24", timeout=RESTORE_WAIT)
    expect(field_input(page, "noise_offset")).to_have_value("0.05", timeout=RESTORE_WAIT)
    assert is_checked(page, "flip_aug")
    expect(field_input(page, "sample_prompts")).to_have_value("a green square --w 64 --h 64")
    expect(field_input(page, "output_name")).to_have_value("unsaved_name")
    shot(page, "restored")


@needs_engine
def test_reload_during_a_run_shows_the_runs_settings(open_page, shot, tmp_path):
    page = open_page()
    out = tmp_path / "out"
    set_field(page, "output_dir", out)
    set_field(page, "max_train_epochs", 50)
    set_field(page, "network_dim", 6)
    start_run(page)
    wait_step(page, 1, RUN_TIMEOUT)
    set_field(page, "network_dim", 10)  # edited after Start: not what runs
    page.reload()
    wait_ready(page)
    expect(field_input(page, "network_dim")).to_have_value("6", timeout=RESTORE_WAIT)
    expect(field_input(page, "output_dir")).to_have_value(str(out))
    # during the run Start is grey and cannot be pressed; Stop can
    expect(page.locator("#start-button")).to_be_disabled(timeout=RESTORE_WAIT)
    assert "primary" not in (page.get_attribute("#start-button", "class") or "")
    expect(page.locator("#stop-button")).to_be_enabled()
    shot(page, "reattached")
    page.click("#stop-button")
    assert wait_status(page, ("stopped", "completed", "failed"), RUN_TIMEOUT) == "stopped"
