"""What a slider run is: the spec (JSON file and CLI flags) and the values its trainings get.

A slider LoRA moves one attribute with its weight: at +1 towards the "high" images (B), at −1
towards the "low" images (A). The spec names one or more pairs of plain image folders (A, B), the
base model, a prompt (the caption of images without a caption file) and the settings of the two
methods (see docs/SLIDER.md):

- "copy" (copy-machine): train one deliberately overfit LoRA per folder, SVD-merge them with
  +ratio for every B and −ratio for every A in one merge, optionally resize, save.
- "paired": one LoRA trained on matched images A_i/B_i with the same noise and timestep, at
  multiplier +scale on B and −scale on A.

The spec is a parameter set of trainer.params: the settings it shares with a training are
TrainConfig's own definitions (same help, choices and ranges; only the default is the slider's,
that of presets/sd15_slider_pair.json), the merge and resize settings are the tools' options, and
the shared values reach each stage's TrainConfig by name. Torch-free: the web process builds,
checks and saves specs with it. The checks are in trainer.slider.checks, the stages in
trainer.slider.stages, the files in trainer.slider.files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from trainer.config import TrainConfig
from trainer.findings import Finding, errors_of  # noqa: F401  (errors_of: importers take it from here)
from trainer.params import FOLDER, UNSET, FieldError, ParamError, param, read_values, same_as, shared_fields
from trainer.slider.files import SliderFiles
from trainer.slider.images import caption_of, list_images, match_images  # noqa: F401  (moved there)
from trainer.slider.stages import SIDES, Stage, plan_stages  # noqa: F401  (moved there)
from trainer.tools.options import DYNAMIC_METHODS, ClampOptions, RankOptions, ResizeOptions

FORMAT_VERSION = 1
MIGRATIONS: dict = {}  # format_version v -> v + 1, for spec files of older versions
METHODS = ("copy", "paired")
MATCHING = ("auto", "name", "order")
RESIZE_METHODS = DYNAMIC_METHODS
SAFE_NAME = re.compile(r"^[^/\\:*?\"<>|\x00-\x1f]+$")
# The slider's own settings declared as TrainConfig's: the trainings get the wizard's values instead.
SLIDER_OWN = ("output_dir", "output_name", "save_precision", "preview_sampler")
# TrainConfig fields the wizard sets for every training, and the spec field a problem with one points at.
WIZARD_FIELDS = {"train_data_dir": "pairs", "output_dir": "work_dir", "output_name": "output_name",
                 "save_precision": "save_precision"}


@dataclass
class SliderPair:
    """One pair of image folders: `low` (A, the slider at −1) and `high` (B, the slider at +1)."""

    low: str
    high: str
    name: str = ""  # e.g. "front"; names the intermediate files. Default "pair1", "pair2", ...

    def to_dict(self) -> dict[str, str]:
        return {"low": self.low, "high": self.high, "name": self.name}


class SliderIssue(Finding):
    """A finding of the slider checks (trainer.findings.Finding); `hint` may be given positionally."""

    def __init__(self, field: str, level: str, code: str, message: str, hint: Optional[str] = None, *,
                 params: Optional[dict[str, Any]] = None):
        super().__init__(field, level, code, message, params=params or {}, hint=hint)


# A spec that cannot be read (bad JSON, unknown keys, wrong types): the parameter base's error,
# whose `issues` are findings naming every bad field.
SliderSpecError = ParamError


# ---- values that are not plain numbers or text ---------------------------------------------------------
def _pairs(raw: Any) -> list[SliderPair]:
    if not isinstance(raw, (list, tuple)):
        raise ValueError("must be a list of pairs: {\"low\": folder, \"high\": folder, \"name\": optional}")
    return [_pair(i, item) for i, item in enumerate(raw)]


def _pair(i: int, item: Any) -> SliderPair:
    if isinstance(item, SliderPair):
        return item
    if isinstance(item, dict):
        unknown = set(item) - {"low", "high", "name"}
        if unknown or not isinstance(item.get("low"), str) or not isinstance(item.get("high"), str):
            raise ValueError(f"pair {i + 1} needs text \"low\" and \"high\" (and optionally \"name\")")
        return SliderPair(item["low"], item["high"], str(item.get("name") or ""))
    if isinstance(item, (list, tuple)) and len(item) in (2, 3) and all(isinstance(x, str) for x in item):
        return SliderPair(*item)
    raise ValueError(f"pair {i + 1} must be {{\"low\": ..., \"high\": ...}} or [low, high]")


def _train_args(raw: Any) -> dict:
    if not isinstance(raw, dict):
        raise ValueError(f"must be an object of TrainConfig parameters, got {raw!r}")
    return dict(raw)


def _prompts(raw: Any) -> list[str]:
    if isinstance(raw, str):
        raw = raw.splitlines()
    if not isinstance(raw, (list, tuple)):
        raise ValueError(f"must be a list, got {raw!r}")
    if not all(isinstance(x, str) for x in raw):
        raise ValueError("must be a list of prompts (text)")
    return [x for x in raw if x.strip()]


def _numbers(raw: Any) -> list:
    if not isinstance(raw, (list, tuple)):
        raise ValueError(f"must be a list, got {raw!r}")
    for x in raw:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise ValueError(f"must be a list of numbers, got {x!r}")
    return list(raw)


def _seeds(raw: Any) -> list[int]:
    seeds = _numbers(raw)
    for x in seeds:
        if not float(x).is_integer() or x < 0:
            raise ValueError(f"seeds must be whole numbers ≥ 0, got {x!r}")
    return [int(x) for x in seeds]


def _weights(raw: Any) -> list[float]:
    return [float(x) for x in _numbers(raw)]


def setting(default: Any = UNSET, help: str = "", *, section: str, **kw: Any) -> Any:
    """A slider-only parameter (the Slider tab; sd-scripts has no such option)."""
    return param(default, help, tab="slider", section=section, sd_scripts=False, **kw)


def training(name: str, default: Any = UNSET, *, section: str = "training", **kw: Any) -> Any:
    """TrainConfig's parameter `name`, with the slider's default."""
    return same_as(TrainConfig, name, default, tab="slider", section=section, **kw)


@dataclass
class SliderSpec:
    # ---- data and output ---------------------------------------------------------------------
    pairs: list[SliderPair] = setting(factory=list, section="data", label="Image folder pairs", convert=_pairs,
                                      cli=False, help="Pairs of plain image folders: low (A, slider −1) and high "
                                                      "(B, slider +1).")
    method: str = setting("copy", "copy: one overfit LoRA per folder, SVD-merged (+ratio B, −ratio A). paired: one "
                          "LoRA trained on matched images with shared noise, +scale on B and −scale on A.",
                          section="data", label="Method", choices=METHODS)
    model: str = training("pretrained_model_name_or_path", section="data")
    prompt: str = setting("", "Caption of every image that has no caption file; also the preview prompt.",
                          section="data", label="Prompt")
    output_dir: str = training("output_dir", section="data")
    output_name: str = training("output_name", "slider", section="data")
    caption_extension: str = training("caption_extension", section="data")
    work_dir: str = setting("", "copy: folder for the copied images and the intermediate LoRAs "
                            "(default <output_dir>/<output_name>-work).", section="data", label="Work folder",
                            widget="path", accept=FOLDER)
    reuse_intermediates: bool = setting(False, "copy: skip training a folder whose intermediate LoRA exists in the "
                                        "work folder and was trained with the same settings.", section="data",
                                        label="Reuse intermediate LoRAs")
    # ---- training (presets/sd15_slider_pair.json) ---------------------------------------------
    network_dim: int = training("network_dim", 4)
    network_alpha: float = training("network_alpha", 1.0)
    optimizer_type: str = training("optimizer_type", "CAME")
    learning_rate: float = training("learning_rate", 5e-5)
    max_train_steps: int = training("max_train_steps", 400, min=1)  # copy: per folder; paired: in total
    lr_warmup_steps: float = training("lr_warmup_steps", 20)
    lr_scheduler: str = training("lr_scheduler", "constant_with_warmup")
    network_train_unet_only: bool = training("network_train_unet_only", True)
    resolution: str = training("resolution")
    seed: int = training("seed")
    train_args: dict = setting(factory=dict, section="training", label="Other training parameters", widget="json",
                               convert=_train_args,
                               help="Any other TrainConfig parameter of the trainings, e.g. {\"mixed_precision\": "
                                    "\"bf16\"}.")
    # ---- paired method ---------------------------------------------------------------------------
    slider_scale: float = setting(1.0, "paired: LoRA multiplier used for B (+scale) and A (−scale) in training.",
                                  section="paired", label="Slider scale", min=0)
    pair_matching: str = setting("auto", "paired: match A_i/B_i by file name, by sorted order, or auto (names "
                                 "when both folders have the same file names, else order).", section="paired",
                                 label="Image matching", choices=MATCHING)
    # ---- merge, resize, save (the tools' options) ------------------------------------------------
    ratio: float = setting(1.5, "copy: merge ratio r: +r for every high LoRA, −r for every low LoRA.",
                           section="merge", label="Merge ratio")
    new_rank: int = same_as(RankOptions, "new_rank", 8, tab="slider", section="merge")
    clamp_quantile: float = same_as(ClampOptions, "clamp_quantile", tab="slider", section="merge")
    resize: Optional[bool] = setting(None, "Resize the result at the end (empty: on for copy, off for paired).",
                                     section="merge", label="Resize")
    resize_method: Optional[str] = same_as(ResizeOptions, "dynamic_method", "sv_fro", tab="slider", section="merge")
    resize_param: Optional[float] = same_as(ResizeOptions, "dynamic_param", 0.75, tab="slider", section="merge")
    resize_rank: int = same_as(RankOptions, "new_rank", 4, tab="slider", section="merge")
    save_precision: str = training("save_precision", "fp16", section="merge")
    # ---- preview ---------------------------------------------------------------------------------
    preview: bool = setting(True, "Render the preview grid (the LoRA at each preview weight, fixed seeds).",
                            section="preview", label="Preview grid")
    preview_prompts: list = setting(factory=list, section="preview", label="Preview prompts", widget="textarea",
                                    convert=_prompts,
                                    help="Rows of the grid (each with every seed); empty: the prompt. `--n` adds a "
                                         "negative prompt, `--d` fixes the row's seed.")
    preview_weights: list = setting(factory=lambda: [-1.0, -0.5, 0.0, 0.5, 1.0], section="preview",
                                    help="LoRA weights: the columns of the grid.", label="Preview weights",
                                    convert=_weights, item="float")
    preview_seeds: list = setting(factory=lambda: [1, 2], help="Seeds: one row per prompt and seed.",
                                  section="preview", label="Preview seeds", convert=_seeds, item="int")
    preview_steps: int = setting(28, "Sampling steps of each image.", section="preview", label="Preview steps",
                                 min=1, max=1000)
    preview_cfg_scale: float = setting(7.0, "CFG scale of the preview images.", section="preview",
                                       label="Preview CFG scale", min=0)
    preview_sampler: str = training("sample_sampler", "euler", section="preview")

    preview_width: int = setting(0, "Width of each image (0 = the training resolution).", section="preview",
                                 label="Preview width", min=0)
    preview_height: int = setting(0, "Height of each image (0 = the training resolution).", section="preview",
                                  label="Preview height", min=0)
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
        values = read_values(type(self), data, version=FORMAT_VERSION, migrations=MIGRATIONS,
                             unknown="unknown slider parameter")
        for key, value in values.items():
            setattr(self, key, _resolve_paths(key, value, base_dir) if base_dir is not None else value)
        return self

    @classmethod
    def load(cls, path: Union[str, Path]) -> "SliderSpec":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SliderSpecError([FieldError("spec", f"cannot read {path}: {exc}")]) from None
        if not isinstance(data, dict):
            raise SliderSpecError([FieldError("spec", f"{path} must hold a JSON object")])
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
        values: dict[str, Any] = {train: getattr(self, name) for name, train in TRAINED.items()}
        values.update({
            "lora_type": "Standard",
            # The trainings are steps of the wizard: no epoch saves or samples unless asked for in train_args.
            "max_train_epochs": 1,
            "save_every_n_epochs": 0,
            "save_every_n_steps": 0,
            "save_precision": "float",  # intermediates are merged: keep them exact
            "sample_every_n_steps": 0,
            "sample_every_n_epochs": 0,
            "sample_prompts": "",
        })
        values.update(self.train_args)
        return values


# spec field -> the TrainConfig field its value goes to in every training
TRAINED: dict[str, str] = {name: source for name, (cls, source) in shared_fields(SliderSpec).items()
                           if cls is TrainConfig and name not in SLIDER_OWN}
# TrainConfig fields the spec names differently (or sets itself); every other unknown field is in train_args.
FIELD_FROM_TRAIN_CONFIG = {**{train: name for name, train in TRAINED.items() if train != name}, **WIZARD_FIELDS}


def spec_field(train_field: Optional[str], spec: Optional[SliderSpec] = None) -> Optional[str]:
    """The spec field that holds a TrainConfig field (for error events the GUI's slider form can point at)."""
    if not train_field:
        return train_field
    if train_field in FIELD_FROM_TRAIN_CONFIG:
        return FIELD_FROM_TRAIN_CONFIG[train_field]
    if spec is not None and train_field in spec.train_args:
        return "train_args"
    return train_field if train_field in SliderSpec.field_names() else "train_args"


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


def __getattr__(name: str) -> Any:
    """The checks moved to trainer.slider.checks (which imports this module): still importable from here."""
    if name in ("validate_spec", "WIZARD_OWNED"):
        from trainer.slider import checks

        return getattr(checks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
