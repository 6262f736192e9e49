"""The job survives the web server: the real engine on a tiny model, a server killed with SIGKILL.

The "server" is a JobManager in a child process (what app.py runs); after SIGKILL a new JobManager
on the same job record plays the restarted server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import make_run_config
from lora_gui.job_record import read_record
from lora_gui.jobs import JobManager, JobRefused
from lora_gui.log_noise import is_library_noise
from lora_gui.panel_view import render_status

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 600  # a busy 2-core machine

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and sessions are POSIX")

SERVER = r'''
import json, sys, time
from pathlib import Path
from lora_gui.jobs import JobManager
from trainer.config import TrainConfig
record, config, wait_steps = Path(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
manager = JobManager(record_path=record)
manager.start(TrainConfig.from_dict(config))
while manager.refresh(force=True).step < wait_steps and not manager.state.finished:
    time.sleep(0.2)
print("server saw step", manager.state.step, manager.state.status, flush=True)
time.sleep(3600)
'''


def _server_until(record: Path, cfg, steps: int) -> subprocess.Popen:
    """A server that starts `cfg` and has seen `steps` steps (0: the engine has only been spawned)."""
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(record), json.dumps(cfg.to_dict()), str(steps)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    assert line.startswith("server saw step"), line + proc.stdout.read()
    return proc


def _kill(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGKILL)
    server.wait(timeout=30)
    server.stdout.close()


def _engine_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # no server left to reap it
    except psutil.NoSuchProcess:
        return True


def _wait(manager: JobManager, until, timeout: float = TIMEOUT):
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = manager.refresh(force=True)
        if until(state):
            return state
        time.sleep(0.2)
    raise AssertionError(f"status {manager.state.status}, step {manager.state.step}")


def test_a_restarted_server_follows_and_stops_the_training(tmp_path, tiny_sd1, image_root):
    record = tmp_path / "data" / "jobs" / "current.json"
    cfg = make_run_config(tmp_path, tiny_sd1, image_root, output_name="long", max_train_epochs=1,
                          max_train_steps=2000, save_every_n_epochs=0)
    _kill(_server_until(record, cfg, steps=1))
    pid = read_record(record).pid
    assert not _engine_gone(pid), "the engine died with the server"

    manager = JobManager(record_path=record)
    state = manager.state
    assert state.active and state.step >= 1 and state.total_steps == 2000 and state.loss
    seen = state.step
    state = _wait(manager, lambda s: s.step > seen)  # live progress, not a replay
    with pytest.raises(JobRefused) as exc:
        manager.start(cfg)
    assert exc.value.key == "job.refused_running"
    assert manager.stop() == "job.stop_requested"
    state = _wait(manager, lambda s: s.finished and manager.job.ended)  # done, and the process has exited
    assert state.status == "stopped", render_status(state, "en")
    assert (tmp_path / "out" / "long-stopped.safetensors").exists()
    assert any(f.kind == "stopped" for f in state.saved)
    assert read_record(record).state == "ended" and read_record(record).status == "stopped"
    assert _engine_gone(pid)


def test_a_training_that_ended_while_the_server_was_down(tmp_path, tiny_sd1, image_root):
    record = tmp_path / "data" / "jobs" / "current.json"
    cfg = make_run_config(tmp_path, tiny_sd1, image_root, output_name="short", max_train_epochs=1,
                          max_train_steps=3, save_every_n_epochs=0, sample_every_n_steps=3,
                          sample_prompts="a disc --w 64 --h 64 --s 2")
    _kill(_server_until(record, cfg, steps=0))
    pid = read_record(record).pid
    deadline = time.time() + TIMEOUT
    while not _engine_gone(pid) and time.time() < deadline:
        time.sleep(0.5)
    assert _engine_gone(pid)

    state = JobManager(record_path=record).state
    assert state.status == "completed", render_status(state, "en")
    assert state.step == 3 and [Path(f.path).name for f in state.saved] == ["short.safetensors"]
    assert state.samples and "short.safetensors" in render_status(state, "en")
    assert read_record(record).status == "completed"
    # the library notes the real engine printed are in its log file, not in the page's log
    log_lines = (tmp_path / "out" / "short.log").read_text(encoding="utf-8").splitlines()
    assert any(is_library_noise(line) for line in log_lines)
    assert "step 3/3" in state.log_tail
    assert not any(is_library_noise(line) for line in state.log_tail.splitlines())
