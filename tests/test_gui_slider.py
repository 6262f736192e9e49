"""Slider tab: form -> SliderSpec (defaults, pairs, paths, problems), the slider job through the one
job manager, and `stage` events in the training panel (fake engine, no torch)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

import trainer.slider
from lora_gui import engine
from lora_gui.run_view import ViewState, fold
from lora_gui.jobs import JobManager, JobRefused, slider_request
from lora_gui.panel_view import render_files, render_progress, stage_text
from lora_gui.slider_form import FIELDS, build_spec, default_value, form_data, pairs_from_rows, spec_to_values
from lora_gui.tabs.slider import issue_text, preview_path, render_issues
from trainer.config import TrainConfig
from trainer.slider import SliderIssue

FAKE_SLIDER = r'''
import json, sys, time
from pathlib import Path
sys.path.insert(0, ".")
from trainer.events import EventWriter
spec = json.loads(Path(sys.argv[sys.argv.index("--spec") + 1]).read_text())
out, name = Path(spec["output_dir"]), spec["output_name"]
pairs = [p["name"] for p in spec["pairs"]]
stages = [f"train {p}/{side}" for p in pairs for side in ("low", "high")] + ["svd_merge", "resize", "preview"]
kinds = ["train"] * (2 * len(pairs)) + ["merge", "resize", "preview"]
steps = spec["max_train_steps"]
total = steps * 2 * len(pairs)
slow = spec["prompt"] == "slow"
with EventWriter(out / f"{name}.events.jsonl") as ev:
    ev.emit("start", total_steps=total, epochs=2 * len(pairs), steps_per_epoch=steps, num_train_images=4,
            num_reg_images=0, buckets=[], resumed_from_step=0, config_path="", device="cpu")
    step = 0
    for i, (stage, kind) in enumerate(zip(stages, kinds), start=1):
        ev.emit("stage", name=stage, index=i, count=len(stages), kind=kind, steps=steps if kind == "train" else 0)
        if kind == "train":
            for _ in range(steps):
                step += 1
                time.sleep(0.3 if slow else 0.02)
                ev.emit("step", step=step, total_steps=total, epoch=i, loss=0.5, avg_loss=0.5, lr=5e-5,
                        sec_per_step=0.02, eta_sec=0.1)
            p = out / f"{name}-work" / f"{stage[6:].replace('/', '-')}.safetensors"
            p.parent.mkdir(parents=True, exist_ok=True); p.write_bytes(b"x" * 100)
            ev.emit("saved", path=str(p), kind="intermediate", epoch=i, step=step, size_bytes=100)
        if kind == "resize":
            p = out / f"{name}.safetensors"; p.write_bytes(b"x" * 1000)
            ev.emit("saved", path=str(p), kind="final", epoch=i, step=step, size_bytes=1000)
        if kind == "preview":
            p = out / f"{name}-preview.png"; p.write_bytes(b"png")
            ev.emit("sample", step=step, epoch=i, paths=[str(p)], prompts=["slider preview"])
    ev.emit("done", status="completed", files=[], wall_time_sec=1.0, steps_done=step, message="ok")
'''


@pytest.fixture
def folders(tmp_path) -> dict[str, Path]:
    out = {}
    for name in ("low", "high", "low2", "high2"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "a.png").write_bytes(b"png")
        out[name] = folder
    return out


def _values(**changes):
    values = {name: default_value(name) for name in FIELDS}
    values.update(model=str(Path(__file__).resolve().parent.parent / "trainer" / "toyworld" / "model"), prompt="a disc")
    values.update(changes)
    return values


# ---- form -> spec ----------------------------------------------------------------------------------------
def test_the_form_starts_with_the_slider_defaults():
    data, issues = form_data(_values())
    assert not issues
    assert (data["network_dim"], data["network_alpha"], data["optimizer_type"]) == (4, 1.0, "CAME")
    assert data["learning_rate"] == 5e-5
    assert (data["max_train_steps"], data["lr_warmup_steps"], data["network_train_unet_only"]) == (400, 20, True)
    assert (data["ratio"], data["new_rank"], data["resize"], data["resize_method"], data["resize_param"]) == (
        1.5, 8, True, "sv_fro", 0.75)
    assert data["save_precision"] == "fp16" and data["preview_weights"] == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert data["method"] == "copy"


def test_pairs_rows_and_absolute_paths(folders, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pairs = pairs_from_rows(["front", "", "", "side"], ["low", "", "", str(folders["low2"])],
                            ["high", "", "", str(folders["high2"])], 3)
    assert [(p.name, p.low, p.high) for p in pairs] == [("front", str(folders["low"]), str(folders["high"]))]
    form = build_spec(_values(output_dir="out", max_train_steps=4.0),
                      pairs_from_rows(["front", "side"], ["low", str(folders["low2"])],
                                      ["high", str(folders["high2"])], 2))
    assert form.ok, form.issues
    spec = form.spec
    assert spec.output_dir == str(tmp_path / "out") and spec.max_train_steps == 4
    assert spec.work_dir == str(tmp_path / "out" / "slider-work")  # written out: never "" in the spec file
    assert spec.pair_names() == ["front", "side"]


def test_problems_by_field(folders, tmp_path):
    form = build_spec(_values(output_dir=str(tmp_path / "out"), preview_weights="-1 x", train_args="{bad"), [])
    assert form.spec is None
    assert {i.field for i in form.issues} == {"preview_weights", "train_args"}
    form = build_spec(_values(output_dir="", prompt=""), pairs_from_rows(["p"], [str(folders["low"])],
                                                                         [str(tmp_path / "nope")], 1))
    grouped = form.by_field()
    assert {i.code for i in grouped["pairs"]} == {"dir_missing"}
    assert {i.code for i in grouped["output_dir"]} == {"output_dir_empty"}
    assert {i.code for i in grouped["prompt"]} == {"prompt_empty"}
    assert not form.ok


def test_numbers_lists_and_the_typographic_minus():
    data, issues = form_data(_values(preview_weights="−1, -0.5 0 0.5 1", preview_seeds="1 2 3"))
    assert not issues and data["preview_weights"] == [-1, -0.5, 0, 0.5, 1] and data["preview_seeds"] == [1, 2, 3]
    data, _ = form_data(_values(resize_method="none", train_args='{"mixed_precision": "no"}'))
    assert data["resize_method"] is None and data["train_args"] == {"mixed_precision": "no"}


def test_spec_back_to_the_form(folders, tmp_path):
    values = _values(output_dir=str(tmp_path / "o"), preview_seeds="3 4", resize_method="sv_ratio", resize_param=10.0)
    form = build_spec(values, pairs_from_rows(["f"], [str(folders["low"])], [str(folders["high"])], 1))
    back = spec_to_values(form.spec)
    assert back["preview_seeds"] == "3 4" and back["resize_method"] == "sv_ratio" and back["resize"] is True
    assert build_spec(back, form.spec.pairs).spec.to_dict() == form.spec.to_dict()


def test_issue_texts_in_japanese():
    issue = SliderIssue("pairs", "error", "no_pairs", "no image folder pairs given", "Add a pair")
    assert issue_text(issue, "ja")[0].startswith("教師画像フォルダのペア")
    # messages that carry folder names and counts stay the engine's own
    named = SliderIssue("pairs", "error", "dir_missing", "pair front: the low folder /x does not exist")
    assert issue_text(named, "ja")[0] == named.message
    assert 'data-code="no_pairs"' in render_issues([issue], "en")


# ---- the job -----------------------------------------------------------------------------------------------
@pytest.fixture
def fake_slider(tmp_path, monkeypatch):
    script = tmp_path / "fake_slider.py"
    script.write_text(FAKE_SLIDER, encoding="utf-8")
    monkeypatch.setattr(engine, "engine_available", lambda: True)
    monkeypatch.setattr(trainer.slider, "slider_command", lambda spec: [sys.executable, str(script), "--spec", spec])
    return script


def _wait(manager: JobManager, statuses: tuple[str, ...], timeout: float = 60.0) -> ViewState:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = manager.refresh(force=True)
        if state.status in statuses:
            return state
        time.sleep(0.05)
    raise AssertionError(f"status stayed {manager.state.status}")


def _spec(folders, tmp_path, **changes):
    pairs = pairs_from_rows(["front", "side"], [str(folders["low"]), str(folders["low2"])],
                            [str(folders["high"]), str(folders["high2"])], 2)
    form = build_spec(_values(output_dir=str(tmp_path / "out"), max_train_steps=3, **changes), pairs)
    assert form.ok, form.issues
    return form.spec


def test_slider_request_runs_the_engine_on_the_saved_spec(folders, tmp_path):
    spec = _spec(folders, tmp_path)
    request = slider_request(spec)
    spec_file = tmp_path / "out" / "slider.slider.json"
    assert request.kind == "slider" and request.command == trainer.slider.slider_command(str(spec_file))
    assert request.command[1:4] == ["-m", "trainer.slider", "--spec"]
    assert json.loads(request.writes[spec_file])["pairs"][1]["name"] == "side"
    assert [s["name"] for s in request.stage_plan] == ["train front/low", "train front/high", "train side/low",
                                                       "train side/high", "svd_merge", "resize", "preview"]


def test_a_slider_job_shows_its_stages_and_files(folders, tmp_path, fake_slider):
    manager = JobManager()
    manager.start_slider(_spec(folders, tmp_path))
    assert manager.current_config() is None and manager.current_slider() is not None
    state = _wait(manager, ("completed", "failed"))
    assert state.status == "completed" and state.step == 12 and state.kind == "slider"
    assert [f.kind for f in state.saved] == ["intermediate"] * 4 + ["final"]
    assert preview_path(state) == str(tmp_path / "out" / "slider-preview.png")
    files = render_files(state, "en")
    assert "intermediate" in files and "slider.safetensors" in files and "中間ファイル" in render_files(state, "ja")
    assert "100 %" in render_progress(state, "en") and "Epoch" not in render_progress(state, "en")


def test_one_job_across_training_and_slider(folders, tmp_path, fake_slider):
    manager = JobManager()
    manager.start_slider(_spec(folders, tmp_path, prompt="slow"))
    with pytest.raises(JobRefused) as exc:
        manager.start(TrainConfig(output_dir=str(tmp_path / "t"), output_name="t"))
    assert exc.value.key == "job.refused_running"
    with pytest.raises(JobRefused):
        manager.start_slider(_spec(folders, tmp_path / "again"))
    state = _wait(manager, ("running",))
    deadline = time.time() + 30
    while not (state.stage and state.stage["index"] >= 2) and time.time() < deadline:
        state = manager.refresh(force=True)
        time.sleep(0.05)
    assert stage_text(state, "en") == "LoRA 2 of 4: front / high (B)"
    assert 'data-stage-index="2"' in render_progress(state, "en")
    assert manager.stop() == "job.stop_requested"
    assert (tmp_path / "out" / "slider.stop").exists()  # the engine's StopSignal file
    manager.job.proc.kill()
    _wait(manager, ("failed", "stopped", "completed"))


def test_stage_events_in_any_job():
    state = ViewState(status="running", total_steps=10)
    fold(state, {"type": "stage", "name": "svd_merge", "index": 3, "count": 5, "kind": "merge", "steps": 0})
    assert stage_text(state, "en") == "Stage 3 of 5: SVD merge" and "SVDマージ" in stage_text(state, "ja")
    fold(state, {"type": "stage", "name": "train eyes/low", "index": 1, "count": 5, "kind": "train", "steps": 4})
    assert stage_text(state, "en") == "Stage 1 of 5: training eyes / low (A)"  # no plan: named from the event
    fold(state, {"type": "stage", "name": "polish", "index": 4, "count": 5, "kind": "other", "steps": 0})
    assert stage_text(state, "en") == "Stage 4 of 5: polish"
    assert "lg-stage" in render_progress(state, "en")
    state.status = "completed"
    assert "lg-stage" not in render_progress(state, "en")
    assert stage_text(ViewState(status="running"), "en") == ""
