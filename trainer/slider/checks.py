"""The slider spec's pre-flight: every problem found without loading a model (torch-free; the GUI
calls validate_spec on each change). Findings name the spec field to fix ("pairs", "model", ...)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from trainer.config import ConfigError, TrainConfig
from trainer.data.image_header import IMAGE_EXTENSIONS
from trainer.findings import errors_of  # noqa: F401  (the slider's callers import it from here)
from trainer.slider.images import caption_of, list_images, match_images
from trainer.slider.spec import FIELD_FROM_TRAIN_CONFIG, METHODS, SAFE_NAME, SliderIssue, SliderSpec, spec_field
from trainer.slider.stages import SIDES
from trainer.tools.options import dynamic_param_problem


def validate_spec(spec: SliderSpec, *, check_outputs: bool = True) -> list[SliderIssue]:
    """Every problem found without loading a model (torch-free; the GUI calls it on each change)."""
    from trainer.validation import output_name_problem

    issues: list[SliderIssue] = []

    def error(field_: str, code: str, message: str, hint: Optional[str] = None) -> None:
        issues.append(SliderIssue(field_, "error", code, message, hint))

    def warning(field_: str, code: str, message: str, hint: Optional[str] = None) -> None:
        issues.append(SliderIssue(field_, "warning", code, message, hint))

    if spec.method not in METHODS:
        error("method", "bad_value", f"method must be one of {', '.join(METHODS)}")
    _check_pairs(spec, error, warning)
    _check_model(spec, error)
    for name in ("output_dir", "output_name"):
        if not getattr(spec, name).strip():
            error(name, f"{name}_empty", f"{name} is empty")
    name_problem = output_name_problem(spec.output_name) if spec.output_name.strip() else None
    if name_problem is not None:  # the engine's own rule: the paired method trains under this name
        error("output_name", "output_name_invalid", f"the output name {spec.output_name!r} {name_problem.text}",
              "Choose a shorter name." if name_problem.kind == "too_long" else
              "Choose another name: letters, digits, '-' and '_' work on every system.")
    if check_outputs and spec.output_dir and spec.output_name:
        for path in spec.files().outputs():
            if path.exists():
                error("output_name", "output_exists", f"{path} already exists",
                      "Files are never overwritten: change the output name or move the existing file.")
    if not math.isfinite(spec.ratio) or spec.ratio == 0:
        error("ratio", "bad_value", "the merge ratio must be a number other than 0")
    if spec.resize_enabled() and spec.resize_method is not None:
        p = spec.resize_param
        problem = dynamic_param_problem(spec.resize_method, p) if p is not None else None
        if p is None:
            error("resize_param", "bad_value", f"{spec.resize_method} needs a parameter")
        elif problem is not None:
            error("resize_param", "bad_value", problem[1])
    if not spec.preview_weights:
        error("preview_weights", "bad_value", "give at least one preview weight")
    if spec.preview and not spec.preview_seeds:
        error("preview_seeds", "bad_value", "give at least one preview seed")
    issues.extend(_training_issues(spec))
    return issues


def _check_pairs(spec: SliderSpec, error, warning) -> None:
    if not spec.pairs:
        error("pairs", "no_pairs", "no image folder pairs given", "Add a pair: a low (A) and a high (B) folder.")
        return
    names = spec.pair_names()
    for name in names:
        if not SAFE_NAME.match(name) or name.startswith("."):
            error("pairs", "pair_name_invalid", f"pair name {name!r} is not a plain folder name")
    for name in sorted({n for n in names if names.count(n) > 1}):
        error("pairs", "pair_name_duplicate", f"two pairs are named {name!r}", "Give each pair its own name.")
    missing_caption = []
    for pair, name in zip(spec.pairs, names):
        images: dict[str, list[Path]] = {}
        for side in SIDES:
            folder = Path(getattr(pair, side)).expanduser()
            if not str(getattr(pair, side)).strip():
                error("pairs", "dir_empty", f"pair {name}: the {side} folder is not set")
            elif not folder.is_dir():
                error("pairs", "dir_missing", f"pair {name}: the {side} folder {folder} does not exist")
            else:
                images[side] = list_images(folder)
                if not images[side]:
                    error("pairs", "dir_no_images", f"pair {name}: the {side} folder {folder} holds no images",
                          f"Images must lie directly in the folder ({' '.join(IMAGE_EXTENSIONS)}).")
                missing_caption += [p for p in images[side] if caption_of(p, spec.caption_extension) is None]
        if len(images) == 2 and Path(pair.low).resolve() == Path(pair.high).resolve():
            error("pairs", "pair_same_folder", f"pair {name}: low and high are the same folder")
        elif len(images) == 2 and images["low"] and images["high"] and spec.method == "paired":
            try:
                matched, how = match_images(images["low"], images["high"], spec.pair_matching)
            except ValueError as exc:
                error("pairs", "pair_mismatch", f"pair {name}: {exc}",
                      "Give both folders the same file names, or the same number of images.")
            else:
                unused = len(images["low"]) + len(images["high"]) - 2 * len(matched)
                if unused:
                    warning("pairs", "pair_images_unused", f"pair {name}: {unused} images have no partner and "
                            f"are not used (matched by {how})")
    if missing_caption and not spec.prompt.strip():
        error("prompt", "prompt_empty", f"{len(missing_caption)} images have no caption file (e.g. "
              f"{missing_caption[0].name}) and the prompt is empty",
              f"Write a prompt, or a {spec.caption_extension} caption beside every image.")


def _check_model(spec: SliderSpec, error) -> None:
    from trainer.families.detect import ModelPathError, detect_model

    if not spec.model.strip():
        error("model", "model_path_empty", "no base model given",
              "Choose a diffusers folder or a .safetensors/.ckpt file.")
        return
    try:
        detect_model(spec.model)
    except ModelPathError as exc:
        error("model", "model_path_invalid", exc.message, exc.hint)


# TrainConfig fields the wizard sets for every training (data, output; for the copy method's per-folder
# trainings also resume and starting weights; the paired method's one training takes them from train_args).
WIZARD_OWNED = ("train_data_dir", "output_dir", "output_name")
COPY_OWNED = WIZARD_OWNED + ("resume", "network_weights")


def _training_issues(spec: SliderSpec) -> list[SliderIssue]:
    """Types, choices and ranges of the training values, by TrainConfig's own rules."""
    issues = []
    for key in spec.train_args:
        if key in (WIZARD_OWNED if spec.method == "paired" else COPY_OWNED):
            issues.append(SliderIssue("train_args", "error", "train_arg_owned",
                                      f"train_args: {key} is set by the wizard", "Remove it from train_args."))
        elif key in SliderSpec.field_names() or key in FIELD_FROM_TRAIN_CONFIG:
            issues.append(SliderIssue("train_args", "error", "train_arg_owned",
                                      f"train_args: {key} is a slider setting of its own",
                                      f"Set {spec_field(key)} instead."))
    if issues:
        return issues
    try:
        TrainConfig.from_dict(spec.training_values())
    except ConfigError as exc:
        return [SliderIssue(spec_field(e.field, spec), "error", "bad_value", f"{e.field}: {e.message}")
                for e in exc.errors]
    return []
