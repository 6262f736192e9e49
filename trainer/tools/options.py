"""The options of the LoRA tools, declared once as parameters (trainer.params).

`python -m trainer.tools` builds its flags from these declarations (sd-scripts' flag names), the
Utilities form reads their kinds, ranges, choices and start values, and the slider spec reuses the
merge and resize ones. Also the tools' constant lists and the rule of the dynamic resize parameter.

Torch-free: the web process imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from trainer.config import TrainConfig
from trainer.params import FOLDER, LORA_SUFFIXES, UNSET, FieldSpec, field_specs, param, same_as  # noqa: F401

DYNAMIC_METHODS = ("sv_ratio", "sv_fro", "sv_cumulative")  # sd-scripts' resize_lora.py names
FRACTION_METHODS = ("sv_fro", "sv_cumulative")  # their parameter is a fraction in (0, 1]; sv_ratio's is ≥ 1
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")


def dynamic_param_problem(method: str, value: float) -> Optional[tuple[str, str]]:
    """(code, message) when `value` is not a parameter of the dynamic method `method`, else None."""
    if method == "sv_ratio" and not value >= 1.0:
        return "sv_ratio_param", f"sv_ratio needs a ratio ≥ 1 (σ_max/σ_min kept), got {value:g}"
    if method in FRACTION_METHODS and not 0.0 < value <= 1.0:
        return "fraction_param", f"{method} needs a fraction in (0, 1], got {value:g}"
    return None


def option(default: Any = UNSET, help: str = "", **kw: Any) -> Any:
    return param(default, help, tab="tools", **kw)


@dataclass
class InspectOptions:
    model: str = option("", "LoRA file to inspect", required=True, widget="path", accept=LORA_SUFFIXES)
    summary: bool = option(False, "no per-module table")
    full_metadata: bool = option(False, "do not shorten long metadata values")
    json: bool = option(False, "print the report as JSON instead of text")


@dataclass
class RatioOptions:
    models: list = option(factory=list, help="LoRA files to merge", required=True, item="str", widget="path",
                          accept=LORA_SUFFIXES)
    ratios: list = option(factory=list, help="one ratio per model (may be negative)", required=True, item="float",
                          step=0.05, form_default=1.0)
    precision: Optional[str] = option(None, "accepted for sd-scripts compatibility; math is always ≥ fp32")


@dataclass
class MergeOptions:
    concat: bool = option(False, "accepted; merges always concatenate (exact)")
    shuffle: bool = option(False, "accepted; channel order does not change ΔW")
    sd_model: Optional[str] = option(None, "merge into this base model; --save_to is then a checkpoint", widget="path",
                                  accept=FOLDER + CHECKPOINT_SUFFIXES)
    v2: bool = option(False, "with --sd_model: the base is SD2 (detected from the files too)")
    v_parameterization: bool = option(False, "with --sd_model: v-prediction base")
    save_as: str = option("single_file", "with --sd_model: write one .safetensors/.ckpt file, or a diffusers "
                          "folder at --save_to", choices=("single_file", "diffusers"))


@dataclass
class RankOptions:
    new_rank: int = option(4, "rank of the result (the cap with a dynamic method)", min=1, max=1024, step=1)
    new_conv_rank: Optional[int] = option(None, "rank of 3×3 convs (default: new_rank)", min=1, max=1024)


@dataclass
class ClampOptions:
    clamp_quantile: float = option(0.99, "sd-scripts' outlier clamp; 1 disables it", min=0.01, max=1.0, step=0.01)


@dataclass
class ResizeOptions:
    model: str = option("", "LoRA file to resize", required=True, widget="path", accept=LORA_SUFFIXES)
    dynamic_method: Optional[str] = option(None, "choose the rank of each module (default: the fixed rank)",
                                           choices=DYNAMIC_METHODS)
    dynamic_param: Optional[float] = option(None, "parameter of the dynamic method: sv_ratio a ratio ≥ 1, "
                                            "sv_fro / sv_cumulative a fraction in (0, 1]")


@dataclass
class ExtractOptions:
    model_org: str = option("", "original model: diffusers folder, .safetensors/.ckpt, or a module-weights file",
                            required=True, widget="path", accept=FOLDER + CHECKPOINT_SUFFIXES)
    model_tuned: str = option("", "fine-tuned model (same kinds)", required=True, widget="path",
                              accept=FOLDER + CHECKPOINT_SUFFIXES)
    dim: int = option(4, "rank of the extracted LoRA", min=1, max=1024, step=1)
    conv_dim: Optional[int] = option(None, "rank of 3×3 convs (default: convs not extracted)", min=1, max=1024)
    min_diff: float = option(0.01, "text encoder kept only if it changed more", min=0.0, step=0.001)
    exact_svd: bool = option(False, "full SVD instead of the randomised top-k one")
    v2: bool = option(False, "metadata: SD2 base")
    v_parameterization: bool = option(False, "metadata: v-prediction base")
    sdxl: bool = option(False, "metadata: SDXL base")
    load_precision: Optional[str] = option(None, "accepted for sd-scripts compatibility")


@dataclass
class VerboseOptions:
    verbose: bool = option(False, "per-module report", form_default=True)


@dataclass
class OutputOptions:
    device: Optional[str] = option(None, "device for the math, e.g. cuda (default: cpu)")
    save_to: str = option("", "output LoRA (.safetensors, or .ckpt/.pt/.pth)", required=True, widget="path",
                         accept=("save",) + LORA_SUFFIXES)
    save_precision: str = same_as(TrainConfig, "save_precision", "float", tab="tools", form_default="fp16")
    overwrite: bool = option(False, "replace --save_to if it exists (never an input)")
    json: Optional[str] = option(None, "also write the report as JSON to FILE", metavar="FILE")
    progress_lines: bool = option(False, "print 'PROGRESS done/total' lines on stderr (for programs, e.g. the GUI)")


TOOL_HELP = {
    "inspect": "metadata, ranks, alphas, norms, problems of a LoRA file",
    "merge": "exact merge: ΔW = Σ ratio·ΔW (ranks concatenate)",
    "svd_merge": "merge, then re-factorise to a fixed rank by SVD",
    "resize": "reduce the rank (fixed or dynamic per module)",
    "extract": "LoRA from the difference of two models",
}
# Each tool's option groups, in the order --help lists them.
TOOL_OPTIONS: dict[str, tuple[type, ...]] = {
    "inspect": (InspectOptions,),
    "merge": (RatioOptions, MergeOptions, OutputOptions),
    "svd_merge": (RatioOptions, RankOptions, ClampOptions, VerboseOptions, OutputOptions),
    "resize": (ResizeOptions, RankOptions, VerboseOptions, OutputOptions),
    "extract": (ExtractOptions, ClampOptions, VerboseOptions, OutputOptions),
}
TOOLS = tuple(TOOL_OPTIONS)


def option_specs(tool: str) -> dict[str, FieldSpec]:
    """The form description of every option of `tool` (name -> FieldSpec)."""
    specs: dict[str, FieldSpec] = {}
    for group in TOOL_OPTIONS[tool]:
        specs.update(field_specs(group))
    return specs
