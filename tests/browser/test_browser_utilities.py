"""Utilities tab through the page: resize a LoRA with the per-module report, merge two LoRAs, and the
messages for a bad input path and an existing output."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from playwright.sync_api import expect

from gui_helpers import ROOT

TOOL_TIMEOUT = 300_000  # ms: the tool starts a Python with torch on a busy 2-core machine

MAKE_LORAS = r'''
import sys
from trainer.network.kohya_format import write_lora_file
from trainer.tools.factors import ModuleShape
from trainer.tools.synthetic import random_lora
shapes = {
    "lora_te_text_model_encoder_layers_0_mlp_fc1": ModuleShape(64, 32),
    "lora_unet_down_blocks_0_attentions_0_proj_in": ModuleShape(32, 32, (1, 1)),
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": ModuleShape(32, 32),
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k": ModuleShape(32, 48),
    "lora_unet_down_blocks_0_resnets_0_conv1": ModuleShape(16, 8, (3, 3)),
}
meta = {"ss_base_model_version": "sd_v1", "ss_v2": "False"}
for i, path in enumerate(sys.argv[1:]):
    write_lora_file(path, random_lora(shapes, 8, 4.0, conv_rank=4, conv_alpha=2.0, seed=i, metadata=meta),
                    save_precision="float")
'''


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    """Two random rank-8 LoRAs (trainer.tools.synthetic), written in a subprocess."""
    folder = tmp_path_factory.mktemp("loras")
    paths = [folder / "high.safetensors", folder / "low.safetensors"]
    proc = subprocess.run([sys.executable, "-c", MAKE_LORAS, *map(str, paths)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return paths


def _fill(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id}").locator("textarea, input").first
    box.fill(str(value))
    box.press("Tab")


def _open_tool(page, name: str) -> None:
    page.click("#tab-utilities-button")
    page.locator("#utility-tabs").get_by_role("tab", name=name, exact=True).click()
    time.sleep(0.5)


def test_resize_to_rank_2_with_the_per_module_report(open_page, shot, loras, tmp_path):
    page = open_page()
    _open_tool(page, "Resize")
    out = tmp_path / "resized.safetensors"
    _fill(page, "tool-resize-model", loras[0])
    _fill(page, "tool-resize-new-rank", 2)
    _fill(page, "tool-resize-save-to", out)
    expect(page.locator("#tool-resize-verbose input")).to_be_checked()  # the report is on by default
    page.click("#tool-resize-run")
    result = page.locator("#tool-resize-result .lg-tool-run")
    expect(result).to_have_attribute("data-state", "done", timeout=TOOL_TIMEOUT)
    expect(result).to_contain_text(f"Saved {out}")
    expect(result).to_contain_text("5 modules written: rank 2 × 5")
    expect(result).to_contain_text("Frobenius norm kept: mean")
    table = page.locator("#tool-resize-result table.lg-report-table")
    expect(table).to_have_attribute("data-rows", "5")
    row = table.locator("tr[data-module=lora_unet_down_blocks_0_resnets_0_conv1]")
    expect(row).to_contain_text("conv3x3")
    expect(row).to_contain_text("4 → 2")
    expect(table.locator("tr[data-module=lora_unet_down_blocks_0_attentions_0_proj_in]")).to_contain_text("8 → 2")
    assert out.is_file()
    shot(page, "resized")

    # the same output again: refused next to the field, nothing runs
    page.click("#tool-resize-run")
    expect(page.locator("#tool-resize-save-to-issues")).to_contain_text("already exists", timeout=30_000)
    expect(page.locator("#tool-resize-result")).to_contain_text("Not started")


def test_merge_two_loras_and_a_bad_path(open_page, shot, loras, tmp_path):
    page = open_page()
    _open_tool(page, "Merge")
    missing = tmp_path / "no-such.safetensors"
    out = tmp_path / "merged.safetensors"
    _fill(page, "tool-merge-models-0", loras[0])
    _fill(page, "tool-merge-ratios-0", 1.5)
    _fill(page, "tool-merge-models-1", missing)
    _fill(page, "tool-merge-ratios-1", -1.5)
    _fill(page, "tool-merge-save-to", out)
    page.click("#tool-merge-run")
    issue = page.locator("#tool-merge-models-1-issues [data-code=no_such_file]")
    expect(issue).to_contain_text(f"There is no file {missing}")
    expect(page.locator("#tool-merge-result")).to_contain_text("Not started: fix the 1 problem(s)")
    shot(page, "bad-path")

    _fill(page, "tool-merge-models-1", loras[1])
    page.click("#tool-merge-run")
    result = page.locator("#tool-merge-result .lg-tool-run")
    expect(result).to_have_attribute("data-state", "done", timeout=TOOL_TIMEOUT)
    expect(result).to_contain_text(f"Saved {out}")
    expect(result).to_contain_text("5 modules written")
    expect(page.locator("#tool-merge-models-1-issues")).to_be_empty()
    assert out.is_file()
    shot(page, "merged")
