"""The resumable states of an output folder (trainer/resumable.py, torch-free: the page lists them)."""

from __future__ import annotations

import json
import os

from trainer.resumable import STATE_FILE, find_resumable_states


def _state(folder, step: int, epoch: int, mtime: float) -> None:
    folder.mkdir()
    record = folder / STATE_FILE
    record.write_text(json.dumps({"global_step": step, "epoch": epoch, "batch_in_epoch": 0, "loss_history": []}))
    os.utime(record, (mtime, mtime))


def test_states_are_found_with_their_run_kind_and_step_newest_first(tmp_path):
    _state(tmp_path / "my-lora-stopped-state", 130, 2, 300)
    _state(tmp_path / "my-lora-000002-state", 80, 2, 200)
    _state(tmp_path / "my-lora-step00000050-state", 50, 1, 100)
    _state(tmp_path / "other-state", 240, 6, 400)
    (tmp_path / "empty-state").mkdir()  # no position file: not a state
    (tmp_path / "broken-stopped-state").mkdir()
    (tmp_path / "broken-stopped-state" / STATE_FILE).write_text("{not json")
    (tmp_path / "my-lora.safetensors").write_bytes(b"")
    states = find_resumable_states(tmp_path)
    assert [(s.run_name, s.kind, s.step, s.epoch) for s in states] == [
        ("other", "final", 240, 7), ("my-lora", "stopped", 130, 3), ("my-lora", "epoch", 80, 3),
        ("my-lora", "step", 50, 2)]
    assert states[1].run_config == tmp_path / "my-lora.json"
    assert find_resumable_states(tmp_path / "missing") == []
