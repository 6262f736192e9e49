"""Source model tab: quick pick, base model path (with the detected family), save format, VAE, clip skip.

QUICK_PICKS (in lora_gui.family) lists the well-known base models.
"""

from __future__ import annotations

from typing import Any, Optional

import gradio as gr

from lora_gui import engine, i18n
from lora_gui.engine import ModelDetection
from lora_gui.family import QUICK_PICKS, quick_pick_for, v2_flags
from lora_gui.form import SPEC
from lora_gui.page import Page
from lora_gui.panel_view import esc
from lora_gui.tabs import hub_panel
from lora_gui.tabs.common import render_sections, tab_intro

MODEL_FIELD = "pretrained_model_name_or_path"


def quick_pick_choices(lang: str) -> list[tuple[str, str]]:
    return [(i18n.t(f"quick_pick.{key}", lang), key) for key in QUICK_PICKS]


def build(page: Page) -> None:
    tab_intro(page, "intro.source_model")
    with gr.Row(elem_classes=["lg-grid"]):
        with gr.Column(min_width=0, elem_classes=["lg-cell", "lg-span2"]):
            quick = page.text(
                gr.Dropdown(choices=quick_pick_choices(page.lang),
                            value=quick_pick_for(str(page.values.get(MODEL_FIELD) or "")),
                            label=page.t("quick_pick.label"), info=page.t("quick_pick.info"), elem_id="quick-pick"),
                label="quick_pick.label", info="quick_pick.info", choices=quick_pick_choices)
    page.parts["quick_pick"] = quick
    page.extras[MODEL_FIELD] = lambda: hub_panel.build(page)
    # what choosing a model family changed elsewhere in the form (resolution, bucket steps)
    page.parts["family_note"] = gr.HTML("", elem_id="family-note", visible=False)
    render_sections(page, "source_model")


def wire(page: Page) -> None:
    quick = page.parts["quick_pick"]
    outputs = [page.fields[MODEL_FIELD], page.fields["v2"], page.fields["v_parameterization"]]

    def apply_quick_pick(choice: str) -> list[Any]:
        pick = QUICK_PICKS.get(choice)
        if pick is None:  # custom: the user types a path
            return [gr.skip(), gr.skip(), gr.skip()]
        model_id, _family, v2, v_param = pick
        return [model_id, v2, v_param]

    quick.input(apply_quick_pick, [quick], outputs, queue=False)


def flags_for_model(path: str, v2: bool, v_param: bool) -> tuple[Any, Any]:
    """v2 / v-parameterization as the quick-pick table or the model's files say (skip where they do not say)."""
    pick = QUICK_PICKS.get(quick_pick_for(path))
    if pick is not None:
        new_v2, new_v = pick[2], pick[3]
    else:
        detection = engine.detect_model(path or "")
        if detection is None or not detection.ok or not detection.family:
            return gr.skip(), gr.skip()
        new_v2, new_v = v2_flags(detection.family, detection.v_parameterization)
    return (new_v2 if new_v2 != v2 else gr.skip(),
            new_v if (new_v is not None and new_v != v_param) else gr.skip())


def family_note(notes: list[dict[str, Any]], family: str, lang: str) -> str:
    """The line under the quick pick that says which defaults changed with the model family."""
    if not notes:
        return ""
    changed = [n for n in notes if not n["kept"]]
    kept = [n for n in notes if n["kept"]]
    name = i18n.t(f"family.{family}", lang) if i18n.has(f"family.{family}", "en") else family
    parts = []
    if changed:
        items = i18n.t("issue.list_separator", lang).join(
            i18n.t("family_note.item", lang, label=i18n.field_label(n["field"], lang), tab=i18n.t(f"tab.{SPEC[n['field']].tab}", lang),
                   old=n["old"], new=n["new"]) for n in changed)
        parts.append(i18n.t("family_note.changed", lang, family=name, items=items))
    for n in kept:
        parts.append(i18n.t("family_note.kept", lang, family=name, label=i18n.field_label(n["field"], lang),
                            tab=i18n.t(f"tab.{SPEC[n['field']].tab}", lang), value=n["old"], usual=n["new"]))
    sep = "" if lang == "ja" else " "  # Japanese sentences follow each other without a space
    return f'<div class="lg-note lg-family-note" data-family="{esc(family)}">ℹ {sep.join(esc(p) for p in parts)}</div>'


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
