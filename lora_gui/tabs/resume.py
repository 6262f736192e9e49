"""Resume as an action: the state folders of the output folder, listed under the `resume` field; "Resume"
loads the settings of the state's run (its `<name>.json`) with `resume` set to the state, and starts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from lora_gui import engine, i18n
from lora_gui.form import config_to_values
from lora_gui.page import Page
from lora_gui.panel_view import esc
from trainer.config import ConfigError, TrainConfig


def build_widgets(page: Page) -> None:
    """Under the resume field (page.extras)."""
    with gr.Row(equal_height=True):
        find = page.text(gr.Button(page.t("resume.find"), size="sm", elem_id="find-states"), value="resume.find")
        choice = page.text(gr.Dropdown(choices=[], value=None, label=page.t("resume.states"), elem_id="resume-states",
                                       allow_custom_value=False, scale=3), label="resume.states")
        go = page.text(gr.Button(page.t("resume.button"), variant="primary", size="sm", elem_id="resume-button"),
                       value="resume.button")
    note = gr.HTML("", elem_id="resume-note")
    page.parts["resume"] = dict(find=find, choice=choice, go=go, note=note)


def state_label(state: Any, lang: str) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(state.modified))
    return i18n.t(f"resume.kind_{state.kind}", lang, name=state.run_name, step=state.step, when=when)


def wire(page: Page, lang_box: Any, start: Callable[..., list[Any]], start_outputs: list[Any]) -> None:
    """`start(*form values, lang)` is the training panel's Start; it runs after the form is filled."""
    p, fields = page.parts["resume"], page.ordered_fields()

    def find(output_dir: str, lang: str) -> list[Any]:
        states = engine.resumable_states(output_dir or "")
        if not states:
            return [gr.update(choices=[], value=None),
                    f'<div class="lg-note">{esc(i18n.t("resume.none", lang, folder=output_dir))}</div>']
        choices = [(state_label(s, lang), str(s.path)) for s in states]
        return [gr.update(choices=choices, value=choices[0][1]), ""]

    def load(state_path: str, lang: str) -> list[Any]:
        if not state_path:
            raise gr.Error(i18n.t("resume.pick_first", lang))
        state = next((s for s in engine.resumable_states(str(Path(state_path).parent)) if str(s.path) == state_path),
                     None)
        if state is None:
            raise gr.Error(i18n.t("resume.gone", lang, path=state_path))
        try:
            cfg = TrainConfig.load(state.run_config)
        except (OSError, ValueError, ConfigError) as exc:
            raise gr.Error(i18n.t("resume.no_config", lang, path=str(state.run_config), error=str(exc))) from None
        cfg = cfg.replace(resume=str(state.path), output_dir=str(state.path.parent))
        note = f'<div class="lg-note ok">✔ {esc(i18n.t("resume.loaded", lang, name=state.run_name, step=state.step))}</div>'
        return config_to_values(cfg) + [note]

    p["find"].click(find, [page.fields["output_dir"], lang_box], [p["choice"], p["note"]], show_progress="hidden")
    p["go"].click(load, [p["choice"], lang_box], fields + [p["note"]], show_progress="hidden").success(
        start, fields + [lang_box], start_outputs, concurrency_limit=1, concurrency_id="job-control",
        show_progress="hidden")
