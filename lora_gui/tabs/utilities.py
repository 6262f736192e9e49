"""Utilities tab: the LoRA toolbox (inspect, merge, SVD merge, resize, extract) in sub-tabs.

Each sub-tab is a small form; Run checks it (lora_gui.tool_args: problems appear under their field),
then runs `python -m trainer.tools ...` through the server's ToolRunner and shows the progress, the
summary and the per-module report (lora_gui.tool_view). One tool run at a time, server-wide.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import gradio as gr

from lora_gui import i18n, sysinfo, tool_args
from lora_gui.page import Page
from lora_gui.tabs.common import tab_intro
from lora_gui.tool_args import DYNAMIC_METHODS, FIXED_RANK, MAX_MODELS, OPTION_SPECS, TOOLS
from lora_gui.tool_view import (model_note, problem_html, render_busy, render_message, render_problems,
                                render_result, render_running)
from lora_gui.tools_runner import ToolBusy, ToolRunner

POLL_SEC = 0.4
MODEL_FIELDS = ("sd_model", "model_org", "model_tuned")  # base models: the detected family shows under them


@dataclass
class ToolForm:
    tool: str
    inputs: dict[str, Any] = field(default_factory=dict)  # form key -> component
    slots: dict[str, gr.HTML] = field(default_factory=dict)  # form key -> messages under it
    cells: dict[str, gr.Column] = field(default_factory=dict)
    run: Any = None
    result: Any = None


def _id(tool: str, key: str) -> str:
    return f"tool-{tool}-{key.replace('.', '-').replace('_', '-')}"


class _Builder:
    """Places one form's inputs, each in a grid cell with its message slot under it."""

    def __init__(self, page: Page, form: ToolForm):
        self.page, self.form = page, form

    def add(self, key: str, make: Callable[..., Any], label: str, info: str = "", *, wide: bool = False,
            visible: bool = True, choices_in: Optional[Callable[[str], list]] = None,
            accept: Optional[tuple] = None, **kwargs: Any) -> Any:
        """`choices_in(lang)`: choices that are relabelled with the language; `accept`: a path box with a
        Browse button (what its picker offers)."""
        page, tool = self.page, self.form.tool
        props: dict[str, Any] = {"label": label}
        if info:
            props["info"] = info
        if "placeholder" in kwargs:
            props["placeholder"] = "form.path_placeholder"
        if choices_in is not None:
            props["choices"] = choices_in
            kwargs["choices"] = choices_in(page.lang)
        with gr.Column(min_width=0, elem_classes=["lg-cell"] + (["lg-wide"] if wide else []), visible=visible,
                       elem_id=_id(tool, key) + "-cell") as cell:
            def create() -> Any:
                return page.text(make(label=page.t(label), info=page.t(info) if info else None,
                                      elem_id=_id(tool, key), **kwargs), **props)
            comp = create() if accept is None else page.path_box(create, accept)
            slot = gr.HTML("", elem_classes=["lg-slot"], elem_id=_id(tool, key) + "-issues")
        self.form.inputs[key], self.form.slots[key], self.form.cells[key] = comp, slot, cell
        return comp

    def option(self, key: str, label: str, info: str = "", **kwargs: Any) -> Any:
        """The tool option `key` (trainer.tools.options): its kind picks the component, its start value,
        step and choices come from its declaration. Optional numbers are text boxes (blank = None)."""
        spec = OPTION_SPECS[self.form.tool][key]
        value = kwargs.pop("value", spec.default)
        if spec.kind is bool:
            return self.add(key, gr.Checkbox, label, info, value=bool(value), **kwargs)
        if spec.choices is not None and "choices_in" not in kwargs:
            kwargs["choices"] = list(spec.choices)
        if spec.choices is not None:
            return self.add(key, gr.Dropdown, label, info, value=value, **kwargs)
        if spec.widget == "path":
            return self.path(key, label, info, accept=spec.accept, **kwargs)
        if spec.kind in (int, float) and not spec.optional:
            return self.add(key, gr.Number, label, info, value=value, step=spec.step or 0.01, **kwargs)
        return self.add(key, gr.Textbox, label, info, value="" if value is None else str(value), **kwargs)

    def path(self, key: str, label: str, info: str, **kwargs: Any) -> Any:
        return self.add(key, gr.Textbox, label, info, wide=True, placeholder=self.page.t("form.path_placeholder"),
                        **kwargs)

    def model_rows(self) -> None:
        """Up to MAX_MODELS rows of LoRA file + ratio (as kohya's GUI): empty rows are skipped."""
        for i in range(MAX_MODELS):
            with gr.Row(elem_classes=["lg-grid", "lg-model-row"]):
                self.add(f"models.{i}", gr.Textbox, "tools.model_n" if i else "tools.model_first", "", wide=False,
                         placeholder=self.page.t("form.path_placeholder"), elem_classes=["lg-model-path"],
                         accept=OPTION_SPECS[self.form.tool]["models"].accept)
                ratios = OPTION_SPECS[self.form.tool]["ratios"]
                self.add(f"ratios.{i}", gr.Number, "tools.ratio", "", value=ratios.default, step=ratios.step)

    def output(self, *, device: bool = True, verbose: bool = True) -> None:
        with gr.Row(elem_classes=["lg-grid"]):
            self.option("save_to", "tools.save_to", "tools.save_to_info")
            self.option("save_precision", "tools.save_precision", "tools.save_precision_info")
            if device:
                self.add("device", gr.Dropdown, "tools.device", "tools.device_info", choices=["cpu", "cuda"],
                         value="cuda" if sysinfo.cuda_available() else "cpu", allow_custom_value=True)
            if verbose:
                self.option("verbose", "tools.verbose", "tools.verbose_info")
            self.option("overwrite", "tools.overwrite", "tools.overwrite_info")


# ---- layout ----------------------------------------------------------------------------------------------
def build(page: Page) -> dict[str, ToolForm]:
    tab_intro(page, "intro.utilities")
    forms: dict[str, ToolForm] = {}
    with gr.Tabs(elem_id="utility-tabs"):
        for tool in TOOLS:
            with page.text(gr.Tab(page.t(f"tools.{tool}"), id=f"tool-{tool}", elem_id=f"tool-{tool}"),
                           label=f"tools.{tool}"):
                forms[tool] = form = ToolForm(tool)
                tab_intro(page, f"tools.{tool}_intro")
                FORM_BUILDERS[tool](_Builder(page, form))
                form.run = page.text(gr.Button(page.t(f"tools.run_{tool}"), variant="primary",
                                               elem_id=_id(tool, "run"), elem_classes=["lg-tool-button"]),
                                     value=f"tools.run_{tool}")
                form.result = gr.HTML("", elem_id=_id(tool, "result"), elem_classes=["lg-tool-result"])
    page.parts["tool_forms"] = forms
    return forms


def _inspect(b: _Builder) -> None:
    with gr.Row(elem_classes=["lg-grid"]):
        b.option("model", "tools.lora_file", "tools.inspect_model_info")


def _merge(b: _Builder) -> None:
    b.model_rows()
    with gr.Row(elem_classes=["lg-grid"]):
        b.add("into_checkpoint", gr.Checkbox, "tools.into_checkpoint", "tools.into_checkpoint_info", value=False)
        b.option("sd_model", "tools.sd_model", "tools.sd_model_info", visible=False)
    b.output(device=False, verbose=False)


def _svd_merge(b: _Builder) -> None:
    b.model_rows()
    with gr.Row(elem_classes=["lg-grid"]):
        b.option("new_rank", "tools.new_rank", "tools.svd_rank_info", value=8)  # kohya GUI's start value
        b.option("new_conv_rank", "tools.new_conv_rank", "tools.new_conv_rank_info")
        b.option("clamp_quantile", "tools.clamp_quantile", "tools.clamp_quantile_info")
    b.output()


def _resize(b: _Builder) -> None:
    with gr.Row(elem_classes=["lg-grid"]):
        b.option("model", "tools.lora_file", "tools.resize_model_info")
        b.option("new_rank", "tools.new_rank", "tools.resize_rank_info")
        b.option("new_conv_rank", "tools.new_conv_rank", "tools.new_conv_rank_info")
        b.option("dynamic_method", "tools.dynamic_method", "tools.dynamic_method_info", choices_in=dynamic_choices,
                 value=FIXED_RANK)
        b.option("dynamic_param", "tools.dynamic_param", "tools.dynamic_param_info", interactive=False)
    b.output()


def _extract(b: _Builder) -> None:
    with gr.Row(elem_classes=["lg-grid"]):
        for key in ("model_org", "model_tuned", "dim", "conv_dim", "clamp_quantile", "min_diff"):
            b.option(key, f"tools.{key}", f"tools.{key}_info")
    b.output()


FORM_BUILDERS = {"inspect": _inspect, "merge": _merge, "svd_merge": _svd_merge, "resize": _resize,
                 "extract": _extract}


def dynamic_choices(lang: str) -> list[tuple[str, str]]:
    return [(i18n.t("tools.fixed_rank", lang), FIXED_RANK)] + [(i18n.t(f"tools.method_{m}", lang), m)
                                                               for m in DYNAMIC_METHODS]


# ---- behaviour ------------------------------------------------------------------------------------------
def wire(page: Page, runner: ToolRunner, lang_box: Any) -> None:
    for form in page.parts["tool_forms"].values():
        _wire_run(form, runner, lang_box)
        for key in MODEL_FIELDS:
            if key in form.inputs:
                form.inputs[key].change(lambda path, lang: model_note(path or "", lang), [form.inputs[key], lang_box],
                                        [form.slots[key]], show_progress="hidden", trigger_mode="always_last")
    merge = page.parts["tool_forms"]["merge"]
    merge.inputs["into_checkpoint"].change(lambda on: gr.update(visible=bool(on)), [merge.inputs["into_checkpoint"]],
                                           [merge.cells["sd_model"]], show_progress="hidden", queue=False)
    resize = page.parts["tool_forms"]["resize"]
    resize.inputs["dynamic_method"].change(lambda m: gr.update(interactive=bool(m) and m != FIXED_RANK),
                                           [resize.inputs["dynamic_method"]], [resize.inputs["dynamic_param"]],
                                           show_progress="hidden", queue=False)


def _wire_run(form: ToolForm, runner: ToolRunner, lang_box: Any) -> None:
    keys = list(form.inputs)
    slot_keys = list(form.slots)
    skip_slots = [gr.skip()] * len(slot_keys)

    def run(*values: Any):
        *vals, lang = values
        values_by_key = dict(zip(keys, vals))
        args = tool_args.build(form.tool, values_by_key)
        by_field: dict[str, list] = {}
        for problem in args.problems:
            by_field.setdefault(problem.field, []).append(problem)
        slots = [_slot_update(key, by_field.get(key, []), values_by_key, lang) for key in slot_keys]
        if not args.ok:
            yield slots + [render_problems(args.problems, lang)]
            return
        try:
            run_id = runner.start(args.argv, save_to=str(args.save_to) if args.save_to else None)
        except ToolBusy as busy:
            yield slots + [render_busy(busy.tool, busy.elapsed, lang)]
            return
        except OSError as exc:
            yield slots + [render_message("error", i18n.t("tools.spawn_failed", lang, error=str(exc)))]
            return
        yield slots + [render_running(None, form.tool, lang)]
        while True:
            time.sleep(POLL_SEC)
            result = runner.poll(run_id)
            if result is None or not result.running:
                break
            yield skip_slots + [render_running(result, form.tool, lang)]
        if result is None:
            return
        yield skip_slots + [render_result(result, lang, table=bool(values_by_key.get("verbose")))]

    # No queue limit: a second run is refused by the runner at once (it does not wait in a queue).
    form.run.click(run, [form.inputs[k] for k in keys] + [lang_box], [form.slots[k] for k in slot_keys] + [form.result],
                   concurrency_limit=None, show_progress="hidden")


def _slot_update(key: str, problems: list, values: dict[str, Any], lang: str) -> str:
    if problems:
        return problem_html(problems, lang)
    if key in MODEL_FIELDS:
        return model_note(str(values.get(key) or ""), lang)
    return ""
