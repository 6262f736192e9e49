"""Every tab in English and Japanese: screenshots, section titles, and Start / Stop / progress in view."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from gui_helpers import open_problems, pick, set_field

TABS = ("source_model", "folders", "parameters", "advanced", "samples", "slider", "utilities")
ADVANCED_TITLES = {"en": ("Network: which parts are trained", "Memory and speed", "Buckets",
                          "Augmentation and captions", "Noise, loss and timesteps", "Saving and resuming"),
                   "ja": ("ネットワーク（学習する部分）", "メモリと速度", "バケット", "水増しとキャプション",
                          "ノイズ・損失・タイムステップ", "保存と再開")}


def _in_window(page, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    height = page.viewport_size["height"]
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= height


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_every_tab_with_the_training_bar_in_view(open_page, shot, lang):
    page = open_page(locale="ja-JP" if lang == "ja" else "en-US")
    for tab in TABS:
        page.click(f"#tab-{tab}-button")
        page.evaluate("window.scrollTo(0, 0)")
        time.sleep(0.8)
        # the bar sticks to the bottom of the window: Start, Stop and the status can be reached from every tab
        # (the Slider tab has its own Start below its form; the training's Start is hidden there)
        starts = () if tab == "slider" else ("#start-button",)
        for part in (*starts, "#stop-button", "#run-status .lg-status"):
            assert _in_window(page, part), (tab, part)
        if tab == "slider":
            expect(page.locator("#start-button")).to_be_hidden()
        if tab == "advanced":
            titles = page.locator("#tab-advanced .lg-section > .label-wrap")
            for title in ADVANCED_TITLES[lang]:
                expect(titles.filter(has_text=title)).to_have_count(1)
        shot(page, f"{lang}-{tab}", full_page=False)
        shot(page, f"{lang}-{tab}-page")


def test_sdxl_options_hidden_for_sd1_and_problems_link_to_their_field(open_page, shot):
    page = open_page()
    # the demo model is SD 1.x: the SDXL-only options are not on the page
    page.click("#tab-advanced-button")
    page.click("#section-advanced-memory .label-wrap")
    expect(page.locator("#field-gradient_checkpointing")).to_be_visible()
    for name in ("no_half_vae", "cache_text_encoder_outputs", "cache_text_encoder_outputs_to_disk"):
        expect(page.locator(f"#cell-{name}")).to_be_hidden()
    # a problem in a section that is then closed: the list above Start names it, and its
    # "tab › field" link shows the tab, opens the section and scrolls to the field
    page.click("#section-advanced-noise .label-wrap")
    set_field(page, "min_timestep", 900)
    set_field(page, "max_timestep", 800)
    expect(page.locator("#field-max_timestep-issues [data-code=timestep_range_empty]")).to_have_count(1)
    expect(page.locator("#section-advanced-noise .label-wrap")).to_contain_text("2 changed")
    page.click("#section-advanced-noise .label-wrap")  # closed
    expect(page.locator("#field-max_timestep")).to_be_hidden()
    page.click("#tab-samples-button")
    open_problems(page)
    link = page.locator("#issues-overview li[data-field=max_timestep] a.lg-where")
    expect(link).to_have_text("Advanced › Max timestep")
    link.click()
    expect(page.locator("#field-max_timestep")).to_be_in_viewport()
    shot(page, "jumped", full_page=False)
    pick(page, "language-select", "日本語")
    # the switch relabels the whole page, then checks the form again: seconds on a busy machine
    expect(page.locator("#issues-overview")).to_contain_text("詳細設定 › 最大タイムステップ", timeout=60_000)
    expect(page.locator("#section-advanced-noise .label-wrap")).to_contain_text("変更 2 件", timeout=30_000)
