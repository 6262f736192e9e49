"""Presets in the browser: the SDXL note only for SDXL presets, saving asks before replacing, kohya_ss import."""

from __future__ import annotations

import json
import os
from pathlib import Path

from playwright.sync_api import expect

from gui_helpers import ROOT, field_input, is_checked, pick, set_field

MESSAGE_WAIT = 30_000  # a form check may be queued ahead of the preset event on a busy machine


def _user_presets() -> Path:
    """The app under test keeps user presets in <its presets folder>/user (see conftest)."""
    return Path(os.environ["LORA_GUI_TEST_PRESETS"]) / "user"


def _save_as(page, name: str) -> None:
    page.locator("#preset-name textarea, #preset-name input").first.fill(name)
    page.click("#preset-save")


def test_preset_saved_from_an_sd1_form_loads_without_the_sdxl_note(open_page, shot):
    page = open_page()
    set_field(page, "network_dim", 12)
    _save_as(page, "sd1 settings")
    message = page.locator("#preset-message")
    expect(message).to_contain_text("Saved preset", timeout=MESSAGE_WAIT)
    pick(page, "preset-select", "sd1 settings")
    page.click("#preset-load")
    expect(message).to_contain_text("Loaded preset", timeout=MESSAGE_WAIT)
    expect(message).not_to_contain_text("SDXL")
    shot(page, "loaded")
    # the shipped SDXL preset over the demo's SD 1.x model still says what it is for
    pick(page, "preset-select", "sdxl_character")
    page.click("#preset-load")
    expect(message).to_contain_text("made for SDXL", timeout=MESSAGE_WAIT)


def test_saving_never_replaces_a_preset_without_asking(open_page, shot):
    page = open_page()
    message, overwrite = page.locator("#preset-message"), page.locator("#preset-overwrite")
    shipped = Path(os.environ["LORA_GUI_TEST_PRESETS"]) / "cpu_demo.json"
    shipped_text = shipped.read_text(encoding="utf-8")
    _save_as(page, "cpu_demo")
    expect(message).to_contain_text("comes with the app", timeout=MESSAGE_WAIT)
    expect(overwrite).to_be_hidden()
    assert shipped.read_text(encoding="utf-8") == shipped_text

    set_field(page, "network_dim", 8)
    _save_as(page, "mine")
    expect(message).to_contain_text("Saved preset", timeout=MESSAGE_WAIT)
    mine = _user_presets() / "mine.json"
    assert json.loads(mine.read_text(encoding="utf-8"))["network_dim"] == 8

    set_field(page, "network_dim", 16)
    page.click("#preset-save")
    expect(message).to_contain_text("already exists", timeout=MESSAGE_WAIT)
    expect(overwrite).to_be_visible()
    shot(page, "asks")
    assert json.loads(mine.read_text(encoding="utf-8"))["network_dim"] == 8  # not yet
    overwrite.click()
    expect(message).to_contain_text("Saved preset", timeout=MESSAGE_WAIT)
    expect(overwrite).to_be_hidden()
    assert json.loads(mine.read_text(encoding="utf-8"))["network_dim"] == 16


def test_kohya_config_with_blanks_and_xformers_loads_cleanly(open_page, shot, tmp_path):
    page = open_page()
    kohya = {"LoRA_type": "Standard", "sdxl": False, "sdxl_no_half_vae": True, "lr_scheduler_num_cycles": "",
             "lr_scheduler_power": "", "max_grad_norm": "", "xformers": "xformers", "network_dim": 20,
             "max_resolution": "64,64", "epoch": 2, "optimizer": "AdamW", "mixed_precision": "no",
             "pretrained_model_name_or_path": str(ROOT / "trainer" / "toyworld" / "model"), "train_data_dir": str(ROOT / "demo" / "img"),
             "output_dir": str(tmp_path / "out"), "output_name": "from_kohya", "reg_data_dir": "", "vae": ""}
    path = tmp_path / "kohya_sd15.json"
    path.write_text(json.dumps(kohya), encoding="utf-8")
    with page.expect_file_chooser() as chooser:
        page.click("#preset-upload")
    chooser.value.set_files(str(path))
    message = page.locator("#preset-message")
    expect(message).to_contain_text("Loaded kohya_ss config", timeout=MESSAGE_WAIT)
    expect(message).not_to_contain_text("could not be used")  # blanks are defaults, not errors
    expect(message).not_to_contain_text("SDXL")
    expect(message).to_contain_text("SDPA")  # no CUDA here: xformers is switched off, and it says so
    assert field_input(page, "network_dim").input_value() == "20"
    assert not is_checked(page, "xformers") and is_checked(page, "sdpa")
    expect(page.locator("#issues-overview .lg-ov-error")).to_have_count(0, timeout=MESSAGE_WAIT)
    shot(page, "kohya")
