"""What a slider run is: the spec (JSON file and CLI flags), its checks, and the files it writes.

A slider LoRA moves one attribute with its weight: at +1 towards the "high" images (B), at −1
towards the "low" images (A). The spec names one or more pairs of plain image folders (A, B), the
base model, a prompt (the caption of images without a caption file) and the settings of the two
methods (see docs/SLIDER.md):

- "copy" (copy-machine): train one deliberately overfit LoRA per folder, SVD-merge them with
  +ratio for every B and −ratio for every A in one merge, optionally resize, save.
- "paired": one LoRA trained on matched images A_i/B_i with the same noise and timestep, at
  multiplier +scale on B and −scale on A.

The training defaults are those of presets/sd15_slider_pair.json. This module is torch-free: the
web process builds, checks and saves specs with it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from trainer.config import LR_SCHEDULERS, OPTIMIZERS, SAMPLERS

FORMAT_VERSION = 1
METHODS = ("copy", "paired")
MATCHING = ("auto", "name", "order")
RESIZE_METHODS = ("sv_fro", "sv_cumulative", "sv_ratio")
SAVE_PRECISIONS = ("float", "fp16", "bf16")
SIDES = ("low", "high")  # A, B
SAFE_NAME = re.compile(r"^[^/\\:*?\"<>|\x00-\x1f]+$")


def param(default: Any = dataclasses.MISSING, help: str = "", *, section: str, label: Optional[str] = None,
          choices: Optional[tuple] = None, min: Optional[float] = None, max: Optional[float] = None,
          widget: Optional[str] = None, factory: Any = dataclasses.MISSING) -> Any:
    """A spec field with the metadata keys `trainer.config.param` uses (help, label, choices, range, widget),
    so a form generator can render both; `tab` is always "slider"."""
    meta = {"help": help, "tab": "slider", "section": section, "label": label, "choices": choices, "min": min,
            "max": max, "widget": widget}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class SliderPair:
    """One pair of image folders: `low` (A, the slider at −1) and `high` (B, the slider at +1)."""

    low: str
    high: str
    name: str = ""  # e.g. "front"; names the intermediate files. Default "pair1", "pair2", ...

    def to_dict(self) -> dict[str, str]:
        return {"low": self.low, "high": self.high, "name": self.name}


@dataclass
class SliderIssue:
    """A problem with the spec: `field` is the spec field to fix ("pairs", "model", ...)."""

    field: str
    level: str  # "error" | "warning"
    code: str
    message: str
    hint: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class SliderSpecError(ValueError):
    """A spec that cannot be read (bad JSON, unknown keys, wrong types): every bad field is listed."""

    def __init__(self, issues: list[SliderIssue]):
        self.issues = issues
        super().__init__("; ".join(f"{i.field}: {i.message}" if i.field else i.message for i in issues))


@dataclass
class SliderSpec:
    # ---- data and output ---------------------------------------------------------------------
    pairs: list[SliderPair] = param(factory=list, section="data", label="Image folder pairs",
                                    help="Pairs of plain image folders: low (A, slider −1) and high (B, slider +1).")
    method: str = param("copy", "copy: one overfit LoRA per folder, SVD-merged (+ratio B, −ratio A). paired: one "
                        "LoRA trained on matched images with shared noise, +scale on B and −scale on A.",
                        section="data", label="Method", choices=METHODS)
    model: str = param("", "Base model: a diffusers folder or a .safetensors/.ckpt file.", section="data",
                       label="Base model")
    prompt: str = param("", "Caption of every image that has no caption file.", section="data", label="Prompt")
    caption_extension: str = param(".txt", "Extension of caption files beside the images.", section="data",
                                   label="Caption extension")
    output_dir: str = param("", "Folder of the slider LoRA, its preview grid and the event stream.",
                            section="data", label="Output folder")
    output_name: str = param("slider", "File name (without extension) of the slider LoRA.", section="data",
                             label="Output name")
    work_dir: str = param("", "copy: folder for the copied images and the intermediate LoRAs "
                          "(default <output_dir>/<output_name>-work).",
                          section="data", label="Work folder")
    reuse_intermediates: bool = param(False, "copy: skip training a folder whose intermediate LoRA exists in the work "
                                      "folder and was trained with the same settings.", section="data",
                                      label="Reuse intermediate LoRAs")
    # ---- training (presets/sd15_slider_pair.json) ---------------------------------------------
    network_dim: int = param(4, "LoRA rank of each training.", section="training", label="Network rank", min=1,
                             max=1024)
    network_alpha: float = param(1.0, "LoRA alpha of each training.", section="training", label="Network alpha", min=0)
    optimizer_type: str = param("CAME", "Optimizer.", section="training", label="Optimizer", choices=OPTIMIZERS)
    learning_rate: float = param(5e-5, "Learning rate.", section="training", label="Learning rate", min=0)
    max_train_steps: int = param(400, "Steps of each training (copy: per folder; paired: in total).",
                                 section="training", label="Steps", min=1)
    lr_warmup_steps: float = param(20, "Warmup steps (or a fraction < 1 of the steps).", section="training",
                                   label="Warmup steps", min=0)
    lr_scheduler: str = param("constant_with_warmup", "Learning-rate schedule.", section="training",
                              label="LR scheduler", choices=LR_SCHEDULERS)
    network_train_unet_only: bool = param(True, "Train only the UNet LoRA.", section="training", label="UNet only")
    resolution: str = param("512", "Training resolution (\"512\" or \"width,height\").", section="training",
                            label="Resolution")
    seed: int = param(42, "Random seed.", section="training", label="Seed", min=0)
    train_args: dict = param(factory=dict, section="training", label="Other training parameters", widget="json",
                             help="Any other TrainConfig parameter of the trainings, "
                                  "e.g. {\"mixed_precision\": \"bf16\"}.")
    # ---- paired method ---------------------------------------------------------------------------
    slider_scale: float = param(1.0, "paired: LoRA multiplier used for B (+scale) and A (−scale) in training.",
                                section="paired", label="Slider scale", min=0)
    pair_matching: str = param("auto", "paired: match A_i/B_i by file name, by sorted order, or auto (names "
                               "when both folders have the same file names, else order).", section="paired",
                               label="Image matching", choices=MATCHING)
    # ---- merge, resize, save ---------------------------------------------------------------------
    ratio: float = param(1.5, "copy: merge ratio r: +r for every high LoRA, −r for every low LoRA.",
                         section="merge", label="Merge ratio")
    new_rank: int = param(8, "copy: rank of the SVD merge.", section="merge", label="Merge rank", min=1)
    clamp_quantile: float = param(0.99, "copy: sd-scripts' outlier clamp of the SVD merge (1 = no clamp).",
                                  section="merge", label="Clamp quantile", min=0.01, max=1.0)
    resize: Optional[bool] = param(None, "Resize the result at the end (empty: on for copy, off for paired).",
                                   section="merge", label="Resize")
    resize_rank: int = param(4, "Rank of the resize (the cap with a dynamic method).", section="merge",
                             label="Resize rank", min=1)
    resize_method: Optional[str] = param("sv_fro", "Dynamic rank method of the resize (empty: fixed rank).",
                                         section="merge", label="Resize method", choices=(None, *RESIZE_METHODS))
    resize_param: Optional[float] = param(0.75, "Parameter of the dynamic method (sv_fro 0.75 keeps 75 % of the "
                                          "Frobenius norm).", section="merge", label="Resize parameter")
    save_precision: str = param("fp16", "Precision of the saved slider LoRA.", section="merge",
                                label="Save precision", choices=SAVE_PRECISIONS)
    # ---- preview ---------------------------------------------------------------------------------
    preview: bool = param(True, "Render the preview grid (the LoRA at each preview weight, fixed seeds).",
                          section="preview", label="Preview grid")
    preview_prompts: list = param(factory=list, section="preview", label="Preview prompts", widget="textarea",
                                  help="Rows of the grid (each with every seed); empty: the prompt. `--n` adds a "
                                       "negative prompt, `--d` fixes the row's seed.")
    preview_seeds: list = param(factory=lambda: [1, 2], help="Seeds: one row per prompt and seed.",
                                section="preview", label="Preview seeds")
    preview_weights: list = param(factory=lambda: [-1.0, -0.5, 0.0, 0.5, 1.0], section="preview",
                                  help="LoRA weights: the columns of the grid.", label="Preview weights")
    preview_width: int = param(0, "Width of each image (0 = the training resolution).", section="preview",
                               label="Preview width", min=0)
    preview_height: int = param(0, "Height of each image (0 = the training resolution).", section="preview",
                                label="Preview height", min=0)
    preview_steps: int = param(28, "Sampling steps of each image.", section="preview", label="Preview steps", min=1,
                               max=1000)
    preview_cfg_scale: float = param(7.0, "CFG scale of the preview images.", section="preview",
                                     label="Preview CFG scale", min=0)
    preview_sampler: str = param("euler", "Sampler of the preview images.", section="preview",
                                 label="Preview sampler", choices=SAMPLERS)

    # ---- reading and writing -----------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format_version": FORMAT_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            data[f.name] = [p.to_dict() for p in value] if f.name == "pairs" else value
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def save(self, path: Union[str, Path]) -> None:
        from trainer.fileio import atomic_write_text

        atomic_write_text(Path(path), self.to_json() + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, base_dir: Optional[Path] = None) -> "SliderSpec":
        """A spec from JSON-like data (missing keys keep their defaults). Raises SliderSpecError naming
        every bad key. Relative folder paths are taken relative to `base_dir` when given (a spec file's folder)."""
        spec = cls()
        spec.update(data, base_dir=base_dir)
        return spec

    def update(self, data: dict[str, Any], *, base_dir: Optional[Path] = None) -> "SliderSpec":
        """Set the fields named in `data` (same rules as from_dict; all or nothing); returns self."""
        issues: list[SliderIssue] = []
        values: dict[str, Any] = {}
        known = {f.name: f for f in dataclasses.fields(self)}
        for key, raw in data.items():
            if key == "format_version":
                if not isinstance(raw, int) or isinstance(raw, bool) or raw > FORMAT_VERSION:
                    issues.append(_bad(key, f"unsupported format_version {raw!r}; this app reads {FORMAT_VERSION}"))
                continue
            if key not in known:
                issues.append(_bad(key, "unknown slider parameter"))
                continue
            try:
                value = _coerce(known[key], raw)
            except ValueError as exc:
                issues.append(_bad(key, str(exc)))
                continue
            values[key] = _resolve_paths(key, value, base_dir) if base_dir is not None else value
        if issues:
            raise SliderSpecError(issues)  # nothing was changed
        for key, value in values.items():
            setattr(self, key, value)
        return self

    @classmethod
    def load(cls, path: Union[str, Path]) -> "SliderSpec":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SliderSpecError([_bad("spec", f"cannot read {path}: {exc}")]) from None
        if not isinstance(data, dict):
            raise SliderSpecError([_bad("spec", f"{path} must hold a JSON object")])
        return cls.from_dict(data, base_dir=path.parent)

    # ---- derived values ---------------------------------------------------------------------
    def resize_enabled(self) -> bool:
        return (self.method == "copy") if self.resize is None else bool(self.resize)

    def pair_names(self) -> list[str]:
        return [p.name or f"pair{i + 1}" for i, p in enumerate(self.pairs)]

    def files(self) -> "SliderFiles":
        return SliderFiles(self)

    def training_values(self) -> dict[str, Any]:
        """The TrainConfig values every training of this spec shares (without data and output folders)."""
        values: dict[str, Any] = {
            "pretrained_model_name_or_path": self.model,
            "network_dim": self.network_dim,
            "network_alpha": self.network_alpha,
            "optimizer_type": self.optimizer_type,
            "learning_rate": self.learning_rate,
            "max_train_steps": self.max_train_steps,
            "lr_warmup_steps": self.lr_warmup_steps,
            "lr_scheduler": self.lr_scheduler,
            "network_train_unet_only": self.network_train_unet_only,
            "resolution": self.resolution,
            "seed": self.seed,
            "caption_extension": self.caption_extension,
            "lora_type": "Standard",
            # The trainings are steps of the wizard: no epoch saves or samples unless asked for in train_args.
            "max_train_epochs": 1,
            "save_every_n_epochs": 0,
            "save_every_n_steps": 0,
            "save_precision": "float",  # intermediates are merged: keep them exact
            "sample_every_n_steps": 0,
            "sample_every_n_epochs": 0,
            "sample_prompts": "",
        }
        values.update(self.train_args)
        return values


def _bad(key: str, message: str) -> SliderIssue:
    return SliderIssue(key, "error", "bad_value", message)


def _coerce(f: dataclasses.Field, raw: Any) -> Any:
    """Check one JSON value against the field's type, choices and range."""
    name, ann = f.name, str(f.type)
    if name == "pairs":
        return _coerce_pairs(raw)
    optional = ann.startswith("Optional[")
    if raw is None or (optional and raw == ""):
        if optional:
            return None
        raise ValueError("must not be empty")
    kind = ann[len("Optional["):-1] if optional else ann
    if kind == "bool":
        if not isinstance(raw, bool):
            raise ValueError(f"must be true or false, got {raw!r}")
        value: Any = raw
    elif kind in ("int", "float"):
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise ValueError(f"must be a number, got {raw!r}")
        if kind == "int" and not float(raw).is_integer():
            raise ValueError(f"must be a whole number, got {raw!r}")
        value = int(raw) if kind == "int" else float(raw)
    elif kind == "str":
        if not isinstance(raw, str):
            raise ValueError(f"must be text, got {raw!r}")
        value = raw
    elif kind == "dict":
        if not isinstance(raw, dict):
            raise ValueError(f"must be an object of TrainConfig parameters, got {raw!r}")
        value = dict(raw)
    elif kind == "list":
        value = _coerce_list(name, raw)
    else:  # pragma: no cover - a field type this function does not know
        raise ValueError(f"unsupported field type {ann}")
    meta = f.metadata
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise ValueError(f"must be one of {', '.join(str(c) for c in meta['choices'] if c is not None)}; got {raw!r}")
    if meta.get("min") is not None and value < meta["min"]:
        raise ValueError(f"must be at least {meta['min']}, got {raw!r}")
    if meta.get("max") is not None and value > meta["max"]:
        raise ValueError(f"must be at most {meta['max']}, got {raw!r}")
    return value


def _coerce_list(name: str, raw: Any) -> list:
    if isinstance(raw, str) and name == "preview_prompts":
        raw = [line for line in raw.splitlines() if line.strip()]
    if not isinstance(raw, (list, tuple)):
        raise ValueError(f"must be a list, got {raw!r}")
    if name == "preview_prompts":
        if not all(isinstance(x, str) for x in raw):
            raise ValueError("must be a list of prompts (text)")
        return [x for x in raw if x.strip()]
    numbers = []
    for x in raw:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise ValueError(f"must be a list of numbers, got {x!r}")
        if name == "preview_seeds":
            if not float(x).is_integer() or x < 0:
                raise ValueError(f"seeds must be whole numbers ≥ 0, got {x!r}")
            x = int(x)
        numbers.append(float(x) if name == "preview_weights" else x)
    return numbers


def _coerce_pairs(raw: Any) -> list[SliderPair]:
    if not isinstance(raw, (list, tuple)):
        raise ValueError("must be a list of pairs: {\"low\": folder, \"high\": folder, \"name\": optional}")
    pairs = []
    for i, item in enumerate(raw):
        if isinstance(item, SliderPair):
            pairs.append(item)
        elif isinstance(item, dict):
            unknown = set(item) - {"low", "high", "name"}
            if unknown or not isinstance(item.get("low"), str) or not isinstance(item.get("high"), str):
                raise ValueError(f"pair {i + 1} needs text \"low\" and \"high\" (and optionally \"name\")")
            pairs.append(SliderPair(item["low"], item["high"], str(item.get("name") or "")))
        elif isinstance(item, (list, tuple)) and len(item) in (2, 3) and all(isinstance(x, str) for x in item):
            pairs.append(SliderPair(*item))
        else:
            raise ValueError(f"pair {i + 1} must be {{\"low\": ..., \"high\": ...}} or [low, high]")
    return pairs


def _resolve_paths(key: str, value: Any, base: Path) -> Any:
    def resolve(text: str) -> str:
        if not text:
            return text  # empty means "the default"; Path("") would become "."
        p = Path(text).expanduser()
        return str(p if p.is_absolute() else base / p)

    if key == "pairs":
        return [SliderPair(resolve(p.low), resolve(p.high), p.name) for p in value]
    if key in ("output_dir", "work_dir"):
        return resolve(value)
    if key == "model" and value and not Path(value).expanduser().is_absolute() and (base / value).exists():
        return str(base / value)
    return value


def slider_comment(spec: SliderSpec) -> str:
    folders = "; ".join(f"{n}: low {p.low} / high {p.high}" for p, n in zip(spec.pairs, spec.pair_names()))
    if spec.method == "paired":
        return (f"slider (paired images, scale {spec.slider_scale:g}): +1 towards high, -1 towards low; {folders}")
    return f"slider (copy-machine, ratio {spec.ratio:g}): +1 towards high, -1 towards low; {folders}"


# ---- files ------------------------------------------------------------------------------------
class SliderFiles:
    """Every path a slider run writes. The work folder holds copies and intermediates only."""

    def __init__(self, spec: SliderSpec):
        self.output_dir = Path(spec.output_dir)
        self.name = spec.output_name
        self.work_dir = Path(spec.work_dir) if spec.work_dir else self.output_dir / f"{self.name}-work"
        self.pair_names = spec.pair_names()

    @property
    def lora(self) -> Path:
        return self.output_dir / f"{self.name}.safetensors"

    @property
    def stopped_lora(self) -> Path:
        return self.output_dir / f"{self.name}-stopped.safetensors"

    @property
    def preview(self) -> Path:
        return self.output_dir / f"{self.name}-preview.png"

    @property
    def events(self) -> Path:
        return self.output_dir / f"{self.name}.events.jsonl"

    @property
    def stop(self) -> Path:
        return self.output_dir / f"{self.name}.stop"

    @property
    def spec_json(self) -> Path:
        return self.output_dir / f"{self.name}.slider.json"

    @property
    def merged(self) -> Path:
        """copy with resize: the SVD merge before the resize (float)."""
        return self.work_dir / f"{self.name}-merged.safetensors"

    def data_dir(self, pair: str, side: str) -> Path:
        """The kohya train_data_dir of one folder (it holds one `1_<side>` subset)."""
        return self.work_dir / "data" / pair / side

    def intermediate_name(self, pair: str, side: str) -> str:
        return f"{pair}-{side}"

    @property
    def intermediate_dir(self) -> Path:
        return self.work_dir / "loras"

    def intermediate(self, pair: str, side: str) -> Path:
        return self.intermediate_dir / f"{self.intermediate_name(pair, side)}.safetensors"

    def outputs(self) -> list[Path]:
        """Files that must not exist before a run (nothing is ever overwritten)."""
        return [self.lora, self.preview]


# ---- images -----------------------------------------------------------------------------------
def list_images(folder: Union[str, Path]) -> list[Path]:
    """The images directly in `folder`, sorted by name."""
    from trainer.data.scan import is_image_file

    folder = Path(folder)
    return sorted((p for p in folder.iterdir() if p.is_file() and is_image_file(p.name)), key=lambda p: p.name)


def caption_of(image: Path, caption_extension: str) -> Optional[str]:
    """The image's caption file text (first line), or None when it has none or it is empty."""
    from trainer.data.captions import read_caption_file

    path = image.with_suffix(caption_extension)
    if not path.is_file():
        return None
    text = read_caption_file(path).strip()
    return text or None


def match_images(low: list[Path], high: list[Path], how: str = "auto") -> tuple[list[tuple[Path, Path]], str]:
    """Pairs (A_i, B_i) for the paired method, and the rule used ("name" or "order").

    name: images with the same file stem; order: the i-th image of each sorted folder (counts must agree);
    auto: name when both folders hold exactly the same stems, else order. Raises ValueError."""
    low_stems = {p.stem: p for p in low}
    high_stems = {p.stem: p for p in high}
    if how == "auto":
        how = "name" if set(low_stems) == set(high_stems) else "order"
    if how == "name":
        common = sorted(set(low_stems) & set(high_stems))
        if not common:
            raise ValueError("no image of the low folder has a namesake in the high folder")
        return [(low_stems[s], high_stems[s]) for s in common], "name"
    if len(low) != len(high):
        raise ValueError(f"the low folder has {len(low)} images and the high folder {len(high)}: "
                         "pairing by order needs the same count")
    return list(zip(low, high)), "order"


# ---- checks -------------------------------------------------------------------------------------
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
        if p is None:
            error("resize_param", "bad_value", f"{spec.resize_method} needs a parameter")
        elif spec.resize_method in ("sv_fro", "sv_cumulative") and not 0 < p <= 1:
            error("resize_param", "bad_value", f"{spec.resize_method} takes a fraction in (0, 1], got {p}")
        elif spec.resize_method == "sv_ratio" and p < 1:
            error("resize_param", "bad_value", f"sv_ratio takes a ratio ≥ 1, got {p}")
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
                          "Images must lie directly in the folder (png, jpg, jpeg, webp, bmp).")
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


# TrainConfig fields the spec names differently; every other unknown field is in train_args.
FIELD_FROM_TRAIN_CONFIG = {"pretrained_model_name_or_path": "model", "train_data_dir": "pairs",
                           "output_dir": "work_dir", "output_name": "output_name", "save_precision": "save_precision"}


def spec_field(train_field: Optional[str], spec: Optional[SliderSpec] = None) -> Optional[str]:
    """The spec field that holds a TrainConfig field (for error events the GUI's slider form can point at)."""
    if not train_field:
        return train_field
    if train_field in FIELD_FROM_TRAIN_CONFIG:
        return FIELD_FROM_TRAIN_CONFIG[train_field]
    if spec is not None and train_field in spec.train_args:
        return "train_args"
    return train_field if train_field in SliderSpec.field_names() else "train_args"


# TrainConfig fields the wizard sets for every training (data, output, resume).
WIZARD_OWNED = ("train_data_dir", "output_dir", "output_name", "resume", "network_weights")


def _training_issues(spec: SliderSpec) -> list[SliderIssue]:
    """Types, choices and ranges of the training values, by TrainConfig's own rules."""
    from trainer.config import ConfigError, TrainConfig

    issues = []
    for key in spec.train_args:
        if key in WIZARD_OWNED:
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


def errors_of(issues: Iterable[SliderIssue]) -> list[SliderIssue]:
    return [i for i in issues if i.level == "error"]


# ---- stages -------------------------------------------------------------------------------------
@dataclass
class Stage:
    """One step of the wizard, as the `stage` events announce it."""

    name: str  # "train front/low", "svd_merge", "resize", "preview"
    kind: str  # "train" | "merge" | "resize" | "preview"
    steps: int = 0  # optimizer steps (training stages)
    pair: str = ""
    side: str = ""


def plan_stages(spec: SliderSpec) -> list[Stage]:
    """The stages a run of `spec` goes through, in order (torch-free)."""
    stages: list[Stage] = []
    if spec.method == "copy":
        for name in spec.pair_names():
            for side in SIDES:
                stages.append(Stage(f"train {name}/{side}", "train", spec.max_train_steps, name, side))
        stages.append(Stage("svd_merge", "merge"))
    else:
        stages.append(Stage("train paired", "train", spec.max_train_steps))
    if spec.resize_enabled():
        stages.append(Stage("resize", "resize"))
    if spec.preview:
        stages.append(Stage("preview", "preview"))
    return stages
