"""The job runner and the view state, with a small fake engine (no torch, runs in a second)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from lora_gui import engine, jobs
from lora_gui.events import ViewState, fold, read_log_tail
from lora_gui.jobs import JobManager, JobRefused
from lora_gui.panel_view import render_files, render_loss_chart, render_progress, render_status
from trainer.config import TrainConfig

FAKE_ENGINE = r'''
import json, os, sys, time
sys.path.insert(0, os.getcwd())  # the app folder (the job runs there)
from pathlib import Path
from trainer.events import EventWriter, events_path
cfg = json.loads(Path(sys.argv[sys.argv.index("--config") + 1]).read_text())
out, name = Path(cfg["output_dir"]), cfg["output_name"]
mode = cfg.get("training_comment", "")
stop = out / f"{name}.stop"
import signal
signal.signal(signal.SIGINT, lambda *a: stop.touch())  # graceful, like the real engine
print("fake engine starting", flush=True)
if mode == "crash":
    sys.exit(3)
total = 20
with EventWriter(events_path(out, name)) as ev:
    ev.emit("start", total_steps=total, epochs=2, steps_per_epoch=10, num_train_images=10, num_reg_images=0,
            buckets=[], resumed_from_step=0, config_path="", device="cpu")
    for step in range(1, total + 1):
        time.sleep(0.05 if mode != "slow" else 0.3)
        ev.emit("step", step=step, total_steps=total, epoch=1 + (step - 1) // 10, loss=1.0 / step, avg_loss=0.5,
                lr=1e-4, sec_per_step=0.05, eta_sec=(total - step) * 0.05)
        if stop.exists():
            p = out / f"{name}-stopped.safetensors"; p.write_bytes(b"x" * 10)
            ev.emit("saved", path=str(p), kind="stopped", epoch=1, step=step, size_bytes=10)
            ev.emit("done", status="stopped", files=[str(p)], wall_time_sec=1.0, steps_done=step, message="stopped")
            sys.exit(0)
        if step == 10:
            img = out / "sample" / "s.png"; img.parent.mkdir(exist_ok=True); img.write_bytes(b"png")
            ev.emit("sample", step=step, epoch=1, paths=[str(img)], prompts=["a cat"])
    p = out / f"{name}.safetensors"; p.write_bytes(b"x" * 2048)
    ev.emit("saved", path=str(p), kind="final", epoch=2, step=total, size_bytes=2048)
    ev.emit("done", status="completed", files=[str(p)], wall_time_sec=1.0, steps_done=total, message="ok")
'''


@pytest.fixture
def fake_engine(tmp_path, monkeypatch):
    script = tmp_path / "fake_engine.py"
    script.write_text(FAKE_ENGINE, encoding="utf-8")
    monkeypatch.setattr(engine, "engine_available", lambda: True)
    monkeypatch.setattr(engine, "engine_command", lambda run_json: [sys.executable, str(script), "--config", str(run_json)])
    return script


def _cfg(tmp_path: Path, **kw) -> TrainConfig:
    return TrainConfig(output_dir=str(tmp_path / "out"), output_name="job", **kw)


def _wait(manager: JobManager, statuses: tuple[str, ...], timeout: float = 30.0) -> ViewState:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = manager.refresh(force=True)
        if state.status in statuses:
            return state
        time.sleep(0.05)
    raise AssertionError(f"status stayed {manager.state.status}")


def test_a_run_is_followed_to_completion(tmp_path, fake_engine):
    manager = JobManager()
    started: list[Path] = []
    manager.add_start_hook(started.append)
    manager.start(_cfg(tmp_path))
    assert started == [tmp_path / "out"]
    assert json.loads((tmp_path / "out" / "run.json").read_text())["output_name"] == "job"
    state = _wait(manager, ("completed", "failed"))
    assert state.status == "completed" and state.step == 20 and state.total_steps == 20
    assert state.progress == 1.0 and len(state.loss) == 20
    assert [s.prompt for s in state.samples] == ["a cat"]
    assert [Path(f.path).name for f in state.saved] == ["job.safetensors"]
    assert "fake engine starting" in read_log_tail(tmp_path / "out" / "job.log")
    assert "100 %" in render_progress(state, "en")
    assert "job.safetensors" in render_files(state, "en") and "2.0 KB" in render_files(state, "en")
    assert 'data-points="20"' in render_loss_chart(state, "en")
    assert "Completed" in render_status(state, "en") and "完了" in render_status(state, "ja")


def test_one_job_at_a_time_and_stop(tmp_path, fake_engine):
    manager = JobManager()
    manager.start(_cfg(tmp_path, training_comment="slow"))
    with pytest.raises(JobRefused) as exc:
        manager.start(_cfg(tmp_path, training_comment="slow"))
    assert exc.value.key == "job.refused_running"
    _wait(manager, ("running",))
    assert manager.stop() == "job.stop_requested"
    assert manager.stop() == "job.stop_already"
    state = _wait(manager, ("stopped", "failed"))
    assert state.status == "stopped"
    assert any(f.kind == "stopped" for f in state.saved)
    assert not (tmp_path / "out" / "job.stop").exists()  # cleaned up for the next run
    assert manager.stop() == "job.stop_not_running"


def test_a_crash_without_done_event_is_a_failure_with_the_exit_code(tmp_path, fake_engine):
    manager = JobManager()
    manager.start(_cfg(tmp_path, training_comment="crash"))
    state = _wait(manager, ("failed", "completed"))
    assert state.status == "failed" and state.exit_code == 3
    html = render_status(state, "en")
    assert "exit code 3" in html and "Traceback" not in html


def test_old_events_of_the_same_name_are_ignored(tmp_path, fake_engine):
    out = tmp_path / "out"
    out.mkdir()
    old = {"type": "done", "time": time.time() - 100, "status": "failed", "files": [], "wall_time_sec": 1,
           "steps_done": 0, "message": "old run"}
    (out / "job.events.jsonl").write_text(json.dumps(old) + "\n", encoding="utf-8")
    (out / "job.stop").write_text("")  # a stale stop file must not stop the new run
    manager = JobManager()
    manager.start(_cfg(tmp_path))
    assert _wait(manager, ("completed", "failed", "stopped")).status == "completed"


def test_engine_missing_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "engine_available", lambda: False)
    with pytest.raises(JobRefused) as exc:
        JobManager().start(_cfg(tmp_path))
    assert exc.value.key == "job.refused_no_engine"


def test_fold_error_event_renders_message_and_hint():
    state = ViewState(status="running")
    fold(state, {"type": "error", "code": "out_of_memory", "message": "out of memory", "field": "train_batch_size",
                 "hint": "Use batch size 1"})
    fold(state, {"type": "done", "status": "failed", "files": [], "wall_time_sec": 1, "steps_done": 0,
                 "message": "out of memory", "time": time.time()})
    html = render_status(state, "en")
    assert "out of memory" in html and "Use batch size 1" in html and "Train batch size" in html
    assert "バッチサイズ" in render_status(state, "ja")


def test_jobs_module_never_names_torch():
    assert "import torch" not in Path(jobs.__file__).read_text(encoding="utf-8")
