"""Slider LoRA tab: the wizard's form (image folder pairs, base model, prompt, method, settings), its
checks, Start, and the result (preview grid and files).

The run is a job of the server's JobManager, like a training: one job at a time across both, and
the training bar below the tabs shows its progress (the stage, step / total, ETA, loss, log, files)
and stops it. The form becomes a trainer.slider.SliderSpec (lora_gui.slider_form); the engine runs
it as `python -m trainer.slider --spec <output_dir>/<name>.slider.json`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import gradio as gr

from lora_gui import i18n
from lora_gui.engine import detect_model
from lora_gui.jobs import JobManager, JobRefused
from lora_gui.page import Page
from lora_gui.panel_view import esc, render_files
from lora_gui.slider_form import (BASIC, COPY_ONLY, FIXED_RANK, MAX_PAIRS, MERGE, PAIRED, PAIRED_ONLY, PREVIEW,
                                  SPECS, TRAINING, SliderForm, build_spec, command_line, default_value,
                                  pairs_from_rows, spec_to_values)
from lora_gui.tabs.common import tab_intro
from lora_gui.tabs.source_model import detection_note
from trainer.params import FOLDER
from trainer.slider.spec import METHODS, RESIZE_METHODS, SliderIssue

WIDE = ("method", "model", "prompt", "train_args", "preview_prompts")
SPAN2 = ("output_dir",)
SECTIONS = (("training", TRAINING, True), ("merge", MERGE, True), ("paired", PAIRED, False),
            ("preview", PREVIEW, False))


@dataclass
class SliderParts:
    inputs: dict[str, Any] = field(default_factory=dict)  # spec field -> component
    slots: dict[str, gr.HTML] = field(default_factory=dict)  # spec field (and "pairs") -> messages
    names: list[Any] = field(default_factory=list)
    lows: list[Any] = field(default_factory=list)
    highs: list[Any] = field(default_factory=list)
    rows: list[Any] = field(default_factory=list)
    removes: list[Any] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # buttons, notice, result widgets


def _eid(name: str) -> str:
    return f"slider-{name.replace('_', '-')}"


def method_choices(lang: str) -> list[tuple[str, str]]:
    return [(i18n.t(f"slider.method_{m}", lang), m) for m in METHODS]


def resize_choices(lang: str) -> list[tuple[str, str]]:
    return [(i18n.t("tools.fixed_rank", lang), FIXED_RANK)] + [(i18n.t(f"tools.method_{m}", lang), m)
                                                              for m in RESIZE_METHODS]


# ---- layout ------------------------------------------------------------------------------------------------
def build(page: Page) -> SliderParts:
    parts = SliderParts()
    page.parts["slider"] = parts
    tab_intro(page, "intro.slider")
    _pairs(page, parts)
    with gr.Row(elem_classes=["lg-grid"]):
        for name in BASIC:
            _field(page, parts, name)
    for section, names, is_open in SECTIONS:
        title = f"slider.section_{section}"
        with page.text(gr.Accordion(page.t(title), open=is_open, elem_id=_eid(f"section-{section}"),
                                    elem_classes=["lg-section"]), label=title):
            with gr.Row(elem_classes=["lg-grid"]):
                for name in names:
                    _field(page, parts, name)
    parts.slots[""] = gr.HTML("", elem_id="slider-overview")
    with gr.Row(elem_classes=["lg-buttons"], equal_height=True):
        parts.extra["start"] = page.text(gr.Button(page.t("slider.start"), variant="primary", elem_id="slider-start",
                                                   scale=3), value="slider.start")
        parts.extra["show"] = page.text(gr.Button(page.t("slider.show_command"), variant="secondary",
                                                  elem_id="slider-show-command", scale=1), value="slider.show_command")
    parts.extra["notice"] = gr.HTML("", elem_id="slider-notice")
    with page.text(gr.Accordion(page.t("slider.command_box"), open=True, visible=False, elem_id="slider-command-box"),
                   label="slider.command_box") as box:
        parts.extra["cmd"] = page.text(gr.Code("", language="shell", label=page.t("panel.command_line"), lines=1,
                                               elem_id="slider-command-line", interactive=False),
                                       label="panel.command_line")
        parts.extra["spec_json"] = page.text(gr.Code("", language="json", label=page.t("slider.spec_file"),
                                                     elem_id="slider-spec-json", interactive=False, lines=8,
                                                     max_lines=24), label="slider.spec_file")
    parts.extra["cmd_box"] = box
    with gr.Column(visible=False, elem_id="slider-result") as result:
        page.text(gr.Markdown(f"**{page.t('slider.result')}**"),
                  value=lambda lang: f"**{i18n.t('slider.result', lang)}**")
        parts.extra["preview"] = page.text(gr.Image(value=None, label=page.t("slider.preview"), type="filepath",
                                                    interactive=False, elem_id="slider-preview", visible=False,
                                                    show_label=True), label="slider.preview")
        parts.extra["files"] = gr.HTML("", elem_id="slider-files")
    parts.extra["result"] = result
    parts.extra["timer"] = gr.Timer(1.0)
    parts.extra["seen"] = gr.State({})
    parts.extra["count"] = gr.State(1)
    return parts


def _pairs(page: Page, parts: SliderParts) -> None:
    page.text(gr.HTML(_pairs_title(page.lang), elem_classes=["lg-group-head"]), value=_pairs_title)
    for i in range(MAX_PAIRS):
        with gr.Row(visible=i == 0, elem_classes=["lg-pair-row"], elem_id=f"slider-pair-{i}",
                    equal_height=True) as row:
            name = page.text(gr.Textbox(label=page.t("slider.pair_name"), placeholder=f"pair{i + 1}", scale=1,
                                        min_width=120, elem_id=f"slider-pair-{i}-name"), label="slider.pair_name")
            low = page.text(gr.Textbox(label=page.t("slider.pair_low"), placeholder=page.t("form.path_placeholder"),
                                       scale=3, elem_id=f"slider-pair-{i}-low"),
                            label="slider.pair_low", placeholder="form.path_placeholder")
            page.browse_button(low, FOLDER)
            high = page.text(gr.Textbox(label=page.t("slider.pair_high"), placeholder=page.t("form.path_placeholder"),
                                        scale=3, elem_id=f"slider-pair-{i}-high"),
                             label="slider.pair_high", placeholder="form.path_placeholder")
            page.browse_button(high, FOLDER)
            remove = gr.Button("✕", size="sm", scale=0, min_width=40, elem_id=f"slider-pair-{i}-remove",
                               elem_classes=["lg-pair-remove"])
        parts.names.append(name)
        parts.lows.append(low)
        parts.highs.append(high)
        parts.rows.append(row)
        parts.removes.append(remove)
    parts.extra["add"] = page.text(gr.Button(page.t("slider.add_pair"), size="sm", elem_id="slider-add-pair"),
                                   value="slider.add_pair")
    parts.slots["pairs"] = gr.HTML("", elem_classes=["lg-slot"], elem_id="slider-pairs-issues")


def _pairs_title(lang: str) -> str:
    return (f'<div class="lg-group-title">{esc(i18n.t("slider.pairs", lang))}</div>'
            f'<div class="lg-note">{esc(i18n.t("slider.pairs_info", lang))}</div>')


def _field(page: Page, parts: SliderParts, name: str) -> None:
    """One spec field in a grid cell, with its message slot under it (labels: slider_field.* / slider_help.*)."""
    classes = ["lg-cell"] + (["lg-wide"] if name in WIDE else ["lg-span2"] if name in SPAN2 else [])
    with gr.Column(min_width=0, elem_classes=classes, elem_id=_eid(name) + "-cell"):
        def create() -> Any:
            component, props = _component(page, name)
            return page.text(component, **props)
        spec = SPECS.get(name)
        parts.inputs[name] = page.path_box(create, spec.accept) if spec and spec.widget == "path" else create()
        parts.slots[name] = gr.HTML("", elem_classes=["lg-slot"], elem_id=_eid(name) + "-issues")


def _component(page: Page, name: str) -> tuple[Any, dict[str, Any]]:
    label, info = f"slider_field.{name}", f"slider_help.{name}"
    value = default_value(name)
    if name == "model":
        value = str(page.values.get("pretrained_model_name_or_path") or "")  # the training form's model
    method = default_value("method")
    applies = not ((name in COPY_ONLY and method != "copy") or (name in PAIRED_ONLY and method != "paired"))
    common = dict(label=page.t(label), info=page.t(info), elem_id=_eid(name), interactive=applies)
    props: dict[str, Any] = {"label": label, "info": info}
    if name == "method":
        props["choices"] = method_choices
        return gr.Radio(choices=method_choices(page.lang), value=value, **common), props
    if name == "resize_method":
        props["choices"] = resize_choices
        return gr.Dropdown(choices=resize_choices(page.lang), value=value, **common), props
    spec = SPECS[name]
    if spec.choices is not None:
        return gr.Dropdown(choices=list(spec.choices), value=value, **common), props
    if spec.kind is bool:
        return gr.Checkbox(value=bool(value), **common), props
    if spec.kind in (int, float):
        return gr.Number(value=value, step=spec.step or (1 if spec.kind is int else 0.01), **common), props
    if spec.widget == "path":
        props["placeholder"] = "form.path_placeholder"
        return gr.Textbox(value=value, placeholder=page.t("form.path_placeholder"), **common), props
    if name == "preview_prompts":
        return gr.Textbox(value=value, lines=2, max_lines=8, **common), props
    return gr.Textbox(value=value, **common), props


# ---- behaviour ---------------------------------------------------------------------------------------------
def wire(page: Page, manager: JobManager, lang_box: Any, demo: gr.Blocks) -> None:
    parts: SliderParts = page.parts["slider"]
    x = parts.extra
    handlers = SliderHandlers(parts, manager)
    inputs, slot_outputs = handlers.inputs, handlers.slot_outputs
    gr.on([c.change for c in inputs if not isinstance(c, gr.State)] + [lang_box.change, demo.load], handlers.check,
          inputs + [lang_box], slot_outputs, trigger_mode="always_last", show_progress="hidden", concurrency_limit=1,
          concurrency_id="slider-check")
    # the method decides which settings apply (and whether the result is resized by default)
    method, resize, resize_method = parts.inputs["method"], parts.inputs["resize"], parts.inputs["resize_method"]
    method.change(method_states, [method], [parts.inputs[n] for n in COPY_ONLY + PAIRED_ONLY],
                  show_progress="hidden", queue=False)
    method.input(lambda m: m == "copy", [method], [resize], show_progress="hidden", queue=False)
    gr.on([resize.change, resize_method.change], resize_states, [resize, resize_method],
          [parts.inputs[n] for n in ("resize_method", "resize_param", "resize_rank")], show_progress="hidden",
          queue=False)
    _wire_pairs(parts)
    x["start"].click(handlers.start, inputs + [lang_box], slot_outputs + [x["notice"]], concurrency_limit=1,
                     concurrency_id="job-control", show_progress="hidden")
    x["show"].click(handlers.show_command, inputs + [lang_box],
                    slot_outputs + [x["cmd_box"], x["cmd"], x["spec_json"], x["notice"]], show_progress="hidden")
    demo.load(handlers.on_load, None, handlers.inputs + parts.rows, show_progress="hidden")
    x["timer"].tick(handlers.refresh_result, [x["seen"], lang_box], [x["seen"], x["preview"], x["files"], x["result"]],
                    show_progress="hidden", queue=False)


def method_states(method: str) -> list[Any]:
    """Copy-only settings apply to the copy method, paired-only ones to the paired method."""
    return ([gr.update(interactive=method == "copy") for _ in COPY_ONLY]
            + [gr.update(interactive=method == "paired") for _ in PAIRED_ONLY])


def resize_states(on: bool, how: str) -> list[Any]:
    """resize_method, resize_param, resize_rank apply when resizing; the parameter only with a dynamic method."""
    return [gr.update(interactive=bool(on)), gr.update(interactive=bool(on) and how != FIXED_RANK),
            gr.update(interactive=bool(on))]


class SliderHandlers:
    """The slider tab's event handlers. Each takes the form's values in the order of `inputs`: the spec
    fields, the pair names, lows and highs, the pair count (and the page language last)."""

    def __init__(self, parts: SliderParts, manager: JobManager):
        self.parts, self.manager = parts, manager
        self.field_names = list(parts.inputs)
        self.inputs = ([parts.inputs[n] for n in self.field_names] + parts.names + parts.lows + parts.highs
                       + [parts.extra["count"]])
        self.slot_keys = list(parts.slots)
        self.slot_outputs = [parts.slots[k] for k in self.slot_keys]
        self.untouched = [getattr(c, "value", None) for c in self.inputs]  # the form as the page opens with it

    def read(self, values: tuple) -> SliderForm:
        n = len(self.field_names)
        by_name = dict(zip(self.field_names, values[:n]))
        names, lows, highs = (list(values[n + i * MAX_PAIRS:n + (i + 1) * MAX_PAIRS]) for i in range(3))
        count = int(values[n + 3 * MAX_PAIRS] or 1)
        return build_spec(by_name, pairs_from_rows(names, lows, highs, count))

    def slot_values(self, form: SliderForm, values: tuple, lang: str) -> list[str]:
        """The messages under each field (the detected family under the model) and the overview."""
        model_path = str(values[self.field_names.index("model")] or "")
        grouped = form.by_field()
        out = []
        for key in self.slot_keys:
            issues = grouped.get(key, [])
            if key == "model" and not any(i.level == "error" for i in issues):
                out.append(render_issues(issues, lang) + detection_note(detect_model(model_path), lang))
            elif key == "":
                out.append(render_overview(form, lang))
            else:
                out.append(render_issues(issues, lang))
        return out

    def check(self, *args: Any) -> list[str]:
        *values, lang = args
        if list(values) == self.untouched:
            # nobody has filled anything in yet: nothing to complain about (Start checks); the model
            # the tab starts with still shows its detected family
            model_path = str(values[self.field_names.index("model")] or "")
            return [detection_note(detect_model(model_path), lang) if key == "model" else "" for key in self.slot_keys]
        return self.slot_values(self.read(tuple(values)), tuple(values), lang)

    def start(self, *args: Any) -> list[Any]:
        *values, lang = args
        form = self.read(tuple(values))
        slots = self.slot_values(form, tuple(values), lang)
        running = self.manager.refresh(force=True)
        if running.active:
            return slots + [notice(i18n.t("job.refused_running", lang, name=running.output_name), "error")]
        if not form.ok:
            return slots + [notice(i18n.t("start.refused_invalid", lang, count=len(form.errors) or 1), "error")]
        assert form.spec is not None
        try:
            self.manager.start_slider(form.spec)
        except JobRefused as exc:
            return slots + [notice(i18n.t(exc.key, lang, **exc.params), "error")]
        return slots + [notice(i18n.t("slider.started", lang, path=form.spec.output_dir), "ok")]

    def show_command(self, *args: Any) -> list[Any]:
        *values, lang = args
        form = self.read(tuple(values))
        slots = self.slot_values(form, tuple(values), lang)
        if form.spec is None:
            return slots + [gr.skip(), gr.skip(), gr.skip(), notice(i18n.t("print.invalid", lang), "error")]
        command = " ".join(_quote(a) for a in command_line(form.spec.files().spec_json))
        return slots + [gr.update(visible=True), command, form.spec.to_json(),
                        notice(i18n.t("slider.command_shown", lang), "ok")]

    def refresh_result(self, seen: dict, lang: str) -> list[Any]:
        """The slider job's preview grid and files (the training bar shows its progress)."""
        state = self.manager.refresh()
        with self.manager.lock:
            if state.kind != "slider" or not state.job_id:
                return [seen, gr.skip(), gr.skip(), gr.skip()]
            key = f"{state.job_id}:{lang}"
            version = (state.versions["samples"], state.versions["files"], state.versions["status"])
            if seen.get("key") == key and tuple(seen.get("version") or ()) == version:
                return [seen, gr.skip(), gr.skip(), gr.skip()]
            preview = preview_path(state)
            files = render_files(state, lang)
            if preview:
                files += (f'<div class="lg-files-folder" data-preview="{esc(preview)}">'
                          f'{esc(i18n.t("slider.preview_file", lang, path=preview))}</div>')
        return [{"key": key, "version": list(version)},
                gr.update(value=preview, visible=preview is not None), files, gr.update(visible=True)]

    def on_load(self) -> list[Any]:
        """A reloaded page shows the slider run that is going on (the run belongs to the server)."""
        spec = self.manager.current_slider()
        if spec is None:
            return [gr.skip()] * (len(self.inputs) + MAX_PAIRS)
        values = spec_to_values(spec)
        pairs = list(spec.pairs)[:MAX_PAIRS]
        column = [[p.name for p in pairs], [p.low for p in pairs], [p.high for p in pairs]]
        texts = [c + [""] * (MAX_PAIRS - len(c)) for c in column]
        count = max(1, len(pairs))
        return ([values[n] for n in self.field_names] + texts[0] + texts[1] + texts[2] + [count]
                + [gr.update(visible=i < count) for i in range(MAX_PAIRS)])


def _wire_pairs(parts: SliderParts) -> None:
    x = parts.extra
    texts = parts.names + parts.lows + parts.highs

    def rows(count: int) -> list[Any]:
        return [gr.update(visible=i < count) for i in range(MAX_PAIRS)]

    def add(count: int) -> list[Any]:
        count = min(MAX_PAIRS, int(count or 1) + 1)
        return [count] + rows(count)

    x["add"].click(add, [x["count"]], [x["count"]] + parts.rows, show_progress="hidden", queue=False)

    def remove(index: int):
        def handler(count: int, *values: str) -> list[Any]:
            count = int(count or 1)
            names, lows, highs = (list(values[i * MAX_PAIRS:(i + 1) * MAX_PAIRS]) for i in range(3))
            for column in (names, lows, highs):  # the rows below move up one
                del column[index]
                column.append("")
            count = max(1, count - 1) if index < count else count
            return [count] + names + lows + highs + rows(count)

        return handler

    for i, button in enumerate(parts.removes):
        button.click(remove(i), [x["count"]] + texts, [x["count"]] + texts + parts.rows, show_progress="hidden",
                     queue=False)


# ---- rendering ---------------------------------------------------------------------------------------------
def issue_text(issue: SliderIssue, lang: str) -> tuple[str, str]:
    """The issue in the page's language where the catalog has a text for its code without values; the
    engine's English otherwise (its messages carry the folder names and counts inside the text)."""
    key = f"slider_issue.{issue.code}"
    if i18n.has(key, "en") and not i18n.placeholders(i18n.t(key, "en")):
        return i18n.t(key, lang), i18n.t(key + "_hint", lang) if i18n.has(key + "_hint", "en") else (issue.hint or "")
    return issue.message, issue.hint or ""


def render_issues(issues: list[SliderIssue], lang: str) -> str:
    out = []
    for issue in issues:
        message, hint = issue_text(issue, lang)
        icon = "✖" if issue.level == "error" else "⚠"
        hint_html = f'<div class="lg-issue-hint">{esc(hint)}</div>' if hint else ""
        out.append(f'<div class="lg-issue lg-issue-{esc(issue.level)}" data-code="{esc(issue.code)}">{icon} '
                   f'{esc(message)}{hint_html}</div>')
    return "".join(out)


def render_overview(form: SliderForm, lang: str) -> str:
    errors = len(form.errors)
    warnings = len(form.issues) - errors
    if not errors and not warnings:
        return ""
    general = form.by_field().get("", [])
    text = i18n.t("issues.summary", lang, errors=errors, warnings=warnings)
    return (f'<div class="lg-overview {"has-errors" if errors else ""}" data-errors="{errors}">'
            f'<b>{esc(text)}</b>{render_issues(general, lang)}</div>')


def preview_path(state: Any) -> Optional[str]:
    """The preview grid of the slider job (its `sample` event), once the file exists."""
    for sample in reversed(state.samples):
        if sample.path.endswith("-preview.png") and Path(sample.path).is_file():
            return sample.path
    return None


def notice(text: str, level: str) -> str:
    icon = {"ok": "✔", "warning": "⚠", "error": "✖"}[level]
    return f'<div class="lg-notice lg-notice-{level}">{icon} {esc(text)}</div>'


def _quote(arg: str) -> str:
    if arg and all(c.isalnum() or c in "-_./:=\\" for c in arg):
        return arg
    return '"' + arg.replace('"', '\\"') + '"'
