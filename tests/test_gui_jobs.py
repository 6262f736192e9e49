"""The job runner and the view state, with a small fake engine (no torch, runs in a second)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from lora_gui import APP_DIR, engine, jobs
from lora_gui.run_view import ViewState, fold, read_log_tail
from lora_gui.job_record import JobRecord, read_record, write_record
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
mode = cfg.get("training_comment") or cfg.get("prompt", "")  # a training's comment, a slider's prompt
stop = out / f"{name}.stop"
import signal
signal.signal(signal.SIGINT, lambda *a: stop.touch())  # graceful, like the real engine
print("fake engine starting", flush=True)
if mode == "crash":
    sys.exit(3)
total = 100_000 if mode == "endless" else 20
with EventWriter(events_path(out, name)) as ev:
    ev.emit("start", total_steps=total, epochs=2, steps_per_epoch=10, num_train_images=10, num_reg_images=0,
            buckets=[], resumed_from_step=0, config_path="", device="cpu")
    for step in range(1, total + 1):
        time.sleep(0.05 if mode not in ("slow", "endless") else 0.3)
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


# ---- the job record: a restarted server finds its job again ------------------------------
def _record(tmp_path: Path) -> Path:
    return tmp_path / "data" / "jobs" / "current.json"


def test_a_new_manager_reattaches_to_the_recorded_engine_and_stops_it(tmp_path, fake_engine):
    first = JobManager(record_path=_record(tmp_path))
    first.start(_cfg(tmp_path, training_comment="slow"))
    while _wait(first, ("running",)).step < 1:
        time.sleep(0.05)
    pid = first.job.proc.pid
    assert os.getsid(pid) == pid  # its own session: the terminal's Ctrl+C or hang-up does not reach it
    record = read_record(_record(tmp_path))
    assert record.state == "running" and record.pid == pid and record.events_file.endswith("job.events.jsonl")

    second = JobManager(record_path=_record(tmp_path))  # as after a server restart
    assert second.state.active and second.state.job_id == record.id and second.state.step >= 1
    assert second.current_config().training_comment == "slow"  # the settings, for the form
    served: list[Path] = []
    second.add_start_hook(served.append)
    assert served == [tmp_path / "out"]  # its samples can be shown
    with pytest.raises(JobRefused) as exc:
        second.start(_cfg(tmp_path))
    assert exc.value.key == "job.refused_running"
    assert second.stop() == "job.stop_requested"
    state = _wait(second, ("stopped", "failed", "completed"))
    assert state.status == "stopped" and (tmp_path / "out" / "job-stopped.safetensors").exists()
    # the `done` event comes before the process exits; the record says how it ended once it has exited
    deadline = time.time() + 30
    while not second.job.ended and time.time() < deadline:
        second.refresh(force=True)
        time.sleep(0.05)
    assert read_record(_record(tmp_path)).status == "stopped"
    assert "fake engine starting" in state.log_tail  # the log tail without a Popen handle
    first.job.proc.popen.wait(timeout=10)


def test_a_slider_run_is_recorded_and_reattached_like_a_training(tmp_path, fake_engine, monkeypatch):
    import trainer.slider
    from trainer.slider import SliderPair, SliderSpec

    monkeypatch.setattr(trainer.slider, "slider_command", lambda spec: engine.engine_command(spec))
    spec = SliderSpec(pairs=[SliderPair("eyes", str(tmp_path / "low"), str(tmp_path / "high"))], model="m",
                      prompt="slow", output_dir=str(tmp_path / "out"), output_name="eyes")
    first = JobManager(record_path=_record(tmp_path))
    first.start_slider(spec)
    _wait(first, ("running",))
    second = JobManager(record_path=_record(tmp_path))
    assert second.state.active and second.state.kind == "slider" and second.current_config() is None
    assert second.current_slider() == spec  # the slider tab shows the running spec after a restart
    assert [s["name"] for s in second.state.stage_plan] == [s["name"] for s in first.state.stage_plan]
    assert second.stop() == "job.stop_requested"
    assert _wait(second, ("stopped", "failed")).status == "stopped"
    first.job.proc.popen.wait(timeout=10)


def test_a_reused_pid_is_not_taken_for_the_engine(tmp_path, fake_engine):
    first = JobManager(record_path=_record(tmp_path))
    first.start(_cfg(tmp_path, training_comment="slow"))
    _wait(first, ("running",))
    record = read_record(_record(tmp_path))
    for change in ({"create_time": record.create_time - 3600},  # the same pid, started at another time
                   {"run_file": str(tmp_path / "other" / "run.json")}):  # a process that runs something else
        write_record(_record(tmp_path), JobRecord(**{**asdict(record), **change}))
        state = JobManager(record_path=_record(tmp_path)).state
        assert state.status == "failed" and state.errors[-1]["code"] == "engine_gone"
        assert "without saying how" in render_status(state, "en")
    first.stop()
    _wait(first, ("stopped",))


def test_an_engine_that_ended_unwatched_shows_how_it_ended(tmp_path, fake_engine):
    first = JobManager(record_path=_record(tmp_path))
    first.start(_cfg(tmp_path))
    first.job.proc.popen.wait(timeout=30)  # the run completes while nobody follows it
    state = JobManager(record_path=_record(tmp_path)).state
    assert state.status == "completed" and state.step == 20 and len(state.loss) == 20
    assert [Path(f.path).name for f in state.saved] == ["job.safetensors"]
    assert read_record(_record(tmp_path)).status == "completed"


def test_a_damaged_record_is_reported_and_ignored(tmp_path, capsys):
    _record(tmp_path).parent.mkdir(parents=True)
    _record(tmp_path).write_text("{not json", encoding="utf-8")
    assert JobManager(record_path=_record(tmp_path)).state.status == "idle"
    err = capsys.readouterr().err
    assert str(_record(tmp_path)) in err and "not valid JSON" in err


def test_shutdown_asks_the_engine_to_stop_and_save(tmp_path, fake_engine, capsys):
    manager = JobManager()
    manager.start(_cfg(tmp_path, training_comment="slow"))
    _wait(manager, ("running",))
    manager.shutdown()  # what Ctrl+C in the server's terminal does
    assert "job-stopped.safetensors" in capsys.readouterr().err
    manager.job.proc.popen.wait(timeout=30)
    assert (tmp_path / "out" / "job-stopped.safetensors").exists()


def test_library_notes_stay_in_the_log_file_only(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("log: loading model\n"
                   "Failed to load CPU gemm_4bit_forward from kernels-community: not cached.\n"
                   "[transformers] `CLIPImageProcessor` requires torchvision (not installed); falling back to "
                   "`CLIPImageProcessorPil` for backward compatibility.\n"
                   "step 1/3 epoch 1 loss 1.0\n", encoding="utf-8")
    assert read_log_tail(log) == "log: loading model\nstep 1/3 epoch 1 loss 1.0"


def test_ctrl_c_in_the_server_terminal_stops_the_reattached_training(tmp_path, fake_engine):
    first = JobManager(record_path=_record(tmp_path))  # the server that started the run, gone meanwhile
    first.start(_cfg(tmp_path, training_comment="endless"))
    _wait(first, ("running",))
    port = _free_port()
    env = dict(os.environ, LORA_GUI_DATA=str(tmp_path / "data"), LORA_GUI_PRESETS=str(tmp_path / "presets"))
    app = subprocess.Popen([sys.executable, str(APP_DIR / "app.py"), "--port", str(port), "--no-demo"], cwd=APP_DIR,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        while not _port_open(port):
            assert app.poll() is None and time.time() < deadline, app.stdout.read()
            time.sleep(0.3)
        app.send_signal(signal.SIGINT)  # Ctrl+C
        output = app.communicate(timeout=60)[0]
    finally:
        if app.poll() is None:
            app.kill()
    assert "Stopping the training" in output and "job-stopped.safetensors" in output, output
    first.job.proc.popen.wait(timeout=30)  # the engine saves and ends by itself
    assert (tmp_path / "out" / "job-stopped.safetensors").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
