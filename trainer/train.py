"""A LoRA training from config to `done` event: pre-flight, setup, the loop, and the report.

Every process of a run goes through `run_training`; accelerate joins them (trainer/training/accel.py),
only the main one writes files and events, and every decision that ends a run is taken by all together.
The loop itself is trainer/training/loop.py, its setup trainer/training/setup.py.
"""

from __future__ import annotations

import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import torch
from accelerate import Accelerator

from trainer.config import TrainConfig
from trainer.errors import TrainingError
from trainer.events import EventWriter, control_path
from trainer.fileio import remove_stale_temp_files
from trainer.findings import Finding, errors_of, warnings_of
from trainer.preflight import RULES, Context
from trainer.training.accel import Precision, make_accelerator
from trainer.training.checkpoint import CheckpointWriter
from trainer.training.failures import error_fields
from trainer.training.loop import NAN_HINT, TrainingRun, train  # noqa: F401 - NAN_HINT: the slider's too


class StopSignal:
    """A graceful stop: SIGINT/SIGTERM or a stop file; the loop checks it after every step."""

    def __init__(self, stop_file: Optional[Path] = None, install_handlers: bool = True):
        self.stop_file = stop_file
        self._flag = False
        self._signals = 0
        if install_handlers:
            signal.signal(signal.SIGINT, self._handle)
            signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self._flag = True
        self._signals += 1

    def requested(self) -> bool:
        return self._flag or (self.stop_file is not None and self.stop_file.exists())

    def mark(self) -> tuple[int, Optional[int]]:
        """What has been asked so far, for `requested_since`: the signal count and the stop file's mtime."""
        return self._signals, self._stop_file_mtime()

    def requested_since(self, mark: tuple[int, Optional[int]]) -> bool:
        """A new stop since `mark`: another signal, or the stop file created or touched (a stop file that was
        already there does not count: it asked for the stop that is being handled)."""
        mtime = self._stop_file_mtime()
        return self._signals > mark[0] or (mtime is not None and mtime != mark[1])

    def _stop_file_mtime(self) -> Optional[int]:
        try:
            return self.stop_file.stat().st_mtime_ns if self.stop_file is not None else None
        except OSError:
            return None


def preflight(cfg: TrainConfig) -> tuple[Context, list[Finding]]:
    """The pre-flight rules on the machine that trains (its CUDA), on one verified scan of the folders
    that the setup reuses, as the model detection and the step plan."""
    from trainer.data.scan import scan_dataset

    ctx = Context(cfg, cuda_available=torch.cuda.is_available(), scan=scan_dataset(cfg, verify=True))
    return ctx, [finding for r in RULES for finding in r.check(ctx)]


def build_run(cfg: TrainConfig, ctx: Context, *, accelerator: Accelerator, precision: Precision,
              events: EventWriter, stop: StopSignal) -> tuple[TrainingRun, CheckpointWriter]:
    """Everything the loop needs, built once (the slow part: the model loads here)."""
    from trainer.data.steps import plan_steps
    from trainer.families.detect import resolve_model_info
    from trainer.preflight import family_issues
    from trainer.training.optimizers import check_optimizer_args, effective_optimizer_args
    from trainer.training.setup import build_training_run
    from trainer.training.state import load_state

    # Read first: a state folder that cannot be used is refused before minutes of model loading.
    resume = load_state(Path(cfg.resume)) if cfg.resume else None
    info = resolve_model_info(cfg, ctx.model_info)
    for note in info.notes:
        events.emit("log", message=note)
    if ctx.family is None:  # a .ckpt: its family is known only now, so are its rules
        for finding in family_issues(cfg, info.family, cuda=accelerator.device.type == "cuda"):
            if finding.is_error:
                raise TrainingError.from_finding(finding)
            events.emit(finding.level, **finding.event_fields())
    check_optimizer_args(cfg.optimizer_type, cfg.learning_rate,
                         effective_optimizer_args(cfg.optimizer_type, cfg.lr_scheduler, cfg.optimizer_args))
    ctx.scan.raise_for_problems()
    plan = ctx.plan or plan_steps(cfg, ctx.scan)
    return build_training_run(cfg, accelerator=accelerator, precision=precision, info=info, scan=ctx.scan,
                              plan=plan, events=events, stop=stop, resume=resume)


def run_training(cfg: TrainConfig, *, events: EventWriter, stop: Optional[StopSignal] = None) -> int:
    """Validate, train, and report. Returns the process exit code (0 completed/stopped, 1 failed)."""
    t0 = time.time()
    accelerator, precision = make_accelerator(cfg)
    cfg = _fit_to_processes(cfg, accelerator, events)
    stop = stop or StopSignal(control_path(cfg.output_dir, cfg.output_name, "stop"))
    ctx, findings = preflight(cfg)
    errors = errors_of(findings)
    for finding in warnings_of(findings) + errors:
        events.emit(finding.level, **finding.event_fields())
    if errors:
        events.emit("done", status="failed", files=[], wall_time_sec=time.time() - t0, steps_done=0,
                    message=errors[0].message)
        return 1
    accelerator.wait_for_everyone()  # every process has checked the output before the main one writes there
    run: Optional[TrainingRun] = None
    writer: Optional[CheckpointWriter] = None
    try:
        if accelerator.is_main_process:
            _prepare_output(cfg, events)
        run, writer = build_run(cfg, ctx, accelerator=accelerator, precision=precision, events=events, stop=stop)
        status = train(run)
    except Exception as exc:  # noqa: BLE001 - every failure ends as an error event
        events.emit("error", **error_fields(exc))
        events.emit("done", status="failed", files=writer.saved_files if writer else [],
                    wall_time_sec=time.time() - t0, steps_done=run.position.global_step if run else 0,
                    message=error_fields(exc)["message"])
        return 1
    steps = run.position.global_step
    events.emit("done", status=status, files=writer.saved_files, wall_time_sec=time.time() - t0, steps_done=steps,
                message=f"{status} after {steps} steps")
    return 0


def _fit_to_processes(cfg: TrainConfig, accelerator: Accelerator, events: EventWriter) -> TrainConfig:
    """A run started with `accelerate launch --num_processes N` trains on N processes whatever the file
    says; the step plan is made for that. CPU threads apply to a single process here (accelerate's launcher
    sets them for several)."""
    if cfg.num_cpu_threads_per_process and accelerator.num_processes == 1:
        torch.set_num_threads(cfg.num_cpu_threads_per_process)
    if accelerator.num_processes == cfg.num_processes:
        return cfg
    events.emit("log", message=f"{accelerator.num_processes} processes were launched (the config says "
                f"{cfg.num_processes}): the batches are planned for {accelerator.num_processes}")
    return replace(cfg, num_processes=accelerator.num_processes)


def _prepare_output(cfg: TrainConfig, events: EventWriter) -> None:
    removed = remove_stale_temp_files(Path(cfg.output_dir))
    if removed:
        events.emit("log", message=f"removed {len(removed)} temporary file(s) an interrupted run left in "
                    f"{cfg.output_dir}: {', '.join(p.name for p in removed)}")
    cfg.save(Path(cfg.output_dir) / f"{cfg.output_name}.json")
