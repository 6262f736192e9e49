"""The panel's and the summary's HTML: one speed unit per run, busy stages, file names, numeric headers."""

from __future__ import annotations

import re

from lora_gui.dataset_view import render_summary
from lora_gui.engine import BucketLine, DatasetSummary, SubsetRow
from lora_gui.run_view import ViewState, fold
from lora_gui.panel_view import breakable, render_progress


def _running(job_id: int = 1, **values) -> ViewState:
    return ViewState(status="running", job_id=job_id, started_at=100.0 + job_id, total_steps=100, **values)


def test_the_speed_keeps_one_unit_for_the_whole_run():
    state = _running(step=5, sec_per_step=1.2)
    assert "1.20 s/it" in render_progress(state, "en")
    state.sec_per_step = 0.8  # faster than one step per second now: still s/it
    assert "0.80 s/it" in render_progress(state, "en") and "it/s" not in render_progress(state, "en")
    fast = _running(job_id=2, step=5, sec_per_step=0.5)  # another run chooses its own unit
    assert "2.00 it/s" in render_progress(fast, "en")
    fast.sec_per_step = 1.25
    assert "0.80 it/s" in render_progress(fast, "en")


def test_a_stage_without_steps_shows_its_own_progress():
    state = _running(step=100, sec_per_step=0.5, eta_sec=0.0, kind="slider")
    fold(state, {"type": "stage", "name": "preview", "index": 9, "count": 9, "kind": "preview", "steps": 0})
    fold(state, {"type": "log", "message": "stage 9/9: preview"})
    html = render_progress(state, "en")
    assert "lg-indeterminate" in html and "100 %" not in html  # nothing counted yet: a moving bar
    fold(state, {"type": "log", "message": "preview: 3/10 images"})
    html = render_progress(state, "en")
    assert "3 / 10 images" in html and "width:30%" in html and "lg-indeterminate" not in html
    state.status = "completed"
    assert "100 %" in render_progress(state, "en")


def test_file_names_wrap_only_after_separators():
    assert breakable("demo_lora-000001.safetensors") == "demo_<wbr>lora-<wbr>000001.<wbr>safetensors"
    assert breakable("<b>.txt") == "&lt;b&gt;.<wbr>txt"


def test_numeric_columns_have_numeric_headers():
    summary = DatasetSummary(subsets=[SubsetRow("10_sks disc", 10, "sks disc", 4, 4, False)],
                             buckets=[BucketLine(64, 64, 4, 40, 40)], steps_per_epoch=40, epochs=3, total_steps=120)
    html = render_summary(summary, "en")
    for table in re.findall(r'<table class="lg-table">.*?</table>', html):
        head = re.findall(r"<th(\s[^>]*)?>", table)
        first_row = re.search(r"<tbody><tr>(.*?)</tr>", table).group(1)
        cells = re.findall(r"<td([^>]*)>", first_row)
        assert len(head) == len(cells)
        for th, td in zip(head, cells):
            assert ('class="num' in th) == ('class="num' in td), (th, td)


def test_action_bar_events_show_no_gradio_timers():
    """Gradio's per-event timers ("0.2s") would flash over the status and the problem list."""
    from lora_gui import presets
    from lora_gui.jobs import JobManager
    from lora_gui.ui import build_app

    demo = build_app(initial=presets.load_preset("cpu_demo").config, initial_preset="cpu_demo", manager=JobManager())
    ids = {block._id: getattr(block, "elem_id", None) for block in demo.blocks.values()}
    buttons = {"start-button", "stop-button", "print-button", "preset-load", "preset-save", "preset-overwrite",
               "slider-start", "slider-show-command"}
    seen = set()
    for dep in demo.config["dependencies"]:
        for target_id, _event in dep["targets"]:
            if ids.get(target_id) in buttons:
                seen.add(ids[target_id])
                assert dep["show_progress"] == "hidden", ids[target_id]
    assert seen == buttons


def test_the_resource_line_shows_ram_and_cpu_or_the_gpu():
    state = ViewState(status="running", step=3, total_steps=10, sec_per_step=1.2,
                      resources={"ram_gib": 5.234, "cpu_percent": 187})
    assert "RAM 5.2 GiB · CPU 187 %" in render_progress(state, "en")
    state.resources = {"ram_gib": 9.0, "cpu_percent": 99, "vram_allocated_gib": 3.14, "vram_reserved_gib": 4.5,
                       "vram_total_gib": 79.6, "gpu_percent": 97}
    text = render_progress(state, "en")
    assert "VRAM 3.1 / 4.5 / 80 GiB" in text and "GPU 97 %" in text and "CPU" not in text
    state.status = "completed"  # a finished run uses nothing: no stale line
    assert "resource-line" not in render_progress(state, "en")
