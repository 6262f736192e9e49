"""Gradio components generated from the TrainConfig field metadata, and back.

`FIELDS` is the one list of parameters the page knows; it comes from the dataclass. Tabs only
decide where the generated components go; nothing here names a parameter by hand.
"""

from __future__ import annotations

from typing import Any, Optional

import gradio as gr

from lora_gui import i18n
from trainer.config import ConfigError, FieldError, TrainConfig
from trainer.params import FieldSpec, field_specs

FIELDS: tuple[FieldSpec, ...] = tuple(field_specs(TrainConfig).values())
FIELD_NAMES: tuple[str, ...] = tuple(s.name for s in FIELDS)
SPEC: dict[str, FieldSpec] = {s.name: s for s in FIELDS}


def specs_for_tab(tab: str) -> list[FieldSpec]:
    return [s for s in FIELDS if s.tab == tab]


def sections_for_tab(tab: str) -> list[tuple[str, list[FieldSpec]]]:
    """(section, fields) in the order sections first appear in the dataclass."""
    order: dict[str, list[FieldSpec]] = {}
    for s in specs_for_tab(tab):
        order.setdefault(s.section, []).append(s)
    return list(order.items())


# ---- values -------------------------------------------------------------------------------
def to_ui(spec: FieldSpec, value: Any) -> Any:
    """A config value as the component shows it (optional numbers are text boxes: blank = None)."""
    if spec.optional and spec.kind in (int, float):
        return "" if value is None else _number_text_plain(value)
    if value is None:
        return None if spec.kind in (int, float) else ""
    return value


def from_ui(spec: FieldSpec, value: Any) -> Any:
    """A component value as the JSON value TrainConfig.from_dict expects (it does the checking)."""
    if spec.kind is bool:
        return bool(value)
    if spec.kind in (int, float):
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                return value  # from_dict names the field and the problem
        if spec.kind is int and isinstance(value, float) and value.is_integer():
            return int(value)
        return value
    if spec.choices is not None and value is not None and not isinstance(value, str):
        return value
    return "" if value is None else str(value)


def values_to_dict(values: list[Any] | tuple[Any, ...]) -> dict[str, Any]:
    """Component values, in FIELDS order, as a flat config dict."""
    if len(values) != len(FIELDS):
        raise ValueError(f"expected {len(FIELDS)} field values, got {len(values)}")
    return {spec.name: from_ui(spec, v) for spec, v in zip(FIELDS, values)}


def build_config(values: list[Any] | tuple[Any, ...]) -> tuple[Optional[TrainConfig], list[FieldError]]:
    """The config the form describes, or the per-field reasons it is not one.

    Fields hidden for the model's family count with their defaults (lora_gui.family.effective).
    """
    from lora_gui.family import effective

    data = effective(values_to_dict(values))
    try:
        return TrainConfig.from_dict(data), []
    except ConfigError as exc:
        return None, list(exc.errors)


def config_to_values(cfg: TrainConfig) -> list[Any]:
    return [to_ui(s, getattr(cfg, s.name)) for s in FIELDS]


# ---- components ---------------------------------------------------------------------------
def elem_id(name: str) -> str:
    return f"field-{name}"


def _number_text(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def _number_text_plain(x: float) -> str:
    return repr(x) if isinstance(x, float) else str(x)


def help_text(spec: FieldSpec, lang: str) -> str:
    """The help line under a label; numbers also show their allowed range."""
    text = i18n.field_help(spec.name, lang)
    if spec.kind in (int, float) and spec.minimum is not None and spec.maximum is not None:
        text += " " + i18n.t("form.range", lang, min=_number_text(spec.minimum), max=_number_text(spec.maximum))
    return text


def make_component(spec: FieldSpec, value: Any, lang: str) -> gr.components.Component:
    """The component for one parameter, labelled in `lang`, showing `value`.

    Ranges are not given to gr.Number: Gradio would reject the whole form with an English
    pop-up; TrainConfig.from_dict reports them next to the field instead.
    """
    common = dict(label=i18n.field_label(spec.name, lang), info=help_text(spec, lang),
                  elem_id=elem_id(spec.name), elem_classes=["lg-input"], interactive=True)
    value = to_ui(spec, value)
    if spec.kind is bool:
        return gr.Checkbox(value=bool(value), **common)
    if spec.choices is not None:
        return gr.Dropdown(choices=list(spec.choices), value=value, allow_custom_value=False, **common)
    if spec.kind in (int, float) and spec.optional:
        # gr.Number cannot show "blank" (it shows 0, which means something else): a text box can
        return gr.Textbox(value="" if value is None else _number_text_plain(value),
                          placeholder=i18n.t("form.blank_uses_default", lang), **common)
    if spec.kind in (int, float):
        step = spec.step if spec.step is not None else (1 if spec.kind is int else 0.01)
        return gr.Number(value=value, step=step, **common)
    if spec.widget == "textarea":
        return gr.Textbox(value=value, lines=4, max_lines=20, **common)
    if spec.widget == "path":
        return gr.Textbox(value=value, placeholder=i18n.t("form.path_placeholder", lang), **common)
    return gr.Textbox(value=value, **common)


def relabel(spec: FieldSpec, lang: str) -> dict[str, Any]:
    """The update that shows a component's label and help in another language."""
    update: dict[str, Any] = dict(label=i18n.field_label(spec.name, lang), info=help_text(spec, lang))
    if spec.widget == "path":
        update["placeholder"] = i18n.t("form.path_placeholder", lang)
    elif spec.optional and spec.kind in (int, float):
        update["placeholder"] = i18n.t("form.blank_uses_default", lang)
    return gr.update(**update)
