"""The checkpoint writer: the LoRA file and its state folder, the run's file names, and what happens when
the disk is full. Only the main process writes; the others wait for it."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from accelerate import Accelerator

from trainer.errors import TrainingError
from trainer.events import EventWriter, control_path
from trainer.training.state import TrainPosition, save_state


@dataclass
class RunFiles:
    """Names of everything a run writes into output_dir (kohya's naming)."""

    output_dir: Path
    name: str
    ext: str

    def lora(self, suffix: str = "") -> Path:
        return self.output_dir / f"{self.name}{suffix}.{self.ext}"

    def epoch_lora(self, epoch: int) -> Path:
        return self.lora(f"-{epoch:06d}")

    def step_lora(self, step: int) -> Path:
        return self.lora(f"-step{step:08d}")

    def stopped_lora(self) -> Path:
        """`<name>-stopped`, or -stopped-2, -stopped-3 ... where an earlier stop of this name left its file
        or its state: a resumed run that stops again keeps the first stop's files."""
        count = 1
        while True:
            path = self.lora("-stopped" if count == 1 else f"-stopped-{count}")
            if not path.exists() and not self.state_dir(path).exists():
                return path
            count += 1

    def control(self, request: str) -> Path:
        return control_path(self.output_dir, self.name, request)

    def state_dir(self, lora_path: Path) -> Path:
        return lora_path.with_name(lora_path.stem + "-state")

    @property
    def config_json(self) -> Path:
        return self.output_dir / f"{self.name}.json"

    @property
    def samples_dir(self) -> Path:
        return self.output_dir / "sample"


@dataclass
class CheckpointWriter:
    """Writes what a run saves: `save(path, kind=...)`, kind one of step, epoch, final, stopped."""

    files: RunFiles
    events: EventWriter
    stop: Any  # StopSignal: a stop ends the waiting for disk space
    accelerator: Accelerator
    network: Any  # LoraNetwork
    optimizer: Any
    lr_scheduler: Any
    noise_generator: torch.Generator
    position: TrainPosition
    metadata: Callable[..., dict[str, str]]  # (epoch=, step=) -> the file's ss_* metadata
    save_precision: str
    save_state: bool  # every save writes its state folder too (a stopped save always does)
    saved_files: list[str] = field(default_factory=list)
    ema: Any = None  # NetworkEMA: the files hold its average, the state both
    save_non_ema: bool = False  # with EMA: also `<file>-non_ema` with the raw weights

    def save(self, path: Path, *, kind: str, epoch: int, step: int) -> None:
        """Save the LoRA (and its state). A full disk does not lose the weights: a periodic save is skipped
        with a `disk_full` warning (the next one tries again); the final or stopped save waits and retries
        until it succeeds or a stop arrives (then one more try, then the `disk_full` error)."""
        if self.accelerator.is_main_process:
            self._save_on_main(path, kind=kind, epoch=epoch, step=step)
        self.accelerator.wait_for_everyone()

    def _save_on_main(self, path: Path, *, kind: str, epoch: int, step: int) -> None:
        from trainer.training.disk_full import full_disk

        try:
            self._write(path, kind=kind, epoch=epoch, step=step)
            return
        except OSError as exc:
            full = full_disk(exc, path.parent, self._save_bytes(kind), self._previous_save())
            if full is None:
                raise
        if kind in ("epoch", "step"):
            self.events.emit("warning", code="disk_full", field="output_dir", params=full.params(),
                             message=full.skipped_message(self._unsaved_name(path)))
        else:
            self._retry(path, kind=kind, epoch=epoch, step=step, full=full)

    def _retry(self, path: Path, *, kind: str, epoch: int, step: int, full: Any) -> None:
        from trainer.training.disk_full import FAILED_HINT, RETRY_SECONDS, full_disk, stop_mark, wait_for_stop

        mark = stop_mark(self.stop)  # a stop that arrives from now on ends the waiting
        self.events.emit("warning", code="disk_full", field="output_dir", params=full.params(),
                         message=full.waiting_message(self._unsaved_name(path), RETRY_SECONDS))
        while True:
            last_try = wait_for_stop(self.stop, mark, RETRY_SECONDS)
            try:
                self._write(path, kind=kind, epoch=epoch, step=step)
                self.events.emit("log", message=f"saved {path.name}: the disk had room again")
                return
            except OSError as exc:
                full = full_disk(exc, path.parent, self._save_bytes(kind), self._previous_save())
                if full is None:
                    raise
            if last_try:
                raise TrainingError("disk_full", full.failed_message(self._unsaved_name(path)), field="output_dir",
                                    hint=FAILED_HINT, params=full.params())

    def _save_bytes(self, kind: str) -> int:
        """About how much a save writes: the LoRA tensors in the save precision, plus the state's tensors."""
        state = self.network.trainable_state()
        per_value = 4 if self.save_precision == "float" else 2
        total = sum(t.numel() for t in state.values()) * per_value + 65536  # + header and metadata
        if self.save_state or kind == "stopped":
            total += sum(t.numel() * t.element_size() for t in state.values())
            total += sum(v.numel() * v.element_size() for slot in self.optimizer.state.values()
                         for v in slot.values() if isinstance(v, torch.Tensor))
        return total

    def _previous_save(self) -> Optional[str]:
        return self.saved_files[-1] if self.saved_files else None

    def _unsaved_name(self, path: Path) -> str:
        """What a failed save did not write: the LoRA file, or only the state folder beside it."""
        return self.files.state_dir(path).name if str(path) in self.saved_files else path.name

    def _write(self, path: Path, *, kind: str, epoch: int, step: int) -> None:
        from trainer.network.kohya_format import write_lora_file

        if str(path) not in self.saved_files:  # a retry after a full disk does not rewrite what it wrote
            metadata = self.metadata(epoch=epoch, step=step)
            with self.ema.applied() if self.ema is not None else nullcontext():
                lora = self.network.to_lora_file(metadata)
            # no save replaces a file (a stop takes a free name: RunFiles.stopped_lora)
            write_lora_file(path, lora, save_precision=self.save_precision, exclusive=True)
            if self.ema is not None and self.save_non_ema:
                raw = path.with_name(f"{path.stem}-non_ema{path.suffix}")
                write_lora_file(raw, self.network.to_lora_file(metadata), save_precision=self.save_precision,
                                exclusive=True)
                self.events.emit("saved", path=str(raw), kind="non_ema", epoch=epoch, step=step,
                                 size_bytes=raw.stat().st_size)
            self.saved_files.append(str(path))
            self.events.emit("saved", path=str(path), kind=kind, epoch=epoch, step=step,
                             size_bytes=path.stat().st_size)
        if self.save_state or kind == "stopped":
            state_dir = save_state(self.files.state_dir(path), position=self.position,
                                   network_state=self.network.trainable_state(), optimizer=self.optimizer,
                                   scheduler=self.lr_scheduler, noise_generator=self.noise_generator,
                                   grad_scaler=self.accelerator.scaler,
                                   num_processes=self.accelerator.num_processes,
                                   trees={"ema": self.ema.state_dict()} if self.ema is not None else None)
            self.events.emit("saved", path=str(state_dir), kind="state", epoch=epoch, step=step, size_bytes=0)
