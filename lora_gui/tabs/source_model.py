"""Source model tab: quick pick, base model path (with the detected family), save format, VAE, clip skip."""

from __future__ import annotations

from typing import Any, Optional

import gradio as gr

from lora_gui import i18n
from lora_gui.engine import ModelDetection
from lora_gui.page import Page
from lora_gui.panel_view import esc
from lora_gui.tabs.common import render_sections, tab_intro

MODEL_FIELD = "pretrained_model_name_or_path"

# quick pick -> (model id, v2, v_parameterization); "custom" leaves everything as it is
QUICK_PICKS: dict[str, Optional[tuple[str, bool, bool]]] = {
    "custom": None,
    "sd15": ("stable-diffusion-v1-5/stable-diffusion-v1-5", False, False),
    "sd21_512": ("stabilityai/stable-diffusion-2-1-base", True, False),
    "sd21_768v": ("stabilityai/stable-diffusion-2-1", True, True),
}


def quick_pick_choices(lang: str) -> list[tuple[str, str]]:
    return [(i18n.t(f"quick_pick.{key}", lang), key) for key in QUICK_PICKS]


def build(page: Page) -> None:
    tab_intro(page, "intro.source_model")
    with gr.Row(elem_classes=["lg-grid"]):
        with gr.Column(min_width=0, elem_classes=["lg-cell"]):
            quick = page.text(
                gr.Dropdown(choices=quick_pick_choices(page.lang), value="custom", label=page.t("quick_pick.label"),
                            info=page.t("quick_pick.info"), elem_id="quick-pick"),
                label="quick_pick.label", info="quick_pick.info", choices=quick_pick_choices)
    page.parts["quick_pick"] = quick
    render_sections(page, "source_model")


def wire(page: Page) -> None:
    quick = page.parts["quick_pick"]
    outputs = [page.fields[MODEL_FIELD], page.fields["v2"], page.fields["v_parameterization"]]

    def apply_quick_pick(choice: str) -> list[Any]:
        pick = QUICK_PICKS.get(choice)
        if pick is None:  # custom: the user types a path
            return [gr.skip(), gr.skip(), gr.skip()]
        model_id, v2, v_param = pick
        return [model_id, v2, v_param]

    quick.input(apply_quick_pick, [quick], outputs, queue=False)
    # typing a path of one's own is "custom"
    page.fields[MODEL_FIELD].input(lambda: "custom", None, [quick], queue=False, show_progress="hidden")


def flags_from_detection(detection: Optional[ModelDetection], v2: bool, v_param: bool) -> tuple[Any, Any]:
    """v2 / v-parameterization as the model's files say (skip where they do not say)."""
    if detection is None or not detection.ok or not detection.family:
        return gr.skip(), gr.skip()
    if detection.family not in ("sd1", "sd2"):  # the switches are for SD 1.x / 2.x only
        return gr.skip(), gr.skip()
    new_v2 = detection.family == "sd2"
    new_v = detection.v_parameterization if detection.v_parameterization is not None else None
    return (new_v2 if new_v2 != v2 else gr.skip(),
            new_v if (new_v is not None and new_v != v_param) else gr.skip())


def detection_note(detection: Optional[ModelDetection], lang: str) -> str:
    """A line under the model path: the detected family, or why the path is not usable."""
    if detection is None:
        return ""
    if not detection.ok:
        hint = f'<div class="lg-issue-hint">{esc(detection.hint)}</div>' if detection.hint else ""
        return f'<div class="lg-issue lg-issue-error" data-code="model_path">✖ {esc(detection.message)}{hint}</div>'
    if not detection.family:
        family = i18n.t("family.unknown", lang)
    elif i18n.has(f"family.{detection.family}", "en"):
        family = i18n.t(f"family.{detection.family}", lang)
    else:  # a family this page has no name for yet
        family = detection.family
    if detection.v_parameterization:
        family += " · " + i18n.t("family.v_pred", lang)
    kind = i18n.t(f"model_kind.{detection.kind}", lang) if detection.kind else ""
    text = i18n.t("detect.found", lang, family=family, kind=kind)
    return f'<div class="lg-note lg-detected" data-family="{esc(detection.family)}">✔ {esc(text)}</div>'
