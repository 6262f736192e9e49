"""The Slider tab's form as a `trainer.slider.SliderSpec`, and the spec's problems by form field.

Pure functions (no Gradio, no torch). The spec module is the engine's own torch-free part: its
field metadata gives the defaults, `SliderSpec.update` checks types and ranges, `validate_spec`
checks folders, model and outputs. Paths become absolute here, because the spec file the job runs
lives in the output folder and the engine resolves relative paths against that folder.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from lora_gui.engine import check_slider_spec, slider_command
from trainer.params import FieldSpec, field_specs
from trainer.slider.spec import SliderIssue, SliderPair, SliderSpec, SliderSpecError

MAX_PAIRS = 6
DEFAULTS = SliderSpec()
SPECS: dict[str, FieldSpec] = field_specs(SliderSpec)  # kind, choices, range, widget of every spec field
# Spec fields the tab does not show: the pairs have rows of their own; the rest is for spec files and the CLI.
NOT_ON_FORM = ("pairs", "caption_extension", "work_dir", "reuse_intermediates", "lr_scheduler", "clamp_quantile")


def _section(section: str) -> tuple[str, ...]:
    return tuple(n for n, s in SPECS.items() if s.section == section and n not in NOT_ON_FORM)


# the spec fields the tab shows (beside the pairs), by section, in the order of the spec
BASIC = _section("data")
TRAINING = _section("training")
MERGE = _section("merge")
PAIRED = _section("paired")
PREVIEW = _section("preview")
FIELDS = BASIC + TRAINING + MERGE + PAIRED + PREVIEW
COPY_ONLY = ("ratio", "new_rank")  # greyed out for the paired method
PAIRED_ONLY = PAIRED
NUMBER_LISTS = tuple(n for n in FIELDS if SPECS[n].kind is list and n != "preview_prompts")  # "-1 -0.5 0 0.5 1"
FIXED_RANK = "none"  # resize_method value of the form for "fixed rank" (the spec's None)


@dataclass
class SliderForm:
    """The spec the form describes (None when it has values that are not allowed) and every problem."""

    spec: Optional[SliderSpec]
    issues: list[SliderIssue] = field(default_factory=list)

    @property
    def errors(self) -> list[SliderIssue]:
        return [i for i in self.issues if i.level == "error"]

    @property
    def ok(self) -> bool:
        return self.spec is not None and not self.errors

    def by_field(self) -> dict[str, list[SliderIssue]]:
        """Issues under the form field they concern: a spec field, "pairs", or "" (the whole form)."""
        out: dict[str, list[SliderIssue]] = {}
        for issue in self.issues:
            key = issue.field if issue.field in FIELDS or issue.field == "pairs" else ""
            out.setdefault(key, []).append(issue)
        return out


# ---- defaults ------------------------------------------------------------------------------------------
def default_value(name: str) -> Any:
    """The value the form starts with (the spec's defaults: presets/sd15_slider_pair.json)."""
    return form_value(DEFAULTS, name)


def spec_to_values(spec: SliderSpec) -> dict[str, Any]:
    """The form values that show `spec` (the inverse of form_data), e.g. the running job's after a reload."""
    return {name: form_value(spec, name) for name in FIELDS}


def form_value(spec: SliderSpec, name: str) -> Any:
    """The spec's value of `name` as the form shows it."""
    value = getattr(spec, name)
    if name in NUMBER_LISTS:
        return list_text(value)
    if name == "preview_prompts":
        return "\n".join(value)
    if name == "train_args":
        return json.dumps(value) if value else ""
    if name == "resize":
        return spec.resize_enabled()
    if name == "resize_method":
        return value or FIXED_RANK
    return value


def list_text(values: list) -> str:
    return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


# ---- form -> spec ---------------------------------------------------------------------------------------
def absolute(path: str) -> str:
    """A folder path as the job will see it (relative paths are relative to the app folder, the cwd)."""
    text = os.path.expanduser(path.strip())
    return os.path.abspath(text) if text else ""


def _model_path(text: str) -> str:
    """Absolute when it names something on disk; a Hugging Face id stays as it is."""
    text = os.path.expanduser(text.strip())
    return os.path.abspath(text) if text and Path(text).exists() else text


def pairs_from_rows(names: list[Any], lows: list[Any], highs: list[Any], count: int) -> list[SliderPair]:
    """The first `count` rows; a row with nothing in it is left out."""
    pairs = []
    for name, low, high in list(zip(names, lows, highs))[:count]:
        name, low, high = (str(x or "").strip() for x in (name, low, high))
        if name or low or high:
            pairs.append(SliderPair(absolute(low) if low else "", absolute(high) if high else "", name))
    return pairs


def _numbers(text: Any, name: str) -> list[float]:
    """ "-1 -0.5 0, 0.5 1" -> numbers (the typographic minus − works too). Raises ValueError."""
    parts = [p for p in re.split(r"[\s,;]+", str(text or "").replace("−", "-")) if p]
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"{name}: write numbers separated by spaces, e.g. -1 -0.5 0 0.5 1") from None


def form_data(values: dict[str, Any]) -> tuple[dict[str, Any], list[SliderIssue]]:
    """Form values (by spec field name) as the JSON-like data SliderSpec.update takes."""
    data: dict[str, Any] = {}
    issues: list[SliderIssue] = []
    for name in FIELDS:
        if name not in values:
            continue
        raw = values[name]
        try:
            data[name] = _field_value(name, raw)
        except ValueError as exc:
            issues.append(SliderIssue(name, "error", "bad_value", str(exc)))
    return data, issues


def _field_value(name: str, raw: Any) -> Any:
    if name in NUMBER_LISTS:
        return _numbers(raw, name)
    if name == "preview_prompts":
        return [line for line in str(raw or "").splitlines() if line.strip()]
    if name == "train_args":
        text = str(raw or "").strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc.msg} (e.g. {{\"mixed_precision\": \"no\"}})") from None
        if not isinstance(value, dict):
            raise ValueError("write a JSON object, e.g. {\"mixed_precision\": \"no\"}")
        return value
    if name == "resize_method":
        return None if not raw or raw == FIXED_RANK else raw
    if name in ("output_dir",):
        return absolute(str(raw or ""))
    if name == "model":
        return _model_path(str(raw or ""))
    if SPECS[name].kind is int and isinstance(raw, float) and raw.is_integer():
        return int(raw)
    return raw


def build_spec(values: dict[str, Any], pairs: list[SliderPair], *, check_outputs: bool = True) -> SliderForm:
    """The spec of the form, checked (validate_spec: folders, model, outputs, training values)."""
    data, issues = form_data(values)
    data["pairs"] = [p.to_dict() for p in pairs]
    spec = SliderSpec()
    try:
        spec.update(data)
    except SliderSpecError as exc:
        return SliderForm(None, issues + exc.issues)
    if issues:
        return SliderForm(None, issues)
    if spec.output_dir and not spec.work_dir:
        # the default work folder, written out: the spec file must not hold an empty path (the engine
        # reads paths in a spec file relative to the file's folder)
        spec.work_dir = str(spec.files().work_dir)
    return SliderForm(spec, check_slider_spec(spec, check_outputs=check_outputs))


def command_line(spec_path: Path) -> list[str]:
    return slider_command(str(spec_path))
