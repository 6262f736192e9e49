"""The one job of this server (a training, or a slider LoRA run): start, stop, and follow its subprocess.

The job lives in the server process, not in a browser session: reloading the page or opening a
second tab shows the same job. Status comes only from the engine's event file (plus the exit
code and the log for crashes that never wrote a `done` event). Trainings (`python -m trainer`) and
slider runs (`python -m trainer.slider`) write the same event stream and share the one-job rule.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from lora_gui import engine
from lora_gui.events import TailReader, ViewState, fold, read_log_tail
from trainer.config import TrainConfig
from trainer.events import events_path

FORCE_KILL_AFTER_SEC = 15.0
POLL_INTERVAL_SEC = 0.25


class JobRefused(Exception):
    """Start was refused; `key` and `params` name the reason in the translation catalog."""

    def __init__(self, key: str, **params: Any):
        super().__init__(key)
        self.key = key
        self.params = params


@dataclass
class JobFiles:
    output_dir: Path
    name: str

    @property
    def run_json(self) -> Path:
        return self.output_dir / "run.json"

    @property
    def events(self) -> Path:
        return events_path(self.output_dir, self.name)

    @property
    def log(self) -> Path:
        return self.output_dir / f"{self.name}.log"

    @property
    def stop(self) -> Path:
        return self.output_dir / f"{self.name}.stop"


@dataclass
class JobRequest:
    """What to start: the command, the files written before it, and what the page shows of it."""

    kind: str  # "train" | "slider"
    files: JobFiles
    command: list[str]
    writes: dict[Path, str]  # run.json / the slider spec, written before the start
    config: Any  # the TrainConfig or SliderSpec
    stage_plan: list[dict[str, Any]] = field(default_factory=list)  # slider: the stages, in order


def training_request(cfg: TrainConfig) -> JobRequest:
    files = JobFiles(Path(cfg.output_dir), cfg.output_name)
    return JobRequest("train", files, engine.engine_command(files.run_json), {files.run_json: run_config_text(cfg)},
                      cfg)


def slider_request(spec: Any) -> JobRequest:
    """A slider run of `spec` (trainer.slider.SliderSpec with absolute paths): its spec file, its command."""
    from trainer.slider import plan_stages, slider_command

    spec_files = spec.files()
    files = JobFiles(spec_files.output_dir, spec.output_name)
    return JobRequest("slider", files, slider_command(str(spec_files.spec_json)),
                      {spec_files.spec_json: spec.to_json() + "\n"}, spec,
                      [asdict(stage) for stage in plan_stages(spec)])


@dataclass
class Job:
    id: int
    kind: str
    config: Any
    files: JobFiles
    proc: subprocess.Popen
    reader: TailReader
    log_handle: Any
    started_at: float
    stop_requested_at: float = 0.0


def run_config_text(cfg: TrainConfig) -> str:
    return cfg.to_json() + "\n"


def command_for(cfg: TrainConfig) -> list[str]:
    return training_request(cfg).command


class JobManager:
    """One job at a time. Thread-safe: every page's timer calls `refresh()`."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.job: Optional[Job] = None
        self.state = ViewState()
        self._next_id = 1
        self._last_poll = 0.0
        self._start_hooks: list[Callable[[Path], None]] = []

    def add_start_hook(self, hook: Callable[[Path], None]) -> None:
        """Called with the output folder of every job that starts (the page uses it to serve samples)."""
        self._start_hooks.append(hook)

    # ---- commands -------------------------------------------------------------------------
    def start(self, cfg: TrainConfig) -> ViewState:
        """Start a training."""
        return self.start_request(training_request(cfg))

    def start_slider(self, spec: Any) -> ViewState:
        """Start a slider LoRA run (the wizard); it counts as the one job like a training."""
        return self.start_request(slider_request(spec))

    def start_request(self, request: JobRequest) -> ViewState:
        with self.lock:
            self.refresh(force=True)
            if self.state.active:
                raise JobRefused("job.refused_running", name=self.state.output_name)
            if not engine.engine_available():
                raise JobRefused("job.refused_no_engine")
            files = request.files
            try:
                files.output_dir.mkdir(parents=True, exist_ok=True)
                files.stop.unlink(missing_ok=True)  # a stale stop file would end the run at once
                for path, text in request.writes.items():
                    path.write_text(text, encoding="utf-8")
                log_handle = open(files.log, "w", encoding="utf-8")
            except OSError as exc:
                raise JobRefused("job.refused_output_dir", path=str(files.output_dir), error=str(exc)) from None
            since = time.time() - 0.01
            env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
            try:
                proc = subprocess.Popen(request.command, cwd=str(engine.engine_cwd()),
                                        stdout=log_handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=env)
            except OSError as exc:
                log_handle.close()
                raise JobRefused("job.refused_spawn", error=str(exc)) from None
            self.job = Job(id=self._next_id, kind=request.kind, config=request.config, files=files, proc=proc,
                           reader=TailReader(files.events, since), log_handle=log_handle, started_at=since)
            self._next_id += 1
            previous = self.state.versions
            self.state = ViewState(status="starting", job_id=self.job.id, kind=request.kind,
                                   output_dir=str(files.output_dir), output_name=files.name, started_at=since,
                                   stage_plan=list(request.stage_plan))
            # versions keep growing across jobs so a page never mistakes a new job for an old one
            self.state.versions = {k: v + 1 for k, v in previous.items()}
            for hook in self._start_hooks:
                hook(files.output_dir)
            return self.state

    def stop(self) -> str:
        """Ask the engine to stop and save. Returns a catalog key describing what happened."""
        with self.lock:
            self.refresh(force=True)
            job = self.job
            if job is None or not self.state.active:
                return "job.stop_not_running"
            now = time.time()
            if job.stop_requested_at:
                if now - job.stop_requested_at >= FORCE_KILL_AFTER_SEC:
                    job.proc.kill()
                    return "job.stop_killed"
                return "job.stop_already"
            job.stop_requested_at = now
            try:
                job.files.stop.touch()
            except OSError:
                pass
            # SIGINT only once the engine has spoken: before that it may still be importing, and an
            # interrupt there is a crash, not a graceful stop. The stop file works in every phase.
            if sys.platform != "win32" and self.state.events_seen:
                try:
                    job.proc.send_signal(signal.SIGINT)
                except OSError:
                    pass
            self.state.status = "stopping"
            self.state.bump("status")
            return "job.stop_requested"

    # ---- following ------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> ViewState:
        """Read new events, notice the process ending; cheap when called often."""
        with self.lock:
            job = self.job
            now = time.time()
            if job is None or (not force and now - self._last_poll < POLL_INTERVAL_SEC):
                return self.state
            self._last_poll = now
            if self.state.finished and job.log_handle is None:
                return self.state
            for event in job.reader.poll():
                fold(self.state, event)
            code = job.proc.poll()
            self._update_log()
            if code is None and self.state.finished:
                _remove(job.files.stop)  # the run is over; the process is only exiting
            if code is not None:
                for event in job.reader.poll():  # the last lines written before exiting
                    fold(self.state, event)
                self.state.exit_code = code
                if not self.state.finished:
                    self.state.status = "failed"
                    self.state.errors.append({"code": "engine_exit", "message": "", "hint": "",
                                              "exit_code": code})
                    self.state.finished_at = now
                    self.state.bump("status", "progress")
                self._finish(job)
            return self.state

    def _update_log(self) -> None:
        assert self.job is not None
        tail = read_log_tail(self.job.files.log)
        if tail != self.state.log_tail:
            self.state.log_tail = tail
            self.state.bump("log")

    def _finish(self, job: Job) -> None:
        if job.log_handle is not None:
            job.log_handle.close()
            job.log_handle = None
        _remove(job.files.stop)

    def current_config(self) -> Optional[TrainConfig]:
        """The running training's settings (None while idle, or while a slider run is the job)."""
        with self.lock:
            job = self.job
            return job.config if job is not None and job.kind == "train" and self.state.active else None

    def current_slider(self) -> Any:
        """The running slider run's spec, or None."""
        with self.lock:
            job = self.job
            return job.config if job is not None and job.kind == "slider" and self.state.active else None

    def shutdown(self) -> None:
        """On server exit: ask a running engine to stop and save."""
        with self.lock:
            if self.job is not None and self.job.proc.poll() is None:
                self.stop()


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass
