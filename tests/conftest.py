"""Shared fixtures: tiny random-weight SD models and small image folders, built once per session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_sd1(models_dir) -> Path:
    from trainer.tiny import save_tiny_model

    return save_tiny_model(models_dir / "tiny-sd1", "sd1")


@pytest.fixture(scope="session")
def tiny_sd2v_file(models_dir) -> Path:
    from trainer.tiny import save_tiny_model

    return save_tiny_model(models_dir / "tiny-sd2-v.safetensors", "sd2-v")


@pytest.fixture
def image_root(tmp_path) -> Path:
    """img/10_sks disc with 3 captioned 64x64 images."""
    from trainer.tiny import make_image_folder

    root = tmp_path / "img"
    make_image_folder(root / "10_sks disc", 3, caption="sks disc, red circle")
    return root


def make_run_config(tmp_path: Path, model: Path, train_dir: Path, **overrides):
    """A small, fast run: 64 px, fp32, cached latents, no samples unless asked."""
    from trainer.config import TrainConfig

    base = dict(
        pretrained_model_name_or_path=str(model), train_data_dir=str(train_dir), output_dir=str(tmp_path / "out"),
        output_name="tiny", resolution="64", min_bucket_reso=64, max_bucket_reso=128, bucket_reso_steps=32,
        mixed_precision="no", save_precision="float", max_train_epochs=2, save_every_n_epochs=1,
        network_dim=4, network_alpha=2.0, learning_rate=1e-3, lr_scheduler="constant", seed=1,
    )
    base.update(overrides)
    return TrainConfig(**base)


def run_engine(cfg, tmp_path: Path, timeout: int = 600):
    """Run `python -m trainer --config run.json` in a subprocess; return (exit code, events)."""
    import subprocess
    import sys

    from trainer.events import events_path, read_events

    run_json = tmp_path / "run.json"
    cfg.save(run_json)
    proc = subprocess.run([sys.executable, "-m", "trainer", "--config", str(run_json), "--quiet"],
                          capture_output=True, text=True, timeout=timeout, cwd=Path(__file__).parent.parent)
    events = read_events(events_path(cfg.output_dir, cfg.output_name))
    return proc, events


def event_types(events) -> list[str]:
    return [e["type"] for e in events]


def dump(events) -> str:
    return "\n".join(json.dumps(e) for e in events)
