"""The training panel under the tabs: Start / Stop / Print command, progress, loss, samples, files, log.

It renders the server's one job (lora_gui.jobs), so every open page, and a reloaded one, shows
the same run. A timer polls once a second and redraws only the parts whose version moved.
"""

from __future__ import annotations

import functools

import json
from typing import Any, Callable

import gradio as gr

from lora_gui import i18n
from lora_gui.checks import FormCheck
from lora_gui.run_view import PARTS, ViewState
from lora_gui.command_line import SdScriptsCommand, engine_command_line, sd_scripts_command
from lora_gui.jobs import JobManager, JobRefused, run_config_text
from lora_gui.tabs import resume
from lora_gui.page import Page
from lora_gui.panel_view import (esc, gallery_items, render_files, render_loss_chart, render_progress,
                                 render_status, stage_busy)


def build(page: Page) -> None:
    # The action bar stays at the bottom of the window while the tabs scroll (CSS position: sticky),
    # so Start, Stop and the progress can be seen from every tab. It is one line (buttons, status,
    # progress), with the problem list folded into one line above it (checks.render_overview).
    with gr.Column(elem_id="action-bar", elem_classes=["lg-action-bar"]):
        overview = gr.HTML("", elem_id="issues-overview")
        with gr.Row(elem_classes=["lg-buttons", "lg-bar-line"], equal_height=False):
            start = page.text(_bar_button(page, "btn.start", "start-button", variant="primary"), value="btn.start")
            stop = page.text(_bar_button(page, "btn.stop", "stop-button", variant="stop", interactive=False),
                             value="btn.stop")
            save_now = page.text(_bar_button(page, "btn.save_now", "save-now-button", interactive=False),
                                 value="btn.save_now")
            sample_now = page.text(_bar_button(page, "btn.sample_now", "sample-now-button", interactive=False),
                                   value="btn.sample_now")
            show_cmd = page.text(_bar_button(page, "btn.print", "print-button"), value="btn.print")
            status = gr.HTML("", elem_id="run-status", elem_classes=["lg-status-cell"])
            progress = gr.HTML("", elem_id="run-progress", elem_classes=["lg-progress-cell"])
        notice = gr.HTML("", elem_id="panel-notice")
    with gr.Column(elem_id="training-panel", elem_classes=["lg-panel"]):
        with gr.Row(equal_height=False, visible=False, elem_id="run-results") as results:
            with gr.Column(scale=1, min_width=320):
                page.text(gr.Markdown(f"**{page.t('panel.loss')}**"), value=lambda lang: f"**{i18n.t('panel.loss', lang)}**")
                loss = gr.HTML("", elem_id="loss-chart")
                page.text(gr.Markdown(f"**{page.t('panel.files')}**"), value=lambda lang: f"**{i18n.t('panel.files', lang)}**")
                files = gr.HTML("", elem_id="saved-files")
            with gr.Column(scale=1, min_width=320):
                gallery = page.text(gr.Gallery(value=[], label=page.t("panel.samples"), columns=4, height=260,
                                               object_fit="contain", elem_id="sample-gallery", interactive=False,
                                               allow_preview=True, preview=False, visible=False),
                                    label="panel.samples")
                page.text(gr.Markdown(f"**{page.t('panel.log')}**"), value=lambda lang: f"**{i18n.t('panel.log', lang)}**")
                log = gr.HTML("", elem_id="log-tail")
        with page.text(gr.Accordion(page.t("panel.command"), open=False, visible=False, elem_id="command-box"),
                       label="panel.command") as cmd_box:
            cmd = page.text(gr.Code("", language="shell", label=page.t("panel.command_line"), elem_id="command-line", lines=1,
                                    max_lines=3, wrap_lines=True,
                                    interactive=False), label="panel.command_line")
            run_json = gr.Code("", language="json", label="run.json", elem_id="run-json", interactive=False, lines=8,
                               max_lines=24)
            sd_cmd = page.text(gr.Code("", language="shell", label=page.t("panel.sd_scripts_line"), elem_id="sd-scripts-line",
                                       lines=2, max_lines=8, wrap_lines=True, interactive=False),
                               label="panel.sd_scripts_line")
            sd_notes = gr.HTML("", elem_id="sd-scripts-notes")
        timer = gr.Timer(1.0)
    page.parts.update(save_now=save_now, sample_now=sample_now)
    page.parts.update(results=results, overview=overview, start=start, stop=stop, show_cmd=show_cmd, notice=notice, status=status,
                      progress=progress, loss=loss, files=files, gallery=gallery, log=log, cmd_box=cmd_box,
                      cmd=cmd, run_json=run_json, sd_cmd=sd_cmd, sd_notes=sd_notes, timer=timer, seen=gr.State({}))


def _bar_button(page: Page, key: str, elem_id: str, *, variant: str = "secondary", interactive: bool = True) -> gr.Button:
    return gr.Button(page.t(key), variant=variant, elem_id=elem_id, scale=0, min_width=0, interactive=interactive)


CheckRunner = Callable[[tuple, str], tuple[FormCheck, list[Any]]]  # (form values, lang) -> check, slot updates


def wire(page: Page, manager: JobManager, lang_box: Any, check_outputs: list[Any], run_check: CheckRunner) -> None:
    p = page.parts
    fields = page.ordered_fields()
    handlers = PanelHandlers(manager, run_check)
    # outside the queue: a cheap read of shared state that must not wait behind form checks
    p["timer"].tick(handlers.refresh_panel, [p["seen"], lang_box], [p[name] for name in PANEL_OUTPUTS],
                    show_progress="hidden", queue=False)
    # show_progress hidden: Gradio's per-event timers ("0.2s") would flash over the status and the problems
    p["start"].click(handlers.start, fields + [lang_box], check_outputs + [p["notice"]], concurrency_limit=1,
                     concurrency_id="job-control", show_progress="hidden")
    p["stop"].click(handlers.stop, [lang_box], [p["notice"]], concurrency_limit=1, concurrency_id="job-control",
                    show_progress="hidden")
    resume.wire(page, lang_box, handlers.start, check_outputs + [p["notice"]])
    for request in ("save_now", "sample_now"):
        p[request].click(functools.partial(handlers.request, request), [lang_box], [p["notice"]], concurrency_limit=1,
                         concurrency_id="job-control", show_progress="hidden")
    p["show_cmd"].click(handlers.print_command, fields + [lang_box],
                        check_outputs + [p["cmd_box"], p["cmd"], p["run_json"], p["sd_cmd"], p["sd_notes"], p["notice"]],
                        show_progress="hidden")


# what the timer redraws, in the order refresh_panel returns them
PANEL_OUTPUTS = ("seen", "status", "progress", "loss", "gallery", "files", "log", "stop", "save_now", "sample_now",
                 "start", "notice", "results")


class PanelHandlers:
    """The training panel's event handlers: the timer's redraw, Start, Stop and Print command. Start and
    Print take the form's values (page.ordered_fields order) and the page language last."""

    def __init__(self, manager: JobManager, run_check: CheckRunner):
        self.manager, self.run_check = manager, run_check

    def refresh_panel(self, seen: dict, lang: str) -> list[Any]:
        """The parts whose version moved since this page last drew them (`seen`), gr.skip() for the others."""
        state = self.manager.refresh()
        with self.manager.lock:
            key = f"{state.job_id}:{lang}"
            if seen.get("key") != key:
                seen = {"key": key}
            changed = {part: seen.get(part) != state.versions[part] for part in PARTS}
            return [dict(seen, **state.versions)] + _panel_updates(state, changed, seen, lang)

    def start(self, *args: Any) -> list[Any]:
        values, lang = args[:-1], args[-1]
        check, check_updates = self.run_check(values, lang)
        running = self.manager.refresh(force=True)
        if running.active:
            return check_updates + [_notice(i18n.t("job.refused_running", lang, name=running.output_name), "error")]
        if not check.ok:
            count = len(check.errors) or 1
            return check_updates + [_notice(i18n.t("start.refused_invalid", lang, count=count), "error")]
        assert check.config is not None
        try:
            self.manager.start(check.config)
        except JobRefused as exc:
            return check_updates + [_notice(i18n.t(exc.key, lang, **exc.params), "error")]
        return check_updates + [_notice(i18n.t("start.started", lang, path=str(check.config.output_dir)), "ok")]

    def stop(self, lang: str) -> str:
        key = self.manager.stop()
        level = "ok" if key in ("job.stop_requested", "job.stop_killed") else "warning"
        return _notice(i18n.t(key, lang), level)

    def request(self, request: str, lang: str) -> str:
        """Save now / Sample now."""
        key = self.manager.request(request)
        return _notice(i18n.t(key, lang), "ok" if key.endswith("_requested") else "warning")

    def print_command(self, *args: Any) -> list[Any]:
        values, lang = args[:-1], args[-1]
        check, check_updates = self.run_check(values, lang)
        if check.config is None:
            return check_updates + [gr.skip()] * 5 + [_notice(i18n.t("print.invalid", lang), "error")]
        try:
            command, run_file = engine_command_line(check.config)
            sd_scripts = sd_scripts_command(check.config)
        except OSError as exc:
            return check_updates + [gr.skip()] * 5 + [_notice(i18n.t("print.write_failed", lang, error=str(exc)), "error")]
        text = json.dumps(json.loads(run_config_text(check.config)), indent=2, ensure_ascii=False)
        return check_updates + [gr.update(visible=True, open=True), command, text, sd_scripts.text,
                                _sd_scripts_notes(sd_scripts, lang),
                                _notice(i18n.t("print.shown", lang, path=str(run_file)), "ok")]


def _panel_updates(state: ViewState, changed: dict[str, bool], seen: dict, lang: str) -> list[Any]:
    """PANEL_OUTPUTS after `seen`: the changed parts drawn anew, gr.skip() for the rest."""
    status = changed["status"]
    # a merge / resize / preview stage reports its progress in log lines
    redraw_progress = changed["progress"] or status or (changed["log"] and stage_busy(state))
    if changed["samples"]:
        items = gallery_items(state, lang)
        gallery = gr.update(value=items, visible=bool(items))
    else:
        gallery = gr.skip()
    return [
        render_status(state, lang) if status else gr.skip(),
        render_progress(state, lang) if redraw_progress else gr.skip(),
        render_loss_chart(state, lang) if changed["loss"] else gr.skip(),
        gallery,
        render_files(state, lang) if changed["files"] else gr.skip(),
        _log_text(state, lang) if changed["log"] else gr.skip(),
        gr.update(interactive=state.active) if status else gr.skip(),  # Stop
        *[gr.update(interactive=state.active and state.kind == "train") if status else gr.skip()] * 2,  # Save/Sample now
        # during a run Start is grey and cannot be pressed (one job at a time; the server refuses a second too)
        (gr.update(interactive=not state.active, variant="secondary" if state.active else "primary") if status
         else gr.skip()),
        # the "started" / "stop requested" notice is stale once the run has ended
        "" if status and state.finished and "status" in seen else gr.skip(),
        gr.update(visible=state.status != "idle") if status else gr.skip(),  # the results row
    ]


def _sd_scripts_notes(command: SdScriptsCommand, lang: str) -> str:
    """What the sd-scripts line leaves out (no sd-scripts option) and the files it refers to."""
    lines = [esc(i18n.t("print.sd_scripts_files", lang, files=", ".join(map(str, command.files))))] if command.files else []
    if command.unsupported:
        items = ", ".join(f"<code>{esc(name)}</code> = {esc(str(value))}" for name, value in command.unsupported)
        lines.append(f'{esc(i18n.t("print.sd_scripts_unsupported", lang))} {items}')
    else:
        lines.append(esc(i18n.t("print.sd_scripts_complete", lang)))
    return '<div class="lg-note">' + "<br>".join(lines) + "</div>"


def _log_text(state: ViewState, lang: str) -> str:
    """The engine's last output lines; the box stays scrolled to the newest line (CSS column-reverse)."""
    text = state.log_tail or "\n".join(text for _, text in list(state.messages)[-40:])
    if not text:
        return ""
    return f'<div class="lg-log"><pre>{esc(text)}</pre></div>'


def _notice(text: str, level: str) -> str:
    icon = {"ok": "✔", "warning": "⚠", "error": "✖"}[level]
    return f'<div class="lg-notice lg-notice-{level}">{icon} {esc(text)}</div>'
