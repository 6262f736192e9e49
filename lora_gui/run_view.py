"""The training panel's view state: engine events folded into what the page shows.

Every part of the panel (progress, loss, samples, files, log, status) carries a version number
that changes when the part changes, so a page that polls once a second only redraws what moved.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from lora_gui.log_noise import without_library_noise
from trainer.events import EventReader

PARTS = ("progress", "loss", "samples", "files", "log", "status")
MAX_LOSS_POINTS = 20_000


@dataclass
class SampleImage:
    path: str
    prompt: str
    step: int
    epoch: int


@dataclass
class SavedFile:
    path: str
    kind: str
    size_bytes: int
    epoch: Optional[int]
    step: Optional[int]


@dataclass
class ViewState:
    """What one training job looks like to the page. `status` is one of
    idle, starting, running, stopping, completed, stopped, failed."""

    status: str = "idle"
    job_id: int = 0
    kind: str = "train"  # "train" | "slider"
    output_dir: str = ""
    output_name: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    device: str = ""
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    epochs: int = 0
    steps_per_epoch: int = 0
    sec_per_step: float = 0.0
    eta_sec: float = 0.0
    lr: float = 0.0
    resources: dict[str, Any] = field(default_factory=dict)  # the last step's (trainer.training.resources)
    avg_loss: Optional[float] = None
    loss: list[tuple[int, float]] = field(default_factory=list)
    epoch_loss: list[tuple[int, float]] = field(default_factory=list)
    samples: list[SampleImage] = field(default_factory=list)
    saved: list[SavedFile] = field(default_factory=list)
    messages: deque = field(default_factory=lambda: deque(maxlen=200))  # (level, text) from log/warning events
    warnings: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    done: Optional[dict[str, Any]] = None
    exit_code: Optional[int] = None
    log_tail: str = ""
    events_seen: int = 0
    stage: Optional[dict[str, Any]] = None  # the last `stage` event: name, index, count, kind, steps
    stage_plan: list[dict[str, Any]] = field(default_factory=list)  # known stages (slider: trainer.slider.plan_stages)
    versions: dict[str, int] = field(default_factory=lambda: {p: 0 for p in PARTS})

    def bump(self, *parts: str) -> None:
        for p in parts:
            self.versions[p] += 1

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "stopped", "failed")

    @property
    def active(self) -> bool:
        return self.status in ("starting", "running", "stopping")

    @property
    def progress(self) -> float:
        if self.status == "completed":
            return 1.0
        if self.total_steps <= 0:
            return 0.0
        return min(1.0, self.step / self.total_steps)


def fold(state: ViewState, event: dict[str, Any]) -> None:
    """Apply one engine event to the view state (an event of a type this version does not know only counts)."""
    state.events_seen += 1
    kind = event.get("type")
    handler = FOLDS.get(kind) if isinstance(kind, str) else None
    if handler is not None:
        handler(state, event)


# One handler per event type (trainer.events.EVENT_FIELDS): each reads only the fields its type carries,
# plus `time` (tests/test_gui_event_fold.py checks both).
Event = dict[str, Any]


def _fold_start(state: ViewState, event: Event) -> None:
    state.total_steps = int(event.get("total_steps") or 0)
    state.epochs = int(event.get("epochs") or 0)
    state.steps_per_epoch = int(event.get("steps_per_epoch") or 0)
    state.step = int(event.get("resumed_from_step") or 0)
    state.device = str(event.get("device") or "")
    if state.status in ("idle", "starting"):
        state.status = "running"
    state.bump("progress", "status")


def _fold_step(state: ViewState, event: Event) -> None:
    state.step = int(event.get("step") or 0)
    state.total_steps = int(event.get("total_steps") or state.total_steps)
    state.epoch = int(event.get("epoch") or state.epoch)
    state.sec_per_step = float(event.get("sec_per_step") or 0.0)
    state.eta_sec = float(event.get("eta_sec") or 0.0)
    state.lr = float(event.get("lr") or 0.0)
    state.resources = dict(event.get("resources") or {})
    if event.get("avg_loss") is not None:
        state.avg_loss = float(event["avg_loss"])
    if event.get("loss") is not None and len(state.loss) < MAX_LOSS_POINTS:
        state.loss.append((state.step, float(event["loss"])))
    if state.status == "starting":
        state.status = "running"
        state.bump("status")
    state.bump("progress", "loss")


def _fold_epoch(state: ViewState, event: Event) -> None:
    state.epoch = int(event.get("epoch") or state.epoch)
    state.epochs = int(event.get("epochs") or state.epochs)
    if event.get("avg_loss") is not None:
        state.epoch_loss.append((state.epoch, float(event["avg_loss"])))
    state.bump("progress")


def _fold_sample(state: ViewState, event: Event) -> None:
    prompts = list(event.get("prompts") or [])
    for i, path in enumerate(event.get("paths") or []):
        prompt = prompts[i] if i < len(prompts) else ""
        state.samples.append(SampleImage(str(path), str(prompt), int(event.get("step") or 0),
                                         int(event.get("epoch") or 0)))
    state.bump("samples")


def _fold_saved(state: ViewState, event: Event) -> None:
    state.saved.append(SavedFile(str(event.get("path", "")), str(event.get("kind", "")),
                                 int(event.get("size_bytes") or 0), event.get("epoch"), event.get("step")))
    state.bump("files")


def _fold_log(state: ViewState, event: Event) -> None:
    state.messages.append(("log", str(event.get("message", ""))))
    state.bump("log")


def _fold_warning(state: ViewState, event: Event) -> None:
    state.messages.append(("warning", str(event.get("message", ""))))
    state.bump("log")
    state.warnings.append(event)
    state.bump("status")


def _fold_error(state: ViewState, event: Event) -> None:
    state.errors.append(event)
    state.bump("status")


def _fold_stage(state: ViewState, event: Event) -> None:
    state.stage = {key: event.get(key) for key in ("name", "index", "count", "kind", "steps")}
    state.bump("progress")


def _fold_done(state: ViewState, event: Event) -> None:
    state.done = event
    status = str(event.get("status") or "failed")
    state.status = status if status in ("completed", "stopped", "failed") else "failed"
    state.finished_at = float(event.get("time") or 0.0)
    state.bump("status", "progress", "files")


FOLDS: dict[str, Callable[[ViewState, Event], None]] = {
    "start": _fold_start, "step": _fold_step, "epoch": _fold_epoch, "sample": _fold_sample, "saved": _fold_saved,
    "log": _fold_log, "warning": _fold_warning, "error": _fold_error, "stage": _fold_stage, "done": _fold_done,
}


class TailReader:
    """EventReader over a file that may hold earlier runs: events older than `since` are skipped."""

    def __init__(self, path: Path, since: float):
        self.reader = EventReader(path)
        self.since = since

    def poll(self) -> list[dict[str, Any]]:
        return [e for e in self.reader.poll() if float(e.get("time") or 0.0) >= self.since]


def read_log_tail(path: Path, max_lines: int = 40, max_bytes: int = 16_384) -> str:
    """The last lines of the engine's stdout/stderr log, without known harmless library notes."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n")
    # tqdm-style carriage returns: keep the last state of each line
    lines = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
    if size > max_bytes:
        lines = lines[1:]
    return "\n".join(without_library_noise(lines)[-max_lines:]).rstrip()
