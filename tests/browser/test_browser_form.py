"""The form in the browser: folder checks next to the fields, presets, language."""

from __future__ import annotations

import json
import shutil
import time

from playwright.sync_api import expect

from gui_helpers import ROOT, field_input, get_field, is_checked, pick, set_checkbox, set_field, status, wait_ready


def _loose_images(folder):
    folder.mkdir(parents=True)
    for i, image in enumerate(sorted((ROOT / "demo" / "img").rglob("*.png"))[:3]):
        shutil.copy(image, folder / f"photo_{i}.png")
    return folder


def test_loose_image_folder_is_explained_and_start_refuses(open_page, shot, tmp_path):
    page = open_page()
    loose = _loose_images(tmp_path / "my photos")
    set_field(page, "train_data_dir", loose)
    issues = page.locator("#field-train_data_dir-issues")
    expect(issues).to_contain_text("PARENT", timeout=15_000)
    expect(issues.locator("[data-code=dir_holds_images]")).to_have_count(1)
    expect(issues).to_contain_text(str(tmp_path))  # it names the folder above
    before = status(page)
    page.click("#start-button")
    expect(page.locator("#panel-notice")).to_contain_text("Not started")
    expect(page.locator("#issues-overview")).to_contain_text("Folders › Image folder")
    time.sleep(2)
    assert status(page) == before  # nothing started
    shot(page, "refused")


def test_preset_save_reload_load(open_page, shot, tmp_path):
    page = open_page()
    set_field(page, "network_dim", 24)
    set_field(page, "learning_rate", 0.0003)
    set_field(page, "unet_lr", "0.0002")
    pick(page, "field-optimizer_type", "Lion")
    set_checkbox(page, "shuffle_caption", True)
    set_field(page, "output_name", "roundtrip_lora")
    set_field(page, "sample_prompts", "a red disc --w 64 --h 64\na blue disc")
    page.locator("#preset-name textarea, #preset-name input").first.fill("roundtrip test")
    page.click("#preset-save")
    expect(page.locator("#preset-message")).to_contain_text("Saved preset")
    shot(page, "saved")

    page.reload()
    wait_ready(page)
    expect(field_input(page, "network_dim")).to_have_value("24", timeout=30_000)  # the form survives a reload
    pick(page, "preset-select", "cpu_demo")
    page.click("#preset-load")
    demo_dim = json.loads((ROOT / "presets" / "cpu_demo.json").read_text(encoding="utf-8"))["network_dim"]
    expect(field_input(page, "network_dim")).to_have_value(str(demo_dim), timeout=30_000)
    pick(page, "preset-select", "roundtrip test")
    page.click("#preset-load")
    expect(page.locator("#preset-message")).to_contain_text("Loaded preset")
    time.sleep(1)
    assert get_field(page, "network_dim") == "24"
    assert float(get_field(page, "learning_rate")) == 0.0003
    assert float(get_field(page, "unet_lr")) == 0.0002
    assert get_field(page, "optimizer_type") == "Lion"
    assert is_checked(page, "shuffle_caption")
    assert get_field(page, "output_name") == "roundtrip_lora"
    assert get_field(page, "sample_prompts") == "a red disc --w 64 --h 64\na blue disc"
    assert get_field(page, "train_data_dir").endswith("img")  # paths come back resolved
    shot(page, "loaded")


def test_japanese(open_page, shot):
    page = open_page()
    pick(page, "language-select", "日本語")
    # the switch relabels every part of the page, then checks the form again: seconds on a busy machine
    expect(page.locator("#tab-folders-button")).to_have_text("フォルダ", timeout=60_000)
    expect(page.locator("#tab-source_model-button")).to_have_text("モデル")
    expect(page.locator("#start-button")).to_contain_text("学習開始")
    page.click("#tab-folders-button")
    expect(page.locator("#field-train_data_dir")).to_contain_text("教師画像フォルダ")
    expect(page.locator("#field-reg_data_dir")).to_contain_text("正則化画像フォルダ")
    expect(page.locator("#dataset-summary")).to_contain_text("総ステップ数")
    set_field(page, "output_name", "bad/name")
    expect(page.locator("#field-output_name-issues")).to_contain_text("ファイル名に使えません")
    page.click("#tab-parameters-button")
    expect(page.locator("#field-learning_rate")).to_contain_text("学習率")
    shot(page, "japanese")


def test_browser_language_is_followed(open_page, shot):
    page = open_page(locale="ja-JP")
    expect(page.locator("#tab-folders-button")).to_have_text("フォルダ", timeout=15_000)
    expect(page.locator("#language-select input")).to_have_value("日本語")
    shot(page, "ja-browser")
