"""Training state for resume: LoRA weights, optimizer, scheduler, RNG streams and position.

A state folder (`<name>-state`, `<name>-000002-state`, ...) is written under a temporary
name and renamed, so a killed run never leaves half a state behind.

Nothing in a state folder is pickled: tensors go to safetensors files and everything else to
JSON (trainer/training/safe_tree.py), so resuming from a folder someone sent you cannot run code.
Folders from earlier versions (optimizer.pt, scheduler.pt, rng.pt: pickles) are refused unread.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from trainer.errors import TrainingError
from trainer.fileio import current_umask, write_synced
from trainer.resumable import STATE_FILE
from trainer.training.safe_tree import SafeTreeError, load_tree, save_tree

STATE_FORMAT = 2  # 1: the pickled *.pt files of earlier versions
NETWORK_FILE = "network.safetensors"
PICKLED_FILES = ("optimizer.pt", "scheduler.pt", "rng.pt", "grad_scaler.pt")
RESUME_HINT = ("Resume from the LoRA file instead: set it as the starting weights (network_weights) and "
               "leave resume empty; the optimizer then starts afresh.")


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
               grad_scaler: Any = None, num_processes: int = 1, trees: Optional[dict[str, Any]] = None) -> Path:
    """Write the state atomically (a temporary folder renamed into place). `trees`: more named parts of the
    run's state (the EMA's: "ema"), each a safe tree of its own."""
    from safetensors.torch import save

    folder = Path(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        write_synced(tmp / NETWORK_FILE, save({k: v.detach().cpu().contiguous() for k, v in network_state.items()}))
        save_tree(tmp, "optimizer", optimizer.state_dict())
        save_tree(tmp, "scheduler", scheduler.state_dict())
        save_tree(tmp, "rng", capture_rng(noise_generator))
        if grad_scaler is not None:
            save_tree(tmp, "grad_scaler", grad_scaler.state_dict())
        for name, tree in (trees or {}).items():
            save_tree(tmp, name, tree)
        record = {**asdict(position), "state_format": STATE_FORMAT, "num_processes": num_processes}
        write_synced(tmp / STATE_FILE, json.dumps(record, indent=1).encode("utf-8"))
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it 0700; a state folder is an ordinary folder
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
    num_processes: int = 1  # the batches of a step were split over this many processes
    ema: dict[str, Any] | None = None  # the EMA's state, when the run kept one


def load_state(folder: Path) -> LoadedState:
    """Read a state folder without executing anything in it.

    Raises TrainingError (field `resume`): `resume_state_unsafe` for a folder of pickled files from an
    earlier version, `resume_state_unreadable` for a missing or damaged file (the file is named)."""
    folder = Path(folder)
    pickled = [str(folder / name) for name in PICKLED_FILES if (folder / name).exists()]
    if pickled:
        raise TrainingError(
            "resume_state_unsafe",
            f"{', '.join(pickled)}: written by an earlier version of this trainer as pickle files, which can run "
            "code when they are read, so they are not opened.", field="resume", hint=RESUME_HINT,
            params={"path": pickled[0], "files": pickled})
    try:
        position, num_processes = _read_position(folder / STATE_FILE)
        network_state = _read_tensors(folder / NETWORK_FILE)
        has_scaler = (folder / "grad_scaler.json").exists()
        return LoadedState(position=position, network_state=network_state,
                           optimizer=load_tree(folder, "optimizer"), scheduler=load_tree(folder, "scheduler"),
                           rng=load_tree(folder, "rng"),
                           grad_scaler=load_tree(folder, "grad_scaler") if has_scaler else None,
                           num_processes=num_processes,
                           ema=load_tree(folder, "ema") if (folder / "ema.json").exists() else None)
    except SafeTreeError as exc:
        raise TrainingError("resume_state_unreadable", f"cannot resume from {folder}: {exc}", field="resume",
                            hint="Pick another state folder (<name>-...-state), or " + RESUME_HINT[0].lower()
                            + RESUME_HINT[1:], params={"path": str(exc.path)}) from None


def _read_position(path: Path) -> tuple[TrainPosition, int]:
    if not path.is_file():
        raise SafeTreeError(path, "the file is missing")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        names = {f.name for f in fields(TrainPosition)}
        return TrainPosition(**{k: record[k] for k in names}), int(record.get("num_processes", 1))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SafeTreeError(path, f"not a training position ({type(exc).__name__}: {exc})") from None


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise SafeTreeError(path, "the file is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SafeTreeError(path, f"not a readable safetensors file ({exc})") from None
