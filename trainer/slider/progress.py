"""The slider run's one event stream, in the engine's protocol (README "event protocol").

A slider run is several stages (trainings, the merge, the resize, the preview) but the GUI's training
panel follows one stream: one `start` whose `total_steps` is the sum of every training's steps, `step`
events counted across the trainings, one `done` at the very end. Stage changes are `stage` events
(`name`, `index`, `count`, `kind`, `steps`) with a `log` line beside them, so a reader that does not know
`stage` still shows them.

Each engine training (copy method) writes into a `StageSink` instead of the stream itself: its
`start`/`epoch`/`done` stay in the training's own file in the work folder, its steps are renumbered, its
final LoRA is reported as `saved` kind "intermediate", and its errors and warnings pass through with
the field renamed to the spec's. Torch-free.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from trainer.events import EventWriter
from trainer.slider.spec import SliderSpec, Stage, spec_field

ETA_WINDOW = 20  # steps averaged for the ETA


class SliderEvents:
    """Writes the slider stream: stages, steps with one ETA over all trainings, saves, errors."""

    def __init__(self, writer: EventWriter, spec: SliderSpec, stages: list[Stage]):
        self.writer = writer
        self.spec = spec
        self.stages = stages
        self.total_steps = sum(s.steps for s in stages)
        self.step = 0  # optimizer steps done over all trainings
        self.saved_files: list[str] = []
        self._sec_per_step: list[float] = []
        self._losses: list[float] = []

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        return self.writer.emit(type, **fields)

    def log(self, message: str) -> None:
        self.emit("log", message=message)

    def start(self, *, num_train_images: int, config_path: Path, device: str) -> None:
        trainings = [s for s in self.stages if s.kind == "train"]
        # `epoch` counts the trainings in a slider stream (copy: one per folder; paired: one).
        self.emit("start", total_steps=self.total_steps, epochs=len(trainings),
                  steps_per_epoch=max([s.steps for s in trainings], default=0), num_train_images=num_train_images,
                  num_reg_images=0, buckets=[], resumed_from_step=0, config_path=str(config_path), device=device)

    def begin(self, stage: Stage) -> None:
        index = self.stages.index(stage) + 1
        self.emit("stage", name=stage.name, index=index, count=len(self.stages), kind=stage.kind, steps=stage.steps)
        what = f" ({stage.steps} steps)" if stage.steps else ""
        self.log(f"stage {index}/{len(self.stages)}: {stage.name}{what}")

    def skip_steps(self, stage: Stage, reason: str) -> None:
        """A training that does not run (its LoRA is reused): its steps count as done."""
        self.step += stage.steps
        self.log(f"{stage.name}: {reason}")

    def step_done(self, *, loss: float, lr: float, sec_per_step: float, epoch: int,
                  resources: Optional[dict] = None) -> None:
        """One optimizer step of the current training."""
        self.step += 1
        self._sec_per_step = (self._sec_per_step + [sec_per_step])[-ETA_WINDOW:]
        self._losses = (self._losses + [loss])[-100:]
        mean = sum(self._sec_per_step) / len(self._sec_per_step)
        self.emit("step", step=self.step, total_steps=self.total_steps, epoch=epoch, loss=loss,
                  avg_loss=sum(self._losses) / len(self._losses), lr=lr, sec_per_step=sec_per_step,
                  eta_sec=mean * max(0, self.total_steps - self.step), resources=resources or {})

    def saved(self, path: Path, *, kind: str, epoch: int) -> None:
        path = Path(path)
        self.saved_files.append(str(path))
        self.emit("saved", path=str(path), kind=kind, epoch=epoch, step=self.step,
                  size_bytes=path.stat().st_size if path.is_file() else 0)

    def error(self, code: str, message: str, *, field: Optional[str] = None, hint: Optional[str] = None,
              params: Optional[dict] = None) -> None:
        self.emit("error", code=code, message=message, field=field, hint=hint, params=params or {})

    def done(self, status: str, *, started: float, message: str) -> None:
        self.emit("done", status=status, files=self.saved_files, wall_time_sec=time.time() - started,
                  steps_done=self.step, message=message)

    def train_fields(self) -> "TrainFieldEvents":
        """An emitter for engine code (e.g. resolve_precision) whose warnings name TrainConfig fields."""
        return TrainFieldEvents(self)

    def training_sink(self, stage: Stage, epoch: int, raw_path: Path) -> "StageSink":
        return StageSink(self, stage, epoch, raw_path)


class TrainFieldEvents:
    """Passes events through, renaming the `field` of warnings and errors to the spec's field."""

    def __init__(self, parent: SliderEvents):
        self.parent = parent

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        if type in ("warning", "error"):
            fields["field"] = spec_field(fields.get("field"), self.parent.spec)
        return self.parent.emit(type, **fields)


class StageSink:
    """What `trainer.train.run_training` writes to during one copy-method training (an EventWriter stand-in).

    Every event also goes, unchanged, to the training's own file (`raw_path`, in the work folder)."""

    def __init__(self, parent: SliderEvents, stage: Stage, epoch: int, raw_path: Path):
        self.parent = parent
        self.stage = stage
        self.epoch = epoch
        self.raw = EventWriter(raw_path)
        self.status: Optional[str] = None  # the training's `done` status
        self.steps_done = 0
        self.files: list[str] = []

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        event = self.raw.emit(type, **fields)
        parent = self.parent
        if type == "step":
            self.steps_done = fields["step"]
            parent.step_done(loss=fields["loss"], lr=fields["lr"], sec_per_step=fields["sec_per_step"],
                             epoch=self.epoch)
        elif type == "saved":
            kind = "intermediate" if fields["kind"] == "final" else fields["kind"]
            parent.saved(Path(fields["path"]), kind=kind, epoch=self.epoch)
        elif type == "sample":
            parent.emit("sample", **{**fields, "step": parent.step, "epoch": self.epoch})
        elif type in ("warning", "error"):
            moved = dict(fields, field=spec_field(fields.get("field"), parent.spec))
            if type == "error":
                moved["message"] = f"{self.stage.name}: {fields['message']}"
            parent.emit(type, **moved)
        elif type == "log":
            parent.emit("log", message=f"{self.stage.name}: {fields['message']}")
        elif type == "start":
            parent.log(f"{self.stage.name}: {fields['num_train_images']} images, {fields['total_steps']} steps "
                       f"on {fields['device']}")
        elif type == "done":
            self.status = fields["status"]
            self.files = list(fields.get("files") or [])
        # `epoch` events of a training are left out: its epochs are not the stream's.
        return event

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> "StageSink":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
