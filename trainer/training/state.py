"""Training state for resume: LoRA weights, optimizer, scheduler, RNG streams and position.

A state folder (`<name>-state`, `<name>-000002-state`, ...) is written under a temporary
name and renamed, so a killed run never leaves half a state behind.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "train_state.json"


@dataclass
class TrainPosition:
    global_step: int  # optimizer steps done
    epoch: int  # 0-based epoch the next batch belongs to
    batch_in_epoch: int  # batches of that epoch already consumed
    loss_history: list[float]  # recent losses, for the moving average


def capture_rng(noise_generator: torch.Generator) -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "noise": noise_generator.get_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], noise_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    noise_generator.set_state(state["noise"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(folder: Path, *, position: TrainPosition, network_state: dict[str, torch.Tensor],
               optimizer: torch.optim.Optimizer, scheduler: Any, noise_generator: torch.Generator,
               grad_scaler: Any = None) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in network_state.items()}, str(tmp / "network.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(capture_rng(noise_generator), tmp / "rng.pt")
        if grad_scaler is not None:
            torch.save(grad_scaler.state_dict(), tmp / "grad_scaler.pt")
        (tmp / STATE_FILE).write_text(json.dumps(asdict(position), indent=1), encoding="utf-8")
        if folder.exists():
            old = folder.with_name(folder.name + ".old")
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old)
        else:
            tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


@dataclass
class LoadedState:
    position: TrainPosition
    network_state: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    grad_scaler: dict[str, Any] | None


def load_state(folder: Path) -> LoadedState:
    from safetensors.torch import load_file

    folder = Path(folder)
    position = TrainPosition(**json.loads((folder / STATE_FILE).read_text(encoding="utf-8")))
    scaler_path = folder / "grad_scaler.pt"
    return LoadedState(
        position=position,
        network_state=load_file(str(folder / "network.safetensors")),
        optimizer=torch.load(folder / "optimizer.pt", weights_only=False),
        scheduler=torch.load(folder / "scheduler.pt", weights_only=False),
        rng=torch.load(folder / "rng.pt", weights_only=False),
        grad_scaler=torch.load(scaler_path, weights_only=False) if scaler_path.exists() else None,
    )


def is_state_folder(path: Path) -> bool:
    return (Path(path) / STATE_FILE).is_file()
