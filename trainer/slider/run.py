"""A whole slider run: check, train (copy or paired), resize, save, preview; one event stream throughout.

    result = run_slider(spec)              # writes <output_dir>/<output_name>.events.jsonl
    result.status, result.lora, result.preview

Errors become `error` events (code, message, field = the spec field to fix, hint) and a `done` with
status "failed", as in the engine. Stop: SIGINT/SIGTERM or `<output_dir>/<output_name>.stop`; the
training in progress saves a `-stopped` LoRA and the run ends with `done` status "stopped".
"""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from trainer.errors import TrainingError
from trainer.events import EventWriter
from trainer.fileio import OutputExistsError
from trainer.network.kohya_format import LoraFile
from trainer.slider.progress import SliderEvents
from trainer.slider.spec import (SliderFiles, SliderSpec, Stage, errors_of, plan_stages, spec_field,
                                 validate_spec)


@dataclass
class SliderResult:
    status: str  # "completed" | "stopped" | "failed"
    message: str = ""
    lora: Optional[Path] = None  # the slider LoRA (None unless completed)
    preview: Optional[Path] = None  # the preview grid PNG (None when off, stopped or failed)
    merged: Optional[Path] = None  # copy with resize: the SVD merge before the resize (work folder)
    intermediates: list[Path] = field(default_factory=list)  # copy: the per-folder LoRAs (work folder)
    files: list[str] = field(default_factory=list)  # every LoRA file written (as in the `done` event)

    @property
    def exit_code(self) -> int:
        return 1 if self.status == "failed" else 0


class SliderRun:
    def __init__(self, spec: SliderSpec, events: SliderEvents, stop: Any):
        self.spec, self.events, self.stop = spec, events, stop
        self.files: SliderFiles = spec.files()
        self.stages = events.stages
        self.result = SliderResult("failed")

    def stage(self, kind: str) -> Stage:
        return next(s for s in self.stages if s.kind == kind)

    def run(self) -> SliderResult:
        import torch

        spec, files, events = self.spec, self.files, self.events
        files.output_dir.mkdir(parents=True, exist_ok=True)
        spec.save(files.spec_json)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if spec.method == "copy":
            lora = self._copy(device)
        else:
            lora = self._paired(device)
        if lora is None:
            return self.finish("stopped", "stopped by request")
        if spec.resize_enabled():
            lora = self._resize(lora)
        self._save(lora)
        if spec.preview:
            if self.stop.requested():
                return self.finish("stopped", f"stopped before the preview; the slider LoRA is {files.lora}")
            self.result.preview = self._preview(lora)
            if self.result.preview is None:
                return self.finish("stopped", f"stopped during the preview; the slider LoRA is {files.lora}")
        preview = f", preview {self.result.preview}" if self.result.preview else ""
        return self.finish("completed", f"slider LoRA {files.lora}{preview}")

    # ---- methods -------------------------------------------------------------------------------
    def _copy(self, device: str) -> Optional[LoraFile]:
        from trainer.network.kohya_format import write_lora_file
        from trainer.slider.copy_machine import CopyMachine

        machine = CopyMachine(self.spec, self.files, self.events, self.stop)
        images = machine.prepare()
        self.result.intermediates = [self.files.intermediate(*key) for key in machine.configs]
        self.events.start(num_train_images=images, config_path=self.files.spec_json, device=device)
        if machine.train_all(self.stages) == "stopped":
            return None
        if self.stop.requested():
            return None
        self.events.begin(self.stage("merge"))
        merged = machine.merge()
        if self.spec.resize_enabled():  # keep the exact merge for inspection and comparisons
            path = self.files.merged
            path.unlink(missing_ok=True)  # an earlier run's merge (inside the work folder)
            write_lora_file(path, merged, save_precision="float", exclusive=True)
            self.result.merged = path
            self.events.saved(path, kind="intermediate", epoch=len(machine.configs))
        return merged

    def _paired(self, device: str) -> Optional[LoraFile]:
        from trainer.network.kohya_format import write_lora_file
        from trainer.slider.paired import collect_pairs, train_paired

        count = 2 * len(collect_pairs(self.spec))
        self.events.start(num_train_images=count, config_path=self.files.spec_json, device=device)
        stage = self.stage("train")
        self.events.begin(stage)
        lora, partial = train_paired(self.spec, self.files, self.events, self.stop, stage)
        if lora is None:
            path = self.files.stopped_lora
            path.unlink(missing_ok=True)  # an older stop of this run name, as the engine does
            write_lora_file(path, partial, save_precision=self.spec.save_precision, exclusive=True)
            self.events.saved(path, kind="stopped", epoch=1)
        return lora

    # ---- the end -------------------------------------------------------------------------------------
    def _resize(self, lora: LoraFile) -> LoraFile:
        from trainer.slider.copy_machine import module_progress, report_to_events
        from trainer.tools.resize import resize_lora

        spec = self.spec
        self.events.begin(self.stage("resize"))
        resized, report = resize_lora(lora, spec.resize_rank, dynamic_method=spec.resize_method,
                                      dynamic_param=spec.resize_param if spec.resize_method else None,
                                      progress=module_progress(self.events, "resize"))
        report_to_events(self.events, report)
        return resized

    def _save(self, lora: LoraFile) -> None:
        from trainer.network.kohya_format import write_lora_file

        lora.metadata["ss_output_name"] = self.spec.output_name
        lora.metadata["modelspec.title"] = self.spec.output_name
        write_lora_file(self.files.lora, lora, save_precision=self.spec.save_precision, exclusive=True)
        self.result.lora = self.files.lora
        self.events.saved(self.files.lora, kind="final", epoch=max(1, len(self.result.intermediates)))

    def _preview(self, lora: LoraFile) -> Optional[Path]:
        from trainer.network.kohya_format import read_lora_file
        from trainer.slider.copy_machine import module_progress
        from trainer.slider.preview import render_preview
        from trainer.tools.models import load_base_model

        spec = self.spec
        self.events.begin(self.stage("preview"))
        width, height = _preview_size(spec)
        # The grid shows the file as saved (fp16 rounding included), as other programs will load it.
        model = load_base_model(spec.model, v2=bool(spec.train_args.get("v2", False)),
                                v_parameterization=bool(spec.train_args.get("v_parameterization", False)))
        path = render_preview(model, read_lora_file(self.files.lora), self.files.preview,
                              prompts=spec.preview_prompts or [spec.prompt], seeds=spec.preview_seeds,
                              weights=spec.preview_weights, width=width, height=height, steps=spec.preview_steps,
                              cfg_scale=spec.preview_cfg_scale, sampler=spec.preview_sampler,
                              clip_skip=int(spec.train_args.get("clip_skip", 1)),
                              progress=module_progress(self.events, "preview", "images"),
                              should_stop=self.stop.requested)
        if path is not None:
            self.events.emit("sample", step=self.events.step, epoch=max(1, len(self.result.intermediates)),
                             paths=[str(path)],
                             prompts=["slider preview: weights " + ", ".join(f"{w:g}" for w in spec.preview_weights)])
        return path

    def finish(self, status: str, message: str) -> SliderResult:
        """Record the outcome (the caller emits `done`)."""
        self.result.status, self.result.message = status, message
        self.result.files = list(self.events.saved_files)
        return self.result


def _preview_size(spec: SliderSpec) -> tuple[int, int]:
    from trainer.config import parse_resolution

    w, h = parse_resolution(spec.resolution)
    return (spec.preview_width or w, spec.preview_height or h)


def run_slider(spec: SliderSpec, *, events: Optional[EventWriter] = None, stop: Any = None) -> SliderResult:
    """Run the wizard for `spec`. Events go to `events` (default: a writer on the spec's events file);
    `stop` defaults to a StopSignal on the stop file with SIGINT/SIGTERM handlers."""
    from trainer.train import StopSignal

    t0 = time.time()
    files = spec.files()
    writer = events if events is not None else EventWriter(files.events)
    stop = stop if stop is not None else StopSignal(files.stop)
    slider_events = SliderEvents(writer, spec, plan_stages(spec))
    run = SliderRun(spec, slider_events, stop)
    try:
        issues = validate_spec(spec)
        for issue in issues:
            if issue.level == "warning":
                writer.emit("warning", message=issue.message, code=issue.code, field=issue.field, params={})
        errors = errors_of(issues)
        if errors:
            for issue in errors:
                slider_events.error(issue.code, issue.message, field=issue.field, hint=issue.hint)
            result = run.finish("failed", errors[0].message)
        else:
            result = run.run()
    except TrainingError as exc:  # the engine's errors name TrainConfig fields: show the spec's
        result = _failed(run, exc.code, exc.message, field=spec_field(exc.field, spec), hint=exc.hint)
    except OutputExistsError as exc:
        result = _failed(run, "output_exists", str(exc), field="output_name",
                         hint="Files are never overwritten: change the output name or move the existing file.")
    except Exception as exc:  # noqa: BLE001 - an error event; the traceback goes to stderr
        from trainer.slider.copy_machine import TrainingFailed
        from trainer.tools.errors import ToolError

        if isinstance(exc, TrainingFailed):  # the training's own error event is in the stream
            result = run.finish("failed", str(exc))
        elif isinstance(exc, ToolError):
            result = _failed(run, "tool_error", exc.message, field=None, hint=exc.hint)
        else:
            traceback.print_exc(file=sys.stderr)
            result = _failed(run, "internal_error", f"{type(exc).__name__}: {exc}", field=None,
                             hint="See the log for the full traceback.")
    slider_events.done(result.status, started=t0, message=result.message)
    if events is None:
        writer.close()
    return result


def _failed(run: SliderRun, code: str, message: str, *, field: Optional[str], hint: Optional[str]) -> SliderResult:
    run.events.error(code, message, field=field, hint=hint)
    return run.finish("failed", message)
