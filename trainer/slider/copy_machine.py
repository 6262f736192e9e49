"""Method "copy" (copy-machine): one overfit LoRA per folder, then one SVD merge.

For every pair the low (A) and the high (B) folder are copied into the work folder as kohya datasets
(`data/<pair>/<side>/1_<side>/`, a caption file beside every image: its own, else the prompt) and
trained by the real engine (`trainer.train.run_training`, in this process) with the slider defaults.
All intermediate LoRAs are then SVD-merged in ONE merge, +ratio for every B and −ratio for every A:
the merge keeps what separates the B LoRAs from the A LoRAs (the attribute) and cancels what they
share (the style of the images, the subject).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Optional

from trainer.config import TrainConfig
from trainer.errors import TrainingError
from trainer.network.kohya_format import LoraFile
from trainer.slider.progress import SliderEvents
from trainer.slider.spec import SIDES, SliderFiles, SliderSpec, Stage, caption_of, list_images, slider_comment

WORK_MARKER = ".slider-work"  # marks a folder this wizard created: only such a folder is cleaned


def prepare_work_dir(files: SliderFiles) -> None:
    """Create the work folder, or accept one a slider run created before."""
    work = files.work_dir
    if work.exists() and any(work.iterdir()) and not (work / WORK_MARKER).exists():
        raise TrainingError("work_dir_foreign", f"the work folder {work} exists and was not made by the slider "
                            "wizard", field="work_dir", hint="Choose an empty or new work folder.")
    work.mkdir(parents=True, exist_ok=True)
    (work / WORK_MARKER).touch()


def copy_folder(source: Path, dest: Path, *, subset: str, caption_extension: str, prompt: str) -> int:
    """Copy the images of `source` into `dest/1_<subset>/` (rebuilt from scratch), each with a caption
    file: its own (copied) or the prompt. The source is only read. Returns the number of images."""
    folder = dest / f"1_{subset}"
    if dest.exists():
        shutil.rmtree(dest)  # inside the marked work folder: our own earlier copy
    folder.mkdir(parents=True)
    images = list_images(source)
    for image in images:
        shutil.copy2(image, folder / image.name)
        caption = caption_of(image, caption_extension) or prompt
        (folder / image.name).with_suffix(caption_extension).write_text(caption + "\n", encoding="utf-8")
    return len(images)


def training_config(spec: SliderSpec, files: SliderFiles, pair: str, side: str) -> TrainConfig:
    values = spec.training_values()
    values.update(train_data_dir=str(files.data_dir(pair, side)), output_dir=str(files.intermediate_dir),
                  output_name=files.intermediate_name(pair, side))
    return TrainConfig.from_dict(values)


def reusable(cfg: TrainConfig, lora: Path) -> bool:
    """An intermediate LoRA from an earlier run with exactly this config (its `<name>.json` beside it)."""
    saved = lora.with_suffix(".json")
    if not lora.is_file() or not saved.is_file():
        return False
    try:
        return TrainConfig.load(saved).to_dict() == cfg.to_dict()
    except Exception:  # noqa: BLE001 - an unreadable config is simply not reusable
        return False


class CopyMachine:
    def __init__(self, spec: SliderSpec, files: SliderFiles, events: SliderEvents, stop: Any):
        self.spec, self.files, self.events, self.stop = spec, files, events, stop
        self.configs: dict[tuple[str, str], TrainConfig] = {}
        self.reuse: set[tuple[str, str]] = set()

    def prepare(self) -> int:
        """Copy the folders and check every training's config before the first one starts.
        Returns the number of images copied."""
        spec, files = self.spec, self.files
        prepare_work_dir(files)
        count = 0
        for pair, name in zip(spec.pairs, spec.pair_names()):
            for side in SIDES:
                count += copy_folder(Path(getattr(pair, side)), files.data_dir(name, side), subset=side,
                                     caption_extension=spec.caption_extension, prompt=spec.prompt)
                cfg = training_config(spec, files, name, side)
                self.configs[(name, side)] = cfg
                if spec.reuse_intermediates and reusable(cfg, files.intermediate(name, side)):
                    self.reuse.add((name, side))
        for (name, side), cfg in self.configs.items():
            for issue in cfg.validate():
                if issue.level != "error" or (name, side) in self.reuse and issue.code == "output_exists":
                    continue
                if issue.code == "output_exists":
                    raise self._exists_error(name, side)
                raise TrainingError(issue.code, f"train {name}/{side}: {issue.message}",
                                    field=_field(issue.field, spec))
        self.events.log(f"copied {count} images into {files.work_dir / 'data'}")
        return count

    def _exists_error(self, name: str, side: str) -> TrainingError:
        path = self.files.intermediate(name, side)
        if self.spec.reuse_intermediates:
            return TrainingError("output_exists", f"{path} is from a run with other settings",
                                 field="reuse_intermediates", hint="Delete it (or the work folder) to train it "
                                 "again, or choose another work folder.")
        return TrainingError("output_exists", f"{path} exists in the work folder (an earlier run)",
                             field="reuse_intermediates", hint="Turn on 'reuse intermediate LoRAs' to use it if it "
                             "was trained with the same settings, or delete the work folder.")

    def train_all(self, stages: list[Stage]) -> Optional[str]:
        """Train every folder. Returns None when all are trained, or "stopped"."""
        from trainer.train import run_training

        trainings = [s for s in stages if s.kind == "train"]
        for epoch, stage in enumerate(trainings, start=1):
            self.events.begin(stage)
            key = (stage.pair, stage.side)
            path = self.files.intermediate(*key)
            if key in self.reuse:
                self.events.skip_steps(stage, f"reusing {path} (trained with the same settings)")
                continue
            raw = self.files.intermediate_dir / f"{self.files.intermediate_name(*key)}.events.jsonl"
            with self.events.training_sink(stage, epoch, raw) as sink:
                run_training(self.configs[key], events=sink, stop=self.stop)
            if sink.status == "stopped":
                return "stopped"
            if sink.status != "completed":  # its error event is in the stream already
                raise TrainingFailed(f"{stage.name} failed")
        return None

    def merge(self) -> LoraFile:
        """ONE svd_merge of all intermediates: +ratio for every high LoRA, −ratio for every low LoRA."""
        from trainer.network.kohya_format import read_lora_file
        from trainer.tools import metadata as md
        from trainer.tools.merge import svd_merge_loras

        spec, files = self.spec, self.files
        paths, ratios, titles = [], [], []
        for name in spec.pair_names():
            for side in SIDES:
                paths.append(files.intermediate(name, side))
                ratios.append(spec.ratio if side == "high" else -spec.ratio)
                titles.append(files.intermediate_name(name, side))
        loras = [read_lora_file(p) for p in paths]
        merged, report = svd_merge_loras(loras, ratios, spec.new_rank, clamp_quantile=spec.clamp_quantile,
                                         titles=titles, title=spec.output_name, progress=self._progress("svd_merge"))
        report_to_events(self.events, report)
        md.prefix_comment(merged.metadata, slider_comment(spec))
        return merged

    def _progress(self, label: str):
        return module_progress(self.events, label)


def module_progress(events: SliderEvents, label: str, unit: str = "modules"):
    """A progress callback (done, total) that logs at most every 5 seconds, and at the end."""
    last = [time.monotonic()]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] > 5.0:
            last[0] = now
            events.log(f"{label}: {done}/{total} {unit}")

    return report


def report_to_events(events: SliderEvents, report: Any) -> None:
    """A ToolReport's text as log lines, its warnings as warning events."""
    for line in report.format_text().splitlines():
        if not line.startswith("warning: "):
            events.log(line if line.startswith(f"{report.command}:") else f"{report.command}: {line}")
    for warning in report.warnings:
        events.emit("warning", code=f"slider_{report.command}", field=None, message=warning, params={})


class TrainingFailed(Exception):
    """A training ended with `done` failed; its error event was forwarded already."""


def _field(train_field: Optional[str], spec: SliderSpec) -> Optional[str]:
    from trainer.slider.spec import spec_field

    return spec_field(train_field, spec)
