"""Under the model field: "Download from the Hub" (lora_gui.hub_download) with its progress.

Nothing is downloaded unless the user presses it; the server runs one download at a time, and every page
(another tab, a reload) shows the same progress.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import gradio as gr

from lora_gui import i18n
from lora_gui.engine import forget_detections, is_hub_id
from lora_gui.file_browser import size_text
from lora_gui.hub_download import DOWNLOADER, DownloadState, HubDownloadError
from lora_gui.page import Page
from lora_gui.panel_view import esc, format_duration

MODEL_FIELD = "pretrained_model_name_or_path"


def build(page: Page) -> None:
    """The button and its status line (placed under the model field)."""
    with gr.Row(elem_classes=["lg-hub-row"], equal_height=True):
        button = page.text(gr.Button(page.t("hub.download"), size="sm", scale=0, min_width=0, elem_id="hub-download"),
                           value="hub.download")
        status = gr.HTML("", elem_id="hub-status")
    page.parts["hub"] = dict(button=button, status=status, timer=gr.Timer(1.0, active=False))


def wire(page: Page, lang_box: Any, recheck: tuple[Callable[..., list], list, list]) -> None:
    """`recheck`: the form check (function, inputs, outputs), run once when a download has finished so that
    the model's note and the problem list see the model in the cache."""
    hub, model = page.parts["hub"], page.fields[MODEL_FIELD]
    finished = gr.State(False)
    hub["button"].click(start, [model, lang_box], [hub["status"], hub["timer"]], show_progress="hidden",
                        concurrency_limit=1, concurrency_id="hub-download")
    check, check_inputs, check_outputs = recheck

    def check_when_finished(just_finished: bool, *values: Any) -> list[Any]:
        return check(*values) if just_finished else [gr.skip()] * len(check_outputs)

    hub["timer"].tick(poll, [model, lang_box], [hub["status"], hub["timer"], model, finished], show_progress="hidden",
                      queue=False).then(check_when_finished, [finished] + check_inputs, check_outputs,
                                        show_progress="hidden")


def start(value: str, lang: str) -> list[Any]:
    repo_id = str(value or "").strip()
    if not is_hub_id(repo_id):
        return [_line(i18n.t("hub.not_an_id", lang), "warning"), gr.update(active=False)]
    try:
        DOWNLOADER.start(repo_id)
    except HubDownloadError as exc:
        return [_line(str(exc), "warning"), gr.update(active=True)]
    return [render(DOWNLOADER.state(), lang), gr.update(active=True)]


def poll(value: str, lang: str) -> list[Any]:
    """While a download runs: its progress; when it ends, the model field gets what was downloaded (the id,
    or a single checkpoint's file) so that the detection runs on it."""
    state = DOWNLOADER.state()
    if state.status == "running":
        return [render(state, lang), gr.skip(), gr.skip(), False]
    if state.status != "done":
        return [render(state, lang), gr.update(active=False), gr.skip(), False]
    forget_detections()  # the id was "not in the cache" a moment ago
    field = state.result if state.result != str(value or "").strip() else gr.skip()
    return [render(state, lang), gr.update(active=False), field, True]


def render(state: DownloadState, lang: str) -> str:
    if state.status == "running":
        pct = 100 * state.done_bytes // state.total_bytes if state.total_bytes else 0
        elapsed = max(1e-3, time.time() - state.started)
        text = i18n.t("hub.progress", lang, repo=state.repo_id, done=size_text(state.done_bytes),
                      total=size_text(state.total_bytes) if state.total_bytes else "?", files=state.files_done,
                      count=state.files_total or "?", speed=size_text(int(state.done_bytes / elapsed)),
                      file=state.current or "…")
        return (f'<div class="lg-hub-progress" data-status="running"><div class="lg-progress" role="progressbar" '
                f'aria-valuenow="{pct}"><div class="lg-progress-fill" style="width:{pct}%"></div>'
                f'<span class="lg-progress-text">{pct} %</span></div><div class="lg-note">{esc(text)}</div></div>')
    if state.status == "done":
        took = format_duration(max(0.0, time.time() - state.started))
        return _line(i18n.t("hub.done", lang, repo=state.repo_id, size=size_text(state.total_bytes), time=took), "ok",
                     status="done")
    if state.status == "failed":
        return _line(state.message, "error", status="failed")
    return ""


def _line(text: str, level: str, *, status: str = "") -> str:
    icon = {"ok": "✔", "warning": "⚠", "error": "✖"}[level]
    return f'<div class="lg-notice lg-notice-{level}" data-status="{status}">{icon} {esc(text)}</div>'
