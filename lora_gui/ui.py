"""The page: header, configuration bar, the five tabs, the training panel, and the shared events."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import gradio as gr

from lora_gui import form_store, i18n, presets, rules
from lora_gui.checks import FormCheck, check_form, render_overview, slot_updates
from lora_gui.dataset_view import render_summary
from lora_gui.engine import detect_model, engine_available
from lora_gui.family import FAMILY_FIELDS, defaults_for_family, field_shown, model_family, quick_pick_for
from lora_gui.form import FIELDS, config_to_values, values_to_dict
from lora_gui.jobs import JobManager
from lora_gui.page import Page
from lora_gui.panel_view import esc
from lora_gui.paths import MODEL_FIELD
from lora_gui.tabs import (advanced, config_bar, folders, hub_panel, parameters, picker, samples, slider, source_model,
                           training_panel, utilities)
from lora_gui.tools_runner import ToolRunner
from trainer.config import TABS, TrainConfig

CSS_PATH = Path(__file__).resolve().parent / "style.css"
JS_PATH = Path(__file__).resolve().parent / "page.js"  # run once when the page loads (launch(js=...))
TAB_BUILDERS = {"source_model": source_model.build, "folders": folders.build, "parameters": parameters.build,
                "advanced": advanced.build, "samples": samples.build}
# after the training tabs (kohya order): the slider wizard, then the LoRA toolbox
EXTRA_TABS = {"slider": slider.build, "utilities": utilities.build}


def build_app(*, initial: TrainConfig, initial_preset: str, manager: JobManager, lang: str = "en",
              follow_browser: bool = True, remote_warning: str = "", tools: Optional[ToolRunner] = None) -> gr.Blocks:
    """Build the Blocks. `initial` fills the form; with `follow_browser` the page switches to the
    browser's language (Accept-Language, or ?lang=ja in the address) when it opens. `tools` runs the
    Utilities tab's tools (one at a time, server-wide)."""
    tools = tools if tools is not None else ToolRunner()
    page = Page(lang=lang, values={s.name: getattr(initial, s.name) for s in FIELDS},
                family=model_family(initial.pretrained_model_name_or_path))
    with gr.Blocks(title="LoRA GUI", analytics_enabled=False, fill_width=True) as demo:
        lang_box = _header(page, remote_warning)
        config_bar.build(page, initial_preset)
        with gr.Tabs(elem_id="main-tabs"):
            for tab in TABS:
                with page.text(gr.Tab(page.t(f"tab.{tab}"), id=tab, elem_id=f"tab-{tab}"), label=f"tab.{tab}"):
                    TAB_BUILDERS[tab](page)
            for tab, build_tab in EXTRA_TABS.items():
                with page.text(gr.Tab(page.t(f"tab.{tab}"), id=tab, elem_id=f"tab-{tab}"), label=f"tab.{tab}"):
                    build_tab(page)
        training_panel.build(page)
        picker.build(page)  # one dialog for every path field's Browse button
        _wire(demo, page, manager, lang_box, follow_browser)
        picker.wire(page, lang_box)
        slider.wire(page, manager, lang_box, demo)
        utilities.wire(page, tools, lang_box)
    manager.add_start_hook(lambda folder: _allow_path(demo, folder))
    return demo


def _header(page: Page, remote_warning: str) -> gr.Dropdown:
    with gr.Row(elem_classes=["lg-header"], equal_height=True):
        with gr.Column(scale=5, min_width=0):
            page.text(gr.HTML(_title_html(page.lang), elem_id="app-title"), value=_title_html)
        with gr.Column(scale=1, min_width=160):
            lang_box = page.text(gr.Dropdown(choices=[(v, k) for k, v in i18n.LANGUAGES.items()], value=page.lang,
                                             label=page.t("lang.label"), elem_id="language-select"),
                                 label="lang.label")
    if remote_warning:
        page.text(gr.HTML(_remote_html(page.lang, remote_warning), elem_id="remote-warning"),
                  value=lambda lang: _remote_html(lang, remote_warning))
    return lang_box


def _title_html(lang: str) -> str:
    return (f'<div class="lg-title"><h1>{esc(i18n.t("app.title", lang))}</h1>'
            f'<p>{esc(i18n.t("app.subtitle", lang))}</p>'
            f'<ol class="lg-steps-guide"><li>{esc(i18n.t("app.step1", lang))}</li>'
            f'<li>{esc(i18n.t("app.step2", lang))}</li><li>{esc(i18n.t("app.step3", lang))}</li>'
            f'<li>{esc(i18n.t("app.step4", lang))}</li></ol></div>')


def _remote_html(lang: str, address: str) -> str:
    return f'<div class="lg-remote-warning">⚠ {esc(i18n.t("app.remote_warning", lang, address=address))}</div>'


def _allow_path(demo: gr.Blocks, folder: Path) -> None:
    """Let the gallery serve sample images from a job's output folder."""
    allowed = list(getattr(demo, "allowed_paths", None) or [])
    if str(folder) not in allowed:
        allowed.append(str(folder))
        demo.allowed_paths = allowed


# ---- the form's events ------------------------------------------------------------------------
def _wire(demo: gr.Blocks, page: Page, manager: JobManager, lang_box: gr.Dropdown, follow_browser: bool) -> None:
    """The form's checks, the model's family, the tabs' own events, the language switch and the page load."""
    form = FormHandlers(page, manager, lang_box, follow_browser)
    _wire_form_check(form)
    family_state = _wire_model(page, lang_box)
    source_model.wire(page)
    hub_panel.wire(page, lang_box, (form.refresh_form, form.refresh_inputs, form.refresh_outputs))
    folders.wire(page, lang_box)
    config_bar.wire(page, lang_box)
    training_panel.wire(page, manager, lang_box, form.check_outputs, form.run_check)
    _wire_language(form, family_state)
    _wire_load(demo, form, family_state)


def _wire_form_check(form: FormHandlers) -> None:
    # every change is copied into the browser ("multiple": a change while an earlier copy is pending is
    # not dropped); a busy browser may make the copy a moment after the change
    changes = [c.change for c in form.fields]
    gr.on(changes, None, form.fields, [form.stored_form], js=form_store.save_js(), queue=False,
          show_progress="hidden", trigger_mode="multiple")
    gr.on(changes, form.refresh_form, form.refresh_inputs, form.refresh_outputs, trigger_mode="always_last",
          show_progress="hidden", concurrency_limit=1, concurrency_id="form-check")


def _wire_model(page: Page, lang_box: gr.Dropdown) -> gr.State:
    """Model path -> v2 / v-parameterization, the quick pick, and the family's usual resolution and bucket
    steps. Returns the family state (the known family, what its defaults changed, the note)."""
    family_state = gr.State(_family_state(page.family))
    f = page.fields
    flags = [f["v2"], f["v_parameterization"], f["resolution"], f["bucket_reso_steps"]]
    f["pretrained_model_name_or_path"].change(
        on_model, [f["pretrained_model_name_or_path"]] + flags + [family_state, lang_box],
        flags + [page.parts["quick_pick"], family_state, page.parts["family_note"]],
        show_progress="hidden", trigger_mode="always_last")
    return family_state


def _wire_language(form: FormHandlers, family_state: gr.State) -> None:
    """Language: relabel everything, then re-check (messages) and redraw the family note."""
    page, lang_box = form.page, form.lang_box
    form.text_items = list(page.texts)
    relabelled = form.fields + [c for c, _ in form.text_items] + [page.parts["seen"]]
    lang_box.change(form.switch_language, [lang_box], relabelled, show_progress="hidden").then(
        form.refresh_form, form.refresh_inputs, form.refresh_outputs, show_progress="hidden").then(
        render_family_note, [family_state, lang_box], [page.parts["family_note"]], show_progress="hidden")


def _wire_load(demo: gr.Blocks, form: FormHandlers, family_state: gr.State) -> None:
    outputs = [form.lang_box, form.page.parts["preset_dropdown"], family_state] + form.fields
    demo.load(form.on_load, [form.stored_form], outputs, show_progress="hidden").then(
        form.refresh_form, form.refresh_inputs, form.refresh_outputs, show_progress="hidden")


class FormHandlers:
    """The form's event handlers. refresh_form takes the form's values (page.ordered_fields order), the page
    language and the sections seen; the others say what they take."""

    def __init__(self, page: Page, manager: JobManager, lang_box: gr.Dropdown, follow_browser: bool):
        self.page, self.manager, self.lang_box, self.follow_browser = page, manager, lang_box, follow_browser
        self.fields = page.ordered_fields()
        self.sections = list(page.sections.items())  # key -> (accordion, tab, section, field names)
        self.sections_seen = gr.State([])  # sections that held a finding at the last check (opened once)
        self.stored_form = form_store.make_store()
        self.check_outputs = page.ordered_slots() + [page.parts["overview"]]
        dependent = [page.fields[name] for name in rules.dependent_fields()]
        family_cells = [page.cells[name] for name in FAMILY_FIELDS]
        accordions = [acc for _, (acc, *_rest) in self.sections]
        self.refresh_inputs = self.fields + [lang_box, self.sections_seen]
        self.refresh_outputs = (dependent + family_cells + accordions + self.check_outputs
                                + [page.parts["dataset"], page.parts["free_name"], self.sections_seen])
        self.text_items: list[Any] = []  # the page's translatable texts, taken when the language switch is wired

    def run_check(self, values: tuple, lang: str, with_summary: bool = False) -> tuple[FormCheck, list[Any]]:
        check = check_form(values, lang, with_summary=with_summary)
        notes = _notes(values, check, lang)
        return check, slot_updates(check, notes) + [render_overview(check, lang)]

    def refresh_form(self, *args: Any) -> list[Any]:
        """Field states, family cells, section titles, messages, the dataset summary and the free-name button."""
        values, lang, seen = args[:-2], args[-2], args[-1]
        check, check_updates = self.run_check(values, lang, with_summary=True)
        lenient = _lenient_values(values)
        family = model_family(str(lenient.get("pretrained_model_name_or_path") or ""))
        dep_updates = _dependent_updates(rules.field_states(dict(lenient, _family=family)))
        cell_updates = [gr.update(visible=field_shown(name, family)) for name in FAMILY_FIELDS]
        section_updates, seen = _section_updates(self.sections, check, lenient, family, lang, seen or [])
        summary_html = render_summary(check.summary, lang, engine_ready=engine_available())
        return (dep_updates + cell_updates + section_updates + check_updates
                + [summary_html, gr.update(visible="output_exists" in check.codes()), seen])

    def switch_language(self, lang: str) -> list[Any]:
        lang = i18n.normalize(lang)
        return Page.field_label_updates(lang) + Page.text_updates(self.text_items, lang) + [{}]

    def on_load(self, stored: Any, request: gr.Request) -> list[Any]:
        """The page's language, the preset list, and the form: a running training's settings win; else what
        this browser's form held before the reload."""
        lang = _request_language(request, self.page.lang if not self.follow_browser else None)
        running = self.manager.current_config()
        choices = gr.update(choices=presets.list_presets())
        if running is not None:
            values, model_path = config_to_values(running), running.pretrained_model_name_or_path
        elif form_store.has_values(stored):
            values, model_path = form_store.restored_values(stored), str(stored.get(MODEL_FIELD) or "")
        else:
            return [lang, choices, gr.skip()] + [gr.skip()] * len(FIELDS)
        # the model's family is the known one: loading must not switch the family's defaults
        return [lang, choices, _family_state(model_family(model_path))] + values


def on_model(path: str, v2: bool, v_param: bool, resolution: str, steps: Any, state: dict, lang: str) -> list[Any]:
    path = path or ""
    new_v2, new_v = source_model.flags_for_model(path, v2, v_param)
    family = model_family(path)
    state = dict(state or {})
    last = state.get("family", "")
    changes, auto, notes = defaults_for_family(last, family, {"resolution": resolution, "bucket_reso_steps": steps},
                                               state.get("auto", {}))
    note_update: Any = gr.skip()
    if family and family != last:  # a new known family: the note tells what (if anything) it changed
        state.update(family=family, auto=auto, notes=notes, note_family=family)
        html = source_model.family_note(notes, family, lang)
        note_update = gr.update(value=html, visible=bool(html))
    return [new_v2, new_v, changes.get("resolution", gr.skip()), changes.get("bucket_reso_steps", gr.skip()),
            quick_pick_for(path), state, note_update]


def render_family_note(state: dict, lang: str) -> Any:
    state = state or {}
    html = source_model.family_note(state.get("notes", []), state.get("note_family", ""), lang)
    return gr.update(value=html, visible=bool(html))


def _family_state(family: str) -> dict[str, Any]:
    """The family state a page starts with: the known family, no defaults changed by it, no note."""
    return {"family": family, "auto": {}, "notes": [], "note_family": ""}


def _dependent_updates(states: dict[str, tuple[bool, Any]]) -> list[Any]:
    """rules.dependent_fields in order: enabled or not, and the value a disabled field is reset to."""
    updates = []
    for name in rules.dependent_fields():
        enabled, new_value = states[name]
        update: dict[str, Any] = {"interactive": enabled}
        if new_value is not None:
            update["value"] = new_value
        updates.append(gr.update(**update))
    return updates


def _section_updates(sections: list, check: FormCheck, values: dict[str, Any], family: str, lang: str,
                     seen: list[str]) -> tuple[list[Any], list[str]]:
    """Accordion titles with how many settings inside differ from the defaults; an accordion opens
    when a finding appears in it (once: the user may close it again)."""
    defaults = TrainConfig()
    effective = check.config.to_dict() if check.config is not None else values
    with_issues = {i.field for i in check.issues}
    updates, now_seen = [], []
    for key, (_acc, tab, section, names) in sections:
        shown = [n for n in names if field_shown(n, family)]
        changed = sum(1 for n in shown if n in effective and not _same_value(effective[n], getattr(defaults, n)))
        title = i18n.section_title(tab, section, lang)
        label = i18n.t("section.changed", lang, title=title, count=changed) if changed else title
        update: dict[str, Any] = {"label": label}
        if any(n in with_issues for n in shown):
            now_seen.append(key)
            if key not in seen:
                update["open"] = True
        updates.append(gr.update(**update))
    return updates, now_seen


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def _request_language(request: Optional[gr.Request], fixed: Optional[str] = None) -> str:
    """?lang=ja in the address wins; then a language fixed on the command line; then Accept-Language."""
    query = dict(getattr(request, "query_params", {}) or {}) if request is not None else {}
    if query.get("lang"):
        return i18n.normalize(query["lang"])
    if fixed:
        return fixed
    headers = getattr(request, "headers", {}) or {} if request is not None else {}
    return i18n.pick_language(headers.get("accept-language", ""))


def _lenient_values(values: tuple) -> dict[str, Any]:
    try:
        return values_to_dict(values)
    except ValueError:
        return {}


def _notes(values: tuple, check: FormCheck, lang: str) -> dict[str, str]:
    """Extra lines under fields that are not findings: the detected model family, why a field was reset."""
    data = values_to_dict(values)
    notes = rules.disabled_notes(data, lang)
    detection = detect_model(str(data.get("pretrained_model_name_or_path") or ""))
    if detection is None:
        return notes
    model_has_issue = any(i.field == "pretrained_model_name_or_path" and i.level == "error" for i in check.issues)
    if not detection.ok and model_has_issue:
        return notes
    return {**notes, "pretrained_model_name_or_path": source_model.detection_note(detection, lang)}

