"""The engine's control files during a run: `<name>.save_now` and `<name>.sample_now` are answered after the
step they are seen at (a step LoRA, sample images, each reported as an event) and removed; `<name>.stop` ends
the run as before."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_run_config
from trainer.events import events_path, read_events
from trainer.tiny import make_image_folder

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300


def wait_for(stream: Path, proc: subprocess.Popen, found, what: str) -> list[dict]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        events = read_events(stream)
        if found(events):
            return events
        assert proc.poll() is None, f"the engine exited ({proc.returncode}) before {what}"
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no {what} within {TIMEOUT} s")


def test_save_now_and_sample_now_are_answered_after_the_current_step(tmp_path, tiny_sd1, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    make_image_folder(tmp_path / "img" / "1_sks disc", 2, caption="sks disc")
    cfg = make_run_config(tmp_path, tiny_sd1, tmp_path / "img", max_train_epochs=500, save_every_n_epochs=0,
                          sample_prompts="a red circle --w 64 --h 64 --s 2")
    cfg.save(tmp_path / "run.json")
    out, stream = Path(cfg.output_dir), events_path(cfg.output_dir, "tiny")
    with open(tmp_path / "engine.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "trainer", "--config", str(tmp_path / "run.json"), "--quiet"],
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_for(stream, proc, lambda ev: any(e["type"] == "step" for e in ev), "a first step")
        (out / "tiny.save_now").touch()
        events = wait_for(stream, proc, lambda ev: any(e["type"] == "saved" for e in ev), "the save")
        saved = [e for e in events if e["type"] == "saved"][0]
        asked = [e["step"] for e in events if e["type"] == "step"][-1]
        assert saved["kind"] == "step" and Path(saved["path"]).name == f"tiny-step{saved['step']:08d}.safetensors"
        assert Path(saved["path"]).is_file() and saved["step"] <= asked + 1  # within one step
        assert not (out / "tiny.save_now").exists()
        (out / "tiny.sample_now").touch()
        events = wait_for(stream, proc, lambda ev: any(e["type"] == "sample" for e in ev), "the samples")
        sample = [e for e in events if e["type"] == "sample"][0]
        assert len(sample["paths"]) == 1 and Path(sample["paths"][0]).is_file()
        assert not (out / "tiny.sample_now").exists()
        (out / "tiny.stop").touch()
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    done = read_events(stream)[-1]
    assert done["type"] == "done" and done["status"] == "stopped"
