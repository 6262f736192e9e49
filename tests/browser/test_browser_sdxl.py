"""SDXL through the page: choosing the model shows its options and its defaults, and a demo run trains."""

from __future__ import annotations

import subprocess
import sys

import pytest
from playwright.sync_api import expect

from gui_helpers import ROOT, get_field, needs_engine, set_checkbox, set_field, show_field, start_run, wait_status

RUN_TIMEOUT = 900


def _sdxl_missing() -> str:
    """What of the SDXL engine is not there yet ("" when everything is)."""
    missing = []
    if not (ROOT / "trainer" / "families" / "sdxl.py").exists():
        missing.append("trainer/families/sdxl.py (the SDXL model family)")
    tiny = (ROOT / "trainer" / "tiny.py").read_text(encoding="utf-8") if (ROOT / "trainer" / "tiny.py").exists() else ""
    if '"sdxl"' not in tiny:
        missing.append('the "sdxl" family of trainer/tiny.py (python -m trainer.tiny --family sdxl)')
    return "; ".join(missing)


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory):
    """A tiny random SDXL model (diffusers folder), made by the engine in a subprocess."""
    missing = _sdxl_missing()
    if missing:
        pytest.skip(f"the SDXL engine has not landed: missing {missing}")
    out = tmp_path_factory.mktemp("models") / "tiny-sdxl"
    proc = subprocess.run([sys.executable, "-m", "trainer.tiny", "--family", "sdxl", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "model_index.json").exists()
    return out


@needs_engine
def test_sdxl_demo_run(open_page, shot, tmp_path, tiny_sdxl):
    page = open_page()
    # SD 1.x defaults in place, then an SDXL model: resolution and bucket steps follow, the page says so
    set_field(page, "resolution", "512")
    assert get_field(page, "bucket_reso_steps") == "64"
    for name in ("no_half_vae", "cache_text_encoder_outputs"):
        expect(page.locator(f"#cell-{name}")).to_be_hidden()
    set_field(page, "pretrained_model_name_or_path", tiny_sdxl)
    issues = page.locator("#field-pretrained_model_name_or_path-issues")
    expect(issues).to_contain_text("Stable Diffusion XL", timeout=30_000)
    note = page.locator("#family-note")
    expect(note).to_contain_text("512 → 1024")
    expect(note).to_contain_text("64 → 32")
    assert get_field(page, "resolution") == "1024"
    assert get_field(page, "bucket_reso_steps") == "32"
    # the SDXL options are on the page now
    page.click("#tab-advanced-button")
    page.click("#section-advanced-memory .label-wrap")
    page.click("#section-advanced-network .label-wrap")
    for name in ("no_half_vae", "cache_text_encoder_outputs", "cache_text_encoder_outputs_to_disk",
                 "network_train_text_encoder_1", "network_train_text_encoder_2"):
        expect(page.locator(f"#field-{name}")).to_be_visible()
    # an SDXL rule next to its field: caching text-encoder outputs while the text encoder trains
    set_checkbox(page, "cache_text_encoder_outputs", True)
    expect(page.locator("#field-cache_text_encoder_outputs-issues [data-code=te_cache_with_te_training]")).to_have_count(1)
    shot(page, "1-sdxl-options")
    set_checkbox(page, "network_train_unet_only", True)  # now the outputs can be cached
    expect(page.locator("#field-cache_text_encoder_outputs-issues [data-code=te_cache_with_te_training]")).to_have_count(0)

    # the demo images at 64 pixels, a few steps
    set_field(page, "resolution", "64")
    set_field(page, "max_train_steps", 6)
    out = tmp_path / "out"
    set_field(page, "output_dir", out)
    set_field(page, "output_name", "sdxl_demo")
    show_field(page, "train_data_dir")
    expect(page.locator("#dataset-summary [data-total-steps]")).to_have_attribute("data-total-steps", "6")
    expect(page.locator("#issues-overview .lg-ov-error")).to_have_count(0)

    start_run(page)
    expect(page.locator("#panel-notice")).to_contain_text("Training started")
    assert wait_status(page, ("completed", "failed", "stopped"), RUN_TIMEOUT) == "completed", \
        page.inner_text("#run-status")
    expect(page.locator("#run-progress .lg-progress-text")).to_have_text("100 %")
    expect(page.locator("#saved-files")).to_contain_text("sdxl_demo.safetensors")
    assert (out / "sdxl_demo.safetensors").exists()
    page.wait_for_timeout(1000)
    shot(page, "2-completed")
