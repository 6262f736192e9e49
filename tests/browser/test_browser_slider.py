"""Slider LoRA tab through the page: the copy-machine method on two tiny image folders with the demo
model, followed in the training bar (stages, 100 %), then the preview grid and the files."""

from __future__ import annotations

import re
import shutil
import time

from playwright.sync_api import expect

from gui_helpers import ROOT, needs_engine, start_run, status, wait_status

RUN_TIMEOUT = 900


def _fill(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id}").locator("textarea, input").first
    box.fill(str(value))
    box.press("Tab")


def _folders(tmp_path):
    # the toy world's size pair, written by the app's first start beside the demo images
    low, high = tmp_path / "small", tmp_path / "big"
    for folder in (low, high):
        folder.mkdir()
        for image in sorted((ROOT / "demo" / "slider" / folder.name).glob("*.png"))[:2]:
            shutil.copy(image, folder / image.name)
    return low, high


@needs_engine
def test_copy_machine_slider_with_stages_and_preview_grid(open_page, shot, tmp_path):
    low, high = _folders(tmp_path)
    out = tmp_path / "out"
    page = open_page()
    page.click("#tab-slider-button")
    # the defaults of the method (presets/sd15_slider_pair.json)
    defaults = (("slider-network-dim", "4"), ("slider-network-alpha", "1"), ("slider-learning-rate", "0.00005"),
                ("slider-max-train-steps", "400"), ("slider-lr-warmup-steps", "20"), ("slider-ratio", "1.5"),
                ("slider-new-rank", "8"), ("slider-resize-param", "0.75"))
    for elem_id, value in defaults:
        expect(page.locator(f"#{elem_id} input")).to_have_value(value)
    expect(page.locator("#slider-optimizer-type input")).to_have_value("CAME")
    # the demo model's family, as on the Source model tab
    expect(page.locator("#slider-model-issues")).to_contain_text("Stable Diffusion 1.x")

    _fill(page, "slider-pair-0-name", "front")
    _fill(page, "slider-pair-0-low", low)
    _fill(page, "slider-pair-0-high", high)
    _fill(page, "slider-prompt", "sks disc")
    _fill(page, "slider-output-dir", out)
    _fill(page, "slider-output-name", "disc_size")
    _fill(page, "slider-max-train-steps", 4)
    _fill(page, "slider-lr-warmup-steps", 0)
    _fill(page, "slider-resolution", 64)
    page.click("#slider-section-preview > .label-wrap")
    _fill(page, "slider-preview-steps", 2)
    time.sleep(1.5)  # the form check
    expect(page.locator("#slider-pairs-issues")).to_be_empty()
    shot(page, "1-filled")

    start_run(page, "#slider-start")
    expect(page.locator("#slider-notice")).to_contain_text("Slider LoRA started")
    stage = page.locator("#run-progress .lg-stage")
    expect(stage).to_contain_text(re.compile(r"LoRA [12] of 2: front / (low \(A\)|high \(B\))"),
                                  timeout=RUN_TIMEOUT * 1000)
    shot(page, "2-running", full_page=False)
    assert wait_status(page, ("completed", "failed", "stopped"), RUN_TIMEOUT) == "completed", \
        page.inner_text("#run-status")
    expect(page.locator("#run-progress .lg-progress-text")).to_have_text("100 %")
    expect(page.locator("#run-progress .lg-progress")).to_have_attribute("data-step", "8")

    # the result on the slider tab: the preview grid (weights -1 ... 1) and the files
    expect(page.locator("#slider-preview img")).to_be_visible(timeout=30_000)
    files = page.locator("#slider-files")
    expect(files).to_contain_text("disc_size.safetensors")
    expect(files).to_contain_text("front-low.safetensors")
    expect(files).to_contain_text("disc_size-preview.png")
    assert (out / "disc_size.safetensors").is_file() and (out / "disc_size-preview.png").is_file()
    assert status(page) == "completed"
    # the training panel's samples show the whole (wide) grid, not a cropped square of it
    thumb = page.locator("#sample-gallery .thumbnail-item img").first
    thumb.scroll_into_view_if_needed()
    fit = thumb.evaluate("""img => { const box = img.closest('.grid-wrap').getBoundingClientRect();
        const cell = img.getBoundingClientRect(); const ratio = img.naturalWidth / img.naturalHeight;
        const shown = Math.min(cell.width, cell.height * ratio);  // object-fit: contain
        return {inside: cell.top >= box.top - 1 && cell.bottom <= box.bottom + 1, shown: shown / ratio <= cell.height + 1,
                fit: getComputedStyle(img).objectFit}; }""")
    assert fit == {"inside": True, "shown": True, "fit": "contain"}, fit
    page.locator("#slider-result").scroll_into_view_if_needed()
    page.wait_for_timeout(1000)
    shot(page, "3-done", full_page=False)
    shot(page, "4-done-page")
