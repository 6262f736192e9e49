"""The server's job, written to disk: enough to find its engine again after the server restarts.

One JSON file (paths.job_record_path()) describes the current or last job: what was started (kind,
command, settings), where it writes (output folder, event file, log), and which process runs it
(pid plus the process's start time, since a pid alone may belong to another program after a
reboot). A job queue and a history can grow from the same record: a queued job is a record whose
`state` is "queued" and has no pid yet, a history is a folder of ended records.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from trainer.fileio import atomic_write_text

RECORD_VERSION = 1
STATES = ("running", "ended")


@dataclass
class JobRecord:
    id: int
    kind: str  # "train" | "slider"
    state: str  # "running" | "ended"
    output_dir: str
    name: str
    run_file: str  # run.json or the slider spec: the engine's only input, named in its command line
    command: list[str]
    cwd: str
    config: dict[str, Any]  # the TrainConfig / SliderSpec as a dict (the run file may be rewritten later)
    started_at: float
    pid: int = 0
    create_time: float = 0.0  # the engine process's start time (psutil), to tell it from a reused pid
    events_file: str = ""
    log_file: str = ""
    stop_file: str = ""
    stage_plan: list[dict[str, Any]] = field(default_factory=list)
    ended_at: float = 0.0
    status: str = ""  # how it ended: completed | stopped | failed
    exit_code: Optional[int] = None
    format_version: int = RECORD_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"


class RecordError(ValueError):
    """The record file exists but cannot be used; the message names the file and the problem."""


def write_record(path: Path, record: JobRecord) -> None:
    atomic_write_text(path, record.to_json())


def read_record(path: Path) -> Optional[JobRecord]:
    """The record at `path`, None when there is none; RecordError when it is damaged or from a newer app."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RecordError(f"cannot read the job record {path}: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RecordError(f"the job record {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RecordError(f"the job record {path} is not a JSON object")
    if data.get("format_version") != RECORD_VERSION:
        raise RecordError(f"the job record {path} has format_version {data.get('format_version')!r}; "
                          f"this app reads version {RECORD_VERSION}")
    known = {f.name for f in fields(JobRecord)}
    try:
        record = JobRecord(**{k: v for k, v in data.items() if k in known})
    except TypeError as exc:
        raise RecordError(f"the job record {path} lacks a field ({exc})") from None
    if record.state not in STATES or not isinstance(record.pid, int) or not isinstance(record.command, list):
        raise RecordError(f"the job record {path} has an unknown state or a bad pid/command")
    return record


def config_from_record(record: JobRecord) -> Any:
    """The job's TrainConfig or SliderSpec again; None when the settings no longer load (an older app's)."""
    try:
        if record.kind == "slider":
            from trainer.slider.spec import SliderSpec

            return SliderSpec.from_dict(record.config)
        from trainer.config import TrainConfig

        return TrainConfig.from_dict(record.config)
    except (ValueError, TypeError) as exc:
        print(f"The recorded job's settings do not load ({exc}); the page shows its progress only.", file=sys.stderr)
        return None


def read_record_or_warn(path: Path) -> Optional[JobRecord]:
    """Like read_record, but a damaged record is reported on the console and treated as no record."""
    try:
        return read_record(path)
    except RecordError as exc:
        print(f"Ignoring the last job: {exc}. The next Start replaces the file.", file=sys.stderr)
        return None
