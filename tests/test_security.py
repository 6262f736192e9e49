"""Nothing a user opens may run code: resume state folders are read without pickle."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

from tests.conftest import make_run_config, run_engine
from trainer.errors import TrainingError
from trainer.training.state import TrainPosition, load_state, save_state

REPO = Path(__file__).resolve().parent.parent


class _RunsACommand:
    """Unpickling this runs `touch <marker>`: what a crafted scheduler.pt did to earlier versions."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write_state(folder: Path) -> Path:
    """A real state folder: a real optimizer after one step, a real scheduler and generator."""
    param = torch.nn.Parameter(torch.randn(4, 3))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    param.grad = torch.randn(4, 3)
    optimizer.step()
    scheduler.step()
    return save_state(folder / "run-stopped-state", position=TrainPosition(3, 0, 3, [0.5, 0.25]),
                      network_state={"w": param.detach()}, optimizer=optimizer, scheduler=scheduler,
                      noise_generator=torch.Generator().manual_seed(5))


def _plant_pickle(state: Path, name: str, marker: Path) -> Path:
    planted = state / name
    torch.save({"lr_lambdas": [_RunsACommand(marker)]}, planted)
    # The file is really malicious: the old loader (weights_only=False) runs the command.
    probe = marker.with_name("probe-" + marker.name)
    torch.save({"x": _RunsACommand(probe)}, state.parent / "probe.pt")
    torch.load(state.parent / "probe.pt", weights_only=False)
    assert probe.exists()
    return planted


def test_state_folder_is_json_and_safetensors_and_round_trips(tmp_path):
    state = _write_state(tmp_path)
    names = sorted(p.name for p in state.iterdir())
    assert not [n for n in names if n.endswith((".pt", ".pth", ".ckpt", ".pkl"))], names
    assert {"optimizer.json", "optimizer.safetensors", "scheduler.json", "rng.json", "rng.safetensors",
            "network.safetensors", "train_state.json"} <= set(names)
    for name in names:
        blob = (state / name).read_bytes()
        if name.endswith(".json"):
            json.loads(blob)
        else:  # safetensors: an 8-byte length, then a JSON header
            json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])
    loaded = load_state(state)
    assert loaded.position == TrainPosition(3, 0, 3, [0.5, 0.25])
    assert set(loaded.optimizer["state"]) == {0} and loaded.optimizer["param_groups"][0]["betas"] == (0.9, 0.999)
    assert loaded.optimizer["state"][0]["exp_avg"].shape == (4, 3)
    assert loaded.scheduler["last_epoch"] == 1
    generator = torch.Generator()
    generator.set_state(loaded.rng["noise"])
    assert torch.equal(torch.randn(3, generator=generator), torch.randn(3, generator=torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("name", ["scheduler.pt", "optimizer.pt", "rng.pt", "grad_scaler.pt"])
def test_planted_pickle_is_refused_by_name_and_never_runs(tmp_path, name):
    state = _write_state(tmp_path)
    marker = tmp_path / "pwned"
    planted = _plant_pickle(state, name, marker)
    with pytest.raises(TrainingError) as caught:
        load_state(state)
    assert (caught.value.code, caught.value.field) == ("resume_state_unsafe", "resume")
    assert str(planted) in caught.value.message and "earlier version" in caught.value.message
    assert "network_weights" in caught.value.hint
    assert not marker.exists()


def test_engine_refuses_a_pickled_state_folder_and_runs_nothing(tmp_path, tiny_sd1, image_root):
    """The issue's case: an old-format state folder with a crafted scheduler.pt, resumed by the engine."""
    state = _write_state(tmp_path)
    for stem in ("optimizer", "scheduler", "rng"):  # the layout earlier versions wrote
        for suffix in (".json", ".safetensors"):
            (state / f"{stem}{suffix}").unlink(missing_ok=True)
        torch.save({}, state / f"{stem}.pt")
    marker = tmp_path / "pwned"
    planted = _plant_pickle(state, "scheduler.pt", marker)
    cfg = make_run_config(tmp_path, tiny_sd1, image_root, resume=str(state), max_train_steps=2)
    proc, events = run_engine(cfg, tmp_path)
    assert proc.returncode != 0
    errors = [e for e in events if e["type"] == "error"]
    assert [(e["code"], e["field"]) for e in errors] == [("resume_state_unsafe", "resume")], events
    assert str(planted) in errors[0]["message"]
    assert str(planted) in proc.stderr and "Traceback" not in proc.stderr  # --quiet still shows the refusal
    assert events[-1]["type"] == "done" and events[-1]["status"] == "failed"
    assert not [e for e in events if e["type"] == "step"]
    assert not marker.exists()


def test_damaged_state_file_is_refused_naming_it(tmp_path):
    state = _write_state(tmp_path)
    (state / "optimizer.json").write_text('{"state": {"__dict__": [[0, {"exp_avg": {"__tensor__": "t99"}}]]}}')
    with pytest.raises(TrainingError) as caught:
        load_state(state)
    assert caught.value.code == "resume_state_unreadable" and caught.value.field == "resume"
    assert str(state / "optimizer.json") in caught.value.message
    (state / "rng.safetensors").write_bytes(b"not a safetensors file")
    (state / "optimizer.json").unlink()
    with pytest.raises(TrainingError, match="optimizer.json: the file is missing"):
        load_state(state)


def test_no_code_path_unpickles_a_user_file():
    """Every torch.load passes weights_only=True; no pickle.load / allow_pickle=True anywhere."""
    offenders = []
    for path in [*(REPO / "trainer").rglob("*.py"), *(REPO / "lora_gui").rglob("*.py"), REPO / "app.py"]:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in match.group(1):
                offenders.append(f"{path.relative_to(REPO)}: {match.group(0)}")
        for bad in ("pickle.load", "pickle.loads", "allow_pickle=True", "weights_only=False", "dill.load"):
            if bad in text:
                offenders.append(f"{path.relative_to(REPO)}: {bad}")
    assert not offenders, offenders
