"""The JSON-lines event stream: the only channel from the engine to the UI.

Every event is one JSON object on its own line of `<output_dir>/<output_name>.events.jsonl`,
with `type` and `time` (Unix seconds) plus the fields listed in EVENT_FIELDS. The file is
append-only; a reader may start anywhere and catch up. Writing goes to the file directly
(never to stdout), so library noise on stdout/stderr cannot corrupt the stream.

This module is torch-free: the web process imports it to read the stream.
"""

from __future__ import annotations

import errno
import json
import time
from pathlib import Path
from typing import Any, Optional

# type -> fields it carries (besides `type` and `time`). README documents the same table.
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "start": ("total_steps", "epochs", "steps_per_epoch", "num_train_images", "num_reg_images",
              "buckets", "resumed_from_step", "config_path", "device"),
    "step": ("step", "total_steps", "epoch", "loss", "avg_loss", "lr", "sec_per_step", "eta_sec", "resources"),
    "epoch": ("epoch", "epochs", "avg_loss"),
    "sample": ("step", "epoch", "paths", "prompts"),
    "saved": ("path", "kind", "epoch", "step", "size_bytes"),
    "log": ("message",),
    "warning": ("message", "code", "field", "params"),
    "error": ("code", "message", "field", "hint", "params"),
    "done": ("status", "files", "wall_time_sec", "steps_done", "message"),
    # Multi-stage runs (the slider wizard, docs/SLIDER.md): the stage that begins now.
    "stage": ("name", "index", "count", "kind", "steps"),
}
DONE_STATUSES = ("completed", "stopped", "failed")


def events_path(output_dir: str | Path, output_name: str) -> Path:
    return Path(output_dir) / f"{output_name}.events.jsonl"


# The control files, the other direction of the protocol: `<output_name>.<request>` in the output folder asks
# the running engine to stop, to save now or to draw the samples now (README: Stop and resume).
CONTROL_REQUESTS = ("stop", "save_now", "sample_now")


def control_path(output_dir: str | Path, output_name: str, request: str) -> Path:
    if request not in CONTROL_REQUESTS:
        raise ValueError(f"unknown control request {request!r}")
    return Path(output_dir) / f"{output_name}.{request}"


class EventWriter:
    """Appends events to the stream file, one line per event, written through to the OS.

    A line the disk has no room for (ENOSPC) is kept and written before the next event, so a full disk
    delays events instead of losing them or stopping the run. `echo_errors` prints error events on
    stderr even when `echo` is off (a run refused with --quiet still says why)."""

    def __init__(self, path: Optional[str | Path], *, echo: bool = False, echo_errors: bool = False):
        """`path` None: a writer that writes no file (a run's processes other than the main one), only
        the echo."""
        self.path = Path(path) if path is not None else None
        self._fh = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "ab", buffering=0)
        self._pending = b""
        self.echo = echo
        self.echo_errors = echo_errors

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        if type not in EVENT_FIELDS:
            raise ValueError(f"unknown event type {type!r}")
        unknown = set(fields) - set(EVENT_FIELDS[type])
        if unknown:
            raise ValueError(f"event {type!r} has no fields {sorted(unknown)}")
        event = {"type": type, "time": round(time.time(), 3), **fields}
        line = json.dumps(event, ensure_ascii=False, default=_json_default)
        self._pending += (line + "\n").encode("utf-8")
        self._write_pending()
        if self.echo or (self.echo_errors and type == "error"):
            _echo(event)
        return event

    def _write_pending(self) -> None:
        """Unbuffered writes: readers tail the file, and the OS keeps written lines even if we are killed."""
        if self._fh is None:
            self._pending = b""
            return
        try:
            while self._pending:
                written = self._fh.write(self._pending)
                if not written:
                    break
                self._pending = self._pending[written:]
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise

    @property
    def unwritten_bytes(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        if self._fh is not None and not self._fh.closed:
            self._write_pending()
            self._fh.close()

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def _echo(event: dict[str, Any]) -> None:
    """A short human-readable line on stderr, for people running the engine in a terminal."""
    import sys

    t = event["type"]
    if t == "step":
        msg = (f"step {event['step']}/{event['total_steps']} epoch {event['epoch']} "
               f"loss {event['loss']:.4f} avg {event['avg_loss']:.4f} lr {event['lr']:.2e} "
               f"{event['sec_per_step']:.2f}s/it")
    elif t in ("log", "warning"):
        msg = f"{t}: {event['message']}"
    elif t == "error":
        msg = f"ERROR [{event['code']}] {event['message']}" + (f"\n  hint: {event['hint']}" if event.get("hint") else "")
    elif t == "saved":
        msg = f"saved {event['path']}"
    elif t == "done":
        msg = f"done: {event['status']} ({event.get('wall_time_sec', 0):.1f}s)"
    else:
        msg = f"{t}: " + json.dumps({k: v for k, v in event.items() if k not in ('type', 'time')}, default=str)[:300]
    print(msg, file=sys.stderr, flush=True)


class EventReader:
    """Incremental tail of an events file: each `poll()` returns the complete new lines."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an unterminated last line waits for its newline
        events = []
        for line in lines:
            if not line.strip():
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events


def read_events(path: str | Path) -> list[dict[str, Any]]:
    return EventReader(path).poll()
