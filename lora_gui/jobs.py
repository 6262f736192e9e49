"""The one job of this server (a training, or a slider LoRA run): start, stop, and follow its subprocess.

The job lives in the server process, not in a browser session: reloading the page or opening a
second tab shows the same job. Status comes only from the engine's event file (plus the exit
code and the log for crashes that never wrote a `done` event). Trainings (`python -m trainer`) and
slider runs (`python -m trainer.slider`) write the same event stream and share the one-job rule.

The job is also recorded on disk (lora_gui.job_record): a server that was killed and started again
reattaches to the engine that kept training (progress, Stop), or shows how it ended meanwhile.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from lora_gui import engine
from lora_gui.engine_process import AttachedProcess, EngineProcess, find_engine, spawn_engine
from lora_gui.run_view import TailReader, ViewState, fold, read_log_tail
from lora_gui.job_record import JobRecord, config_from_record, read_record_or_warn, write_record
from trainer.config import TrainConfig
from trainer.events import control_path, events_path

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
        return self.control("stop")

    def control(self, request: str) -> Path:
        return control_path(self.output_dir, self.name, request)


@dataclass
class JobRequest:
    """What to start: the command, the files written before it, and what the page shows of it."""

    kind: str  # "train" | "slider"
    files: JobFiles
    command: list[str]
    writes: dict[Path, str]  # run.json / the slider spec, written before the start
    config: Any  # the TrainConfig or SliderSpec
    stage_plan: list[dict[str, Any]] = field(default_factory=list)  # slider: the stages, in order

    @property
    def run_file(self) -> Path:
        """The engine's input file (run.json or the slider spec), the one named in its command line."""
        return next(iter(self.writes))


def training_request(cfg: TrainConfig) -> JobRequest:
    files = JobFiles(Path(cfg.output_dir), cfg.output_name)
    return JobRequest("train", files, engine.engine_command(files.run_json), {files.run_json: run_config_text(cfg)},
                      cfg)


def slider_request(spec: Any) -> JobRequest:
    """A slider run of `spec` (trainer.slider.SliderSpec with absolute paths): its spec file, its command."""
    spec_files = spec.files()
    files = JobFiles(spec_files.output_dir, spec.output_name)
    return JobRequest("slider", files, engine.slider_command(str(spec_files.spec_json)),
                      {spec_files.spec_json: spec.to_json() + "\n"}, spec,
                      [asdict(stage) for stage in engine.slider_stages(spec)])


@dataclass
class Job:
    id: int
    kind: str
    config: Any  # the TrainConfig or SliderSpec (None for a recorded job whose settings no longer load)
    files: JobFiles
    proc: Optional[EngineProcess]  # None: a recorded job whose engine was gone when this server started
    reader: TailReader
    started_at: float
    record: JobRecord
    stop_requested_at: float = 0.0
    ended: bool = False  # the process has exited and the record says so

    def engine_running(self) -> bool:
        return self.proc is not None and self.proc.running()

    def exit_code(self) -> Optional[int]:
        return self.proc.exit_code if self.proc is not None else self.record.exit_code


def run_config_text(cfg: TrainConfig) -> str:
    return cfg.to_json() + "\n"


def command_for(cfg: TrainConfig) -> list[str]:
    return training_request(cfg).command


class JobManager:
    """One job at a time. Thread-safe: every page's timer calls `refresh()`.

    `record_path` (the app passes paths.job_record_path()) is where the job is recorded; a manager
    created with one reattaches to the job recorded there. Without one the job lives in memory only.
    """

    def __init__(self, record_path: Optional[Path] = None) -> None:
        self.lock = threading.RLock()
        self.job: Optional[Job] = None
        self.state = ViewState()
        self.record_path = record_path
        self._next_id = 1
        self._last_poll = 0.0
        self._start_hooks: list[Callable[[Path], None]] = []
        self._adopt_recorded_job()

    def add_start_hook(self, hook: Callable[[Path], None]) -> None:
        """Called with the output folder of every job that starts or is reattached (the page serves samples)."""
        with self.lock:
            self._start_hooks.append(hook)
            if self.job is not None:
                hook(self.job.files.output_dir)

    # ---- commands -------------------------------------------------------------------------
    def start(self, cfg: TrainConfig) -> ViewState:
        """Start a training."""
        return self.start_request(training_request(cfg))

    def start_slider(self, spec: Any) -> ViewState:
        """Start a slider LoRA run (the wizard); it counts as the one job like a training."""
        return self.start_request(slider_request(spec))

    def start_request(self, request: JobRequest) -> ViewState:
        with self.lock:
            if not self.state.active:
                self._adopt_recorded_job(live_only=True)  # another server on this data folder started one
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
            except OSError as exc:
                raise JobRefused("job.refused_output_dir", path=str(files.output_dir), error=str(exc)) from None
            since = time.time() - 0.01
            env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
            try:
                proc = spawn_engine(request.command, engine.engine_cwd(), files.log, env)
            except OSError as exc:
                raise JobRefused("job.refused_spawn", error=str(exc)) from None
            record = _record_of(request, self._next_id, since, proc)
            self._save_record(record)
            self._attach(Job(id=self._next_id, kind=request.kind, config=request.config, files=files, proc=proc,
                             reader=TailReader(files.events, since), started_at=since, record=record))
            return self.state

    def _attach(self, job: Job) -> None:
        """Make `job` the one the page shows, with a fresh view state."""
        self.job = job
        self._next_id = job.id + 1
        previous = self.state.versions
        self.state = ViewState(status="starting", job_id=job.id, kind=job.kind, output_dir=str(job.files.output_dir),
                               output_name=job.files.name, started_at=job.started_at,
                               stage_plan=list(job.record.stage_plan))
        # versions keep growing across jobs so a page never mistakes a new job for an old one
        self.state.versions = {k: v + 1 for k, v in previous.items()}
        for hook in self._start_hooks:
            hook(job.files.output_dir)

    def stop(self) -> str:
        """Ask the engine to stop and save. Returns a catalog key describing what happened."""
        with self.lock:
            self.refresh(force=True)
            job = self.job
            if job is None or job.proc is None or not self.state.active:
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
            if self.state.events_seen:
                job.proc.interrupt()
            self.state.status = "stopping"
            self.state.bump("status")
            return "job.stop_requested"

    def request(self, request: str) -> str:
        """Ask the running training for "save_now" or "sample_now" (answered after the current step).
        Returns a catalog key describing what happened."""
        with self.lock:
            self.refresh(force=True)
            job = self.job
            if job is None or job.proc is None or not self.state.active or job.kind != "train":
                return "job.request_not_running"
            try:
                job.files.control(request).touch()
            except OSError:
                return "job.request_failed"
            return f"job.{request}_requested"

    # ---- following ------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> ViewState:
        """Read new events, notice the process ending; cheap when called often."""
        with self.lock:
            job = self.job
            now = time.time()
            if job is None or (not force and now - self._last_poll < POLL_INTERVAL_SEC):
                return self.state
            self._last_poll = now
            if self.state.finished and job.ended:
                return self.state
            for event in job.reader.poll():
                fold(self.state, event)
            running = job.engine_running()
            self._update_log()
            if running and self.state.finished:
                _remove(job.files.stop)  # the run is over; the process is only exiting
            if not running:
                for event in job.reader.poll():  # the last lines written before exiting
                    fold(self.state, event)
                self._finish(job, job.exit_code(), now)
            return self.state

    def _update_log(self) -> None:
        assert self.job is not None
        tail = read_log_tail(self.job.files.log)
        if tail != self.state.log_tail:
            self.state.log_tail = tail
            self.state.bump("log")

    def _finish(self, job: Job, code: Optional[int], now: float) -> None:
        """The process has exited: a run without a `done` event failed; the record says how it ended."""
        self.state.exit_code = code
        if not self.state.finished:
            self.state.status = "failed"
            # an engine that ended while no server watched it leaves no exit code behind
            error = "engine_exit" if code is not None else "engine_gone"
            self.state.errors.append({"code": error, "message": "", "hint": "", "exit_code": code})
            self.state.finished_at = now
            self.state.bump("status", "progress")
        job.ended = True
        _remove(job.files.stop)
        if job.record.state != "ended":
            job.record.state, job.record.status, job.record.exit_code = "ended", self.state.status, code
            job.record.ended_at = self.state.finished_at or now
            self._save_record(job.record)

    # ---- the record on disk ---------------------------------------------------------------
    def _save_record(self, record: JobRecord) -> None:
        if self.record_path is None:
            return
        try:
            write_record(self.record_path, record)
        except OSError as exc:  # the run goes on; only a server restart would lose sight of it
            print(f"Could not record the job in {self.record_path} ({exc}); "
                  "a restarted server will not find this run.", file=sys.stderr)

    def _adopt_recorded_job(self, live_only: bool = False) -> None:
        """Show the recorded job: reattach to its engine if that still runs, else show how it ended.

        With `live_only`, only a running engine other than this manager's job is adopted."""
        record = read_record_or_warn(self.record_path) if self.record_path is not None else None
        if record is None:
            return
        if self.job is not None and (record.id, record.pid) == (self.job.id, self.job.record.pid):
            return
        proc: Optional[AttachedProcess] = None
        if record.state == "running":
            proc = find_engine(record.pid, record.create_time, record.run_file)
        if live_only and proc is None:
            return
        files = JobFiles(Path(record.output_dir), record.name)
        self._attach(Job(id=record.id, kind=record.kind, config=config_from_record(record), files=files, proc=proc,
                         reader=TailReader(files.events, record.started_at), started_at=record.started_at,
                         record=record))
        if proc is not None and files.stop.exists():  # a Stop was pressed before the server went away
            self.job.stop_requested_at = time.time()
            self.state.status = "stopping"
        self.refresh(force=True)

    # ---- what the page shows --------------------------------------------------------------
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
        """On server exit (Ctrl+C): ask a running engine to stop and save. It finishes on its own."""
        with self.lock:
            job = self.job
            if job is not None and job.engine_running() and self.stop() == "job.stop_requested":
                print(f"Stopping the training \"{job.files.name}\": it saves {job.files.name}-stopped.safetensors "
                      f"in {job.files.output_dir} and ends by itself (log: {job.files.log}).", file=sys.stderr)


def _record_of(request: JobRequest, job_id: int, started_at: float, proc: EngineProcess) -> JobRecord:
    files = request.files
    return JobRecord(id=job_id, kind=request.kind, state="running", output_dir=str(files.output_dir), name=files.name,
                     run_file=str(request.run_file), command=list(request.command), cwd=str(engine.engine_cwd()),
                     config=request.config.to_dict(), started_at=started_at, pid=proc.pid,
                     create_time=proc.create_time, events_file=str(files.events), log_file=str(files.log),
                     stop_file=str(files.stop), stage_plan=list(request.stage_plan))


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass
