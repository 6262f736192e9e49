"""The web process's gateway to the engine's torch-free API (the boundary: lora_gui/boundary.py).

Other web modules import only the shared definitions (config and parameter definitions, events,
findings, file writes); every engine function the GUI needs goes through one small adapter here, so a
change in the engine's torch-free API is a change in one place. Nothing here may import torch.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from lora_gui import APP_DIR
from trainer.config import TrainConfig
from trainer.data.image_header import IMAGE_EXTENSIONS  # noqa: F401 - the images training uses, for the GUI
from trainer.findings import Finding


def engine_available() -> bool:
    """`python -m trainer` can be started (its entry module is found)."""
    return importlib.util.find_spec("trainer.__main__") is not None


# ---- folder scan shared by validation and the summary ----------------------------------------
_SCAN_LOCK = threading.Lock()


def scan_folders(cfg: TrainConfig) -> Any:
    """trainer.data.scan.scan_dataset(cfg) (headers only), or None when it fails."""
    from trainer.data.scan import scan_dataset

    with _SCAN_LOCK:  # one scan at a time: few CPU cores and possibly many open pages
        try:
            return scan_dataset(cfg)
        except Exception:  # noqa: BLE001 - validate() reports folder problems itself
            return None


# ---- the pre-flight ---------------------------------------------------------------------
def validate(cfg: TrainConfig, scan: Any = None) -> list[Finding]:
    """The engine's one pre-flight (trainer.preflight.validate), sharing the summary's folder scan."""
    from trainer.preflight import validate as preflight

    return list(preflight(cfg, scan=scan))


def validation_codes() -> list[str]:
    """Every code the pre-flight rules declare (for the translation catalogs)."""
    from trainer.preflight import CODES

    return sorted(CODES)


# ---- model detection --------------------------------------------------------------------
@dataclass
class ModelDetection:
    ok: bool
    family: str = ""
    v2: bool = False
    v_parameterization: Optional[bool] = None
    kind: str = ""
    notes: list[str] = field(default_factory=list)
    message: str = ""
    hint: str = ""


def detect_model(path: str) -> Optional[ModelDetection]:
    """trainer.families.detect.detect_model, cached by path and modification time.

    None while the path is empty.
    """
    if not path.strip():
        return None
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        mtime = 0.0
    return _detect_cached(path, mtime)


def is_hub_id(text: str) -> bool:
    """Whether a model field's text is a Hugging Face id (owner/name), as the engine's detection reads it."""
    from trainer.families.detect import is_hub_id as engine_is_hub_id

    return engine_is_hub_id(text)


def forget_detections() -> None:
    """Detect anew: a model the cache did not hold may be there now (a download finished)."""
    _detect_cached.cache_clear()


@functools.lru_cache(maxsize=32)
def _detect_cached(path: str, mtime: float) -> ModelDetection:
    from trainer.families.detect import ModelPathError
    from trainer.families.detect import detect_model as engine_detect

    try:
        info = engine_detect(path)
    except ModelPathError as exc:
        return ModelDetection(ok=False, message=getattr(exc, "message", str(exc)), hint=getattr(exc, "hint", "") or "")
    except Exception as exc:  # noqa: BLE001 - shown in the page, never a traceback
        return ModelDetection(ok=False, message=f"{type(exc).__name__}: {exc}")
    return ModelDetection(ok=True, family=info.family or "", v2=bool(info.v2), v_parameterization=info.v_parameterization,
                          kind=info.kind, notes=list(getattr(info, "notes", []) or []))


# ---- dataset scan and step plan ---------------------------------------------------------
@dataclass
class SubsetRow:
    folder: str
    repeats: int
    tokens: str
    images: int
    captioned: int
    is_reg: bool
    masks: Optional[int] = None  # images with a loss mask (None: masked loss is off)


@dataclass
class BucketLine:
    width: int
    height: int
    images: int
    samples: int
    batches: int


@dataclass
class DatasetSummary:
    """What the Folders tab shows under the folder fields."""

    subsets: list[SubsetRow] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (folder name, reason)
    loose_images: int = 0
    buckets: list[BucketLine] = field(default_factory=list)
    num_train_samples: int = 0  # images x repeats
    num_reg_images: int = 0  # reg image files found
    num_reg_used: int = 0
    num_reg_samples: int = 0  # per epoch, after balancing
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    batches_per_epoch: int = 0
    steps_per_epoch: int = 0
    epochs: int = 0
    total_steps: int = 0
    by_steps: bool = False  # max_train_steps decides the length
    caption_extension: str = ""
    caption_file_counts: dict[str, int] = field(default_factory=dict)
    converted: list[tuple[str, list[dict]]] = field(default_factory=list)  # ("10_x/a.png", [{code, params, message}])
    skipped: list[tuple[str, str, str, str]] = field(default_factory=list)  # (file, reason, detail, message)
    error: str = ""


def _short(path: Path) -> str:
    """A dataset file as '<subfolder>/<name>', which is what the summary lists."""
    return f"{path.parent.name}/{path.name}"


def dataset_summary(cfg: TrainConfig, scan: Any = None) -> Optional[DatasetSummary]:
    """Subsets, buckets and the exact step count; None without an image folder or when the scan fails."""
    if not cfg.train_data_dir.strip():
        return None
    from trainer.data.masks import has_mask, uses_masks
    from trainer.data.steps import plan_steps

    scan = scan if scan is not None else scan_folders(cfg)
    if scan is None:
        return None
    summary = DatasetSummary(
        subsets=[SubsetRow(s.name, s.repeats, s.class_tokens, s.image_count, s.captioned_count, s.is_reg)
                 for s in scan.subsets],
        ignored=[(i.path.name, i.message) for i in scan.train.ignored + (scan.reg.ignored if scan.reg else [])],
        loose_images=len(scan.train.loose_images),
        caption_extension=cfg.caption_extension,
        caption_file_counts=dict(scan.train.caption_file_counts),
        converted=[(_short(c.path), [n.to_json() for n in c.notes]) for c in scan.converted],
        skipped=[(_short(k.path), k.reason, k.detail, k.message) for k in scan.skipped],
        batch_size=cfg.train_batch_size, gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        by_steps=cfg.max_train_steps > 0,
    )
    if uses_masks(cfg):
        for row, subset in zip(summary.subsets, scan.subsets):
            row.masks = sum(has_mask(image.path, cfg) for image in subset.images)
    if not scan.train.image_count:
        return summary
    try:
        plan = plan_steps(cfg, scan)
    except Exception as exc:  # noqa: BLE001 - shown in the summary, never raised
        summary.error = f"{type(exc).__name__}: {exc}"
        return summary
    summary.num_train_samples = plan.num_train_images
    summary.num_reg_images = plan.num_reg_images
    summary.num_reg_used = plan.num_reg_images_used
    summary.num_reg_samples = plan.num_reg_samples
    summary.batches_per_epoch = plan.batches_per_epoch
    summary.steps_per_epoch = plan.steps_per_epoch
    summary.epochs = plan.epochs
    summary.total_steps = plan.total_steps
    summary.buckets = [BucketLine(r.resolution[0], r.resolution[1], r.num_images, r.count, r.batches)
                       for r in plan.buckets]
    return summary


# ---- configs from other tools -----------------------------------------------------------
def load_any_config(data: dict[str, Any]) -> tuple[TrainConfig, list[str]]:
    """Our flat format, or a kohya_ss GUI JSON (with the keys that could not be mapped)."""
    from trainer.kohya_import import load_any_config as engine_load

    return engine_load(data)


def is_kohya_config(data: dict[str, Any]) -> bool:
    from trainer.kohya_import import looks_like_kohya_config

    return looks_like_kohya_config(data)


def kohya_fields(data: dict[str, Any]) -> frozenset[str]:
    """The fields a kohya_ss GUI config sets (blank ones included: they mean the default)."""
    from trainer.kohya_import import kohya_fields as engine_fields

    return frozenset(engine_fields(data))


# ---- this machine ------------------------------------------------------------------------
def cuda_likely() -> bool:
    """trainer.machine's torch-free guess whether the engine will see a CUDA GPU (the pre-flight's too)."""
    from trainer.machine import cuda_likely as guess

    return guess()


def xformers_installed() -> bool:
    from trainer.machine import xformers_installed as installed

    return installed()


# ---- slider runs ------------------------------------------------------------------------
def check_slider_spec(spec: Any, *, check_outputs: bool = True) -> list[Finding]:
    """trainer.slider.validate_spec: every problem of a slider spec found without loading a model."""
    from trainer.slider import validate_spec

    return validate_spec(spec, check_outputs=check_outputs)


def slider_stages(spec: Any) -> list[Any]:
    """The stages a slider run of `spec` goes through (trainer.slider.plan_stages)."""
    from trainer.slider import plan_stages

    return plan_stages(spec)


def slider_command(spec_path: str) -> list[str]:
    """The command line that runs a saved slider spec."""
    from trainer.slider import slider_command as command

    return command(spec_path)


def engine_command(run_json: Path) -> list[str]:
    """The exact command line the GUI runs."""
    import sys

    return [sys.executable, "-m", "trainer", "--config", str(run_json)]


def engine_cwd() -> Path:
    return APP_DIR


def engine_launch_command(cfg: TrainConfig, run_json: Path) -> list[str]:
    """The command the engine runs for `cfg`: engine_command(), or with several processes the accelerate
    launcher it starts itself (the line to run by hand on each machine of a cluster)."""
    from trainer.distributed import launch_command, wants_several_processes

    return launch_command(cfg, run_json) if wants_several_processes(cfg) else engine_command(run_json)


def resumable_states(output_dir: str) -> list[Any]:
    """trainer.resumable.find_resumable_states: the output folder's state folders, newest first."""
    from trainer.resumable import find_resumable_states

    return find_resumable_states(output_dir)


def accelerate_launch_options(cfg: TrainConfig) -> list[str]:
    """The `accelerate launch` options of the config's Accelerate fields; [] for one process on one
    machine (then the engine trains in its own process)."""
    from trainer.distributed import launch_arguments, wants_several_processes

    return launch_arguments(cfg) if wants_several_processes(cfg) else []
