"""The Utilities tab's forms as `python -m trainer.tools` command lines, with the checks done first.

Pure functions (no Gradio, no torch): `build_<tool>(form)` turns the values of one sub-tab into the
tool's arguments (sd-scripts flag names) or into problems, each under the field it concerns, so the
page can refuse a run with a message next to the field instead of a failed subprocess.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from trainer.config import SAVE_PRECISIONS
from trainer.fileio import same_path
from trainer.params import FieldSpec
from trainer.tools.options import (CHECKPOINT_SUFFIXES, DYNAMIC_METHODS, LORA_SUFFIXES, TOOLS,  # noqa: F401
                                   dynamic_param_problem, option_specs)

MAX_MODELS = 4  # model + ratio rows of the merge forms (as kohya's GUI)
FIXED_RANK = "none"  # the dynamic_method value of the form for "no dynamic method"
# each tool's options as the form reads them: kinds, ranges, choices, start values
OPTION_SPECS: dict[str, dict[str, FieldSpec]] = {tool: option_specs(tool) for tool in TOOLS}


@dataclass
class Problem:
    """A reason not to run: `field` is the form key (e.g. "save_to", "models.1"); `key` a catalog key."""

    field: str
    key: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ToolArgs:
    """The arguments after `python -m trainer.tools` (without the runner's --json / --progress_lines)."""

    tool: str
    argv: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    save_to: Optional[Path] = None  # the file the tool will write (suffix completed as the tool does)

    @property
    def ok(self) -> bool:
        return not self.problems


# ---- values ---------------------------------------------------------------------------------------
def clean_path(value: Any) -> str:
    """A pasted path without surrounding blanks or quotes ("Copy as path" on Windows adds quotes)."""
    text = str(value or "").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return os.path.expanduser(text) if text else ""


def number_text(value: float) -> str:
    """A number as the command line shows it: 8, 1.5, -1.5, 5e-05."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _option_flags(args: ToolArgs, form: dict[str, Any], *names: str) -> list[str]:
    """`--<name> <value>` for the tool's number options `names`, each checked by the option's kind and
    range (trainer.tools.options); an optional one left blank is left out."""
    argv: list[str] = []
    for name in names:
        spec = OPTION_SPECS[args.tool][name]
        value = _number(args, form, name, integer=spec.kind is int, optional=spec.optional, minimum=spec.minimum,
                        maximum=spec.maximum)
        if value is not None or not spec.optional:
            argv += [f"--{name}", _text(value)]
    return argv


def _number(args: ToolArgs, form: dict[str, Any], name: str, *, integer: bool = False, optional: bool = False,
            minimum: Optional[float] = None, maximum: Optional[float] = None) -> Optional[float]:
    """A form number (gr.Number gives floats, optional numbers are text boxes: blank = None)."""
    raw = form.get(name)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        if not optional:
            args.problems.append(Problem(name, "tool_err.number_needed"))
        return None
    try:
        value = float(raw.strip()) if isinstance(raw, str) else float(raw)
    except (TypeError, ValueError):
        args.problems.append(Problem(name, "tool_err.not_a_number", {"value": raw}))
        return None
    if not math.isfinite(value):
        args.problems.append(Problem(name, "tool_err.not_a_number", {"value": raw}))
        return None
    if integer and not value.is_integer():
        args.problems.append(Problem(name, "tool_err.whole_number", {"value": number_text(value)}))
        return None
    if minimum is not None and value < minimum:
        args.problems.append(Problem(name, "tool_err.at_least", {"min": number_text(minimum)}))
        return None
    if maximum is not None and value > maximum:
        args.problems.append(Problem(name, "tool_err.at_most", {"max": number_text(maximum)}))
        return None
    return int(value) if integer else value


def _input_file(args: ToolArgs, form: dict[str, Any], name: str) -> str:
    """A LoRA file that must exist."""
    path = clean_path(form.get(name))
    if not path:
        args.problems.append(Problem(name, "tool_err.path_needed"))
    elif Path(path).is_dir():
        args.problems.append(Problem(name, "tool_err.is_folder", {"path": path}))
    elif not Path(path).is_file():
        args.problems.append(Problem(name, "tool_err.no_such_file", {"path": path}))
    return path


def _input_model(args: ToolArgs, form: dict[str, Any], name: str) -> str:
    """A base model: a diffusers folder or a single file."""
    path = clean_path(form.get(name))
    if not path:
        args.problems.append(Problem(name, "tool_err.path_needed"))
    elif not Path(path).exists():
        args.problems.append(Problem(name, "tool_err.no_such_model", {"path": path}))
    return path


def _output(args: ToolArgs, form: dict[str, Any], inputs: list[str], *,
            suffixes: tuple[str, ...] = LORA_SUFFIXES) -> str:
    """--save_to: named, a supported suffix (none: .safetensors, as the tool adds), not an input,
    not an existing file unless overwrite is ticked. Returns the text for the command line."""
    text = clean_path(form.get("save_to"))
    if not text:
        args.problems.append(Problem("save_to", "tool_err.save_to_needed"))
        return ""
    path = Path(text)
    if path.suffix.lower() not in LORA_SUFFIXES:
        if path.suffix:
            args.problems.append(Problem("save_to", "tool_err.bad_suffix",
                                         {"suffix": path.suffix, "allowed": " ".join(suffixes)}))
            return text
        path = path.with_name(path.name + ".safetensors")
    if path.suffix.lower() not in suffixes:
        args.problems.append(Problem("save_to", "tool_err.bad_suffix",
                                     {"suffix": path.suffix, "allowed": " ".join(suffixes)}))
        return text
    if any(src and same_path(path, Path(src)) for src in inputs):
        args.problems.append(Problem("save_to", "tool_err.save_to_is_input", {"path": str(path)}))
    elif path.is_dir():
        args.problems.append(Problem("save_to", "tool_err.save_to_folder", {"path": str(path)}))
    elif path.exists() and not form.get("overwrite"):
        args.problems.append(Problem("save_to", "tool_err.save_to_exists", {"path": str(path)}))
    args.save_to = path
    return text


def _models_and_ratios(args: ToolArgs, form: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The filled rows of models.N / ratios.N (a row without a model is skipped)."""
    models, ratios = [], []
    for i in range(MAX_MODELS):
        if not clean_path(form.get(f"models.{i}")):
            continue
        path = _input_file(args, form, f"models.{i}")
        ratio = _number(args, form, f"ratios.{i}")
        models.append(path)
        ratios.append(number_text(ratio) if ratio is not None else "")
    if not models:
        args.problems.append(Problem("models.0", "tool_err.models_needed"))
    return models, ratios


def _save_options(args: ToolArgs, form: dict[str, Any], *, device: bool = True, verbose: bool = True) -> list[str]:
    precision = str(form.get("save_precision") or "float")
    if precision not in SAVE_PRECISIONS:
        args.problems.append(Problem("save_precision", "tool_err.bad_choice", {"value": precision}))
    out = ["--save_precision", precision]
    if device:
        out += ["--device", str(form.get("device") or "cpu").strip() or "cpu"]
    if verbose and form.get("verbose"):
        out.append("--verbose")
    if form.get("overwrite"):
        out.append("--overwrite")
    return out


# ---- the five tools ---------------------------------------------------------------------------------
def build_inspect(form: dict[str, Any]) -> ToolArgs:
    args = ToolArgs("inspect")
    model = _input_file(args, form, "model")
    args.argv = ["inspect", "--model", model, "--json"]
    return args


def build_merge(form: dict[str, Any]) -> ToolArgs:
    """Exact merge (ranks concatenate), or with `into_checkpoint` into the base model `sd_model`."""
    args = ToolArgs("merge")
    models, ratios = _models_and_ratios(args, form)
    argv = ["merge", "--models", *models, "--ratios", *ratios]
    inputs = list(models)
    suffixes = LORA_SUFFIXES
    if form.get("into_checkpoint"):
        sd_model = _input_model(args, form, "sd_model")
        argv += ["--sd_model", sd_model]
        inputs.append(sd_model)
        suffixes = CHECKPOINT_SUFFIXES
    argv += ["--save_to", _output(args, form, inputs, suffixes=suffixes)]
    argv += _save_options(args, form, device=False, verbose=False)
    args.argv = argv
    return args


def build_svd_merge(form: dict[str, Any]) -> ToolArgs:
    args = ToolArgs("svd_merge")
    models, ratios = _models_and_ratios(args, form)
    argv = ["svd_merge", "--models", *models, "--ratios", *ratios]
    argv += _option_flags(args, form, "new_rank", "new_conv_rank", "clamp_quantile")
    argv += ["--save_to", _output(args, form, models)]
    args.argv = argv + _save_options(args, form)
    return args


def build_resize(form: dict[str, Any]) -> ToolArgs:
    args = ToolArgs("resize")
    model = _input_file(args, form, "model")
    argv = ["resize", "--model", model] + _option_flags(args, form, "new_rank", "new_conv_rank")
    method = str(form.get("dynamic_method") or "")
    if method and method != FIXED_RANK:
        if method not in DYNAMIC_METHODS:
            args.problems.append(Problem("dynamic_method", "tool_err.bad_choice", {"value": method}))
        param = _number(args, form, "dynamic_param")
        problem = dynamic_param_problem(method, param) if param is not None else None
        if problem is not None:
            args.problems.append(Problem("dynamic_param", f"tool_err.{problem[0]}",
                                         {"method": method, "value": number_text(param)}))
        argv += ["--dynamic_method", method, "--dynamic_param", _text(param)]
    argv += ["--save_to", _output(args, form, [model])]
    args.argv = argv + _save_options(args, form)
    return args


def build_extract(form: dict[str, Any]) -> ToolArgs:
    args = ToolArgs("extract")
    org = _input_model(args, form, "model_org")
    tuned = _input_model(args, form, "model_tuned")
    if org and tuned and Path(org).exists() and Path(tuned).exists() and same_path(Path(org), Path(tuned)):
        args.problems.append(Problem("model_tuned", "tool_err.same_models"))
    argv = ["extract", "--model_org", org, "--model_tuned", tuned]
    argv += _option_flags(args, form, "dim", "conv_dim", "clamp_quantile", "min_diff")
    argv += ["--save_to", _output(args, form, [org, tuned])]
    args.argv = argv + _save_options(args, form)
    return args


BUILDERS = {"inspect": build_inspect, "merge": build_merge, "svd_merge": build_svd_merge, "resize": build_resize,
            "extract": build_extract}


def build(tool: str, form: dict[str, Any]) -> ToolArgs:
    return BUILDERS[tool](form)


def _text(value: Optional[float]) -> str:
    return "" if value is None else number_text(value)
