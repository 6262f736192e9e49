"""The one training job of this server: start, stop, and follow the engine subprocess.

The job lives in the server process, not in a browser session: reloading the page or opening a
second tab shows the same job. Status comes only from the engine's event file (plus the exit
code and the log for crashes that never wrote a `done` event).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
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
class Job:
    id: int
    cfg: TrainConfig
    files: JobFiles
    proc: subprocess.Popen
    reader: TailReader
    log_handle: Any
    started_at: float
    stop_requested_at: float = 0.0


def run_config_text(cfg: TrainConfig) -> str:
    return cfg.to_json() + "\n"


def command_for(cfg: TrainConfig) -> list[str]:
    return engine.engine_command(JobFiles(Path(cfg.output_dir), cfg.output_name).run_json)


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
        with self.lock:
            self.refresh(force=True)
            if self.state.active:
                raise JobRefused("job.refused_running", name=self.state.output_name)
            if not engine.engine_available():
                raise JobRefused("job.refused_no_engine")
            files = JobFiles(Path(cfg.output_dir), cfg.output_name)
            try:
                files.output_dir.mkdir(parents=True, exist_ok=True)
                files.stop.unlink(missing_ok=True)  # a stale stop file would end the run at once
                files.run_json.write_text(run_config_text(cfg), encoding="utf-8")
                log_handle = open(files.log, "w", encoding="utf-8")
            except OSError as exc:
                raise JobRefused("job.refused_output_dir", path=str(files.output_dir), error=str(exc)) from None
            since = time.time() - 0.01
            env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
            try:
                proc = subprocess.Popen(engine.engine_command(files.run_json), cwd=str(engine.engine_cwd()),
                                        stdout=log_handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=env)
            except OSError as exc:
                log_handle.close()
                raise JobRefused("job.refused_spawn", error=str(exc)) from None
            self.job = Job(id=self._next_id, cfg=cfg, files=files, proc=proc, reader=TailReader(files.events, since),
                           log_handle=log_handle, started_at=since)
            self._next_id += 1
            previous = self.state.versions
            self.state = ViewState(status="starting", job_id=self.job.id, output_dir=str(files.output_dir),
                                   output_name=cfg.output_name, started_at=since)
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
        with self.lock:
            return self.job.cfg if self.job is not None and self.state.active else None

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
