"""Folders tab: image/reg/output folders, metadata, the live dataset summary, and 'prepare folders'."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gradio as gr

from lora_gui import i18n
from lora_gui.page import Page
from lora_gui.panel_view import esc
from lora_gui.prepare import PrepareError, prepare_folders
from lora_gui.tabs.common import render_sections, tab_intro
from lora_gui.tensorboard_server import SERVER, TensorBoardError


def build(page: Page) -> None:
    tab_intro(page, "intro.folders")

    def free_name_button() -> None:  # under the output name, shown when that name is taken
        page.parts["free_name"] = page.text(
            gr.Button(page.t("folders.free_name"), size="sm", visible=False, elem_id="free-name"),
            value="folders.free_name")

    def tensorboard_button() -> None:  # under the logging folder
        page.parts["tensorboard"] = page.text(
            gr.Button(page.t("tensorboard.open"), size="sm", elem_id="open-tensorboard"), value="tensorboard.open")
        page.parts["tensorboard_link"] = gr.HTML("", elem_id="tensorboard-link")

    page.extras["output_name"] = free_name_button
    page.extras["logging_dir"] = tensorboard_button
    render_sections(page, "folders", open_sections=())
    page.parts["dataset"] = gr.HTML("", elem_id="dataset-summary")
    _build_prepare(page)


def _build_prepare(page: Page) -> None:
    with page.text(gr.Accordion(page.t("prepare.title"), open=False, elem_id="prepare-folders"), label="prepare.title"):
        tab_intro(page, "prepare.intro")
        with gr.Row(elem_classes=["lg-grid"]):
            token = _input(page, gr.Textbox, "prepare.token", "prepare.token_info", elem_id="prep-token")
            klass = _input(page, gr.Textbox, "prepare.class", "prepare.class_info", elem_id="prep-class")
            repeats = _input(page, gr.Number, "prepare.repeats", "prepare.repeats_info", value=40, step=1,
                             elem_id="prep-repeats")
        with gr.Row(elem_classes=["lg-grid"]):
            images = _input(page, gr.Textbox, "prepare.images", "prepare.images_info", wide=True, elem_id="prep-images")
            reg = _input(page, gr.Textbox, "prepare.reg_images", "prepare.reg_images_info", wide=True,
                         elem_id="prep-reg")
            reg_repeats = _input(page, gr.Number, "prepare.reg_repeats", "prepare.reg_repeats_info", value=1, step=1,
                                 elem_id="prep-reg-repeats")
            dest = _input(page, gr.Textbox, "prepare.dest", "prepare.dest_info", wide=True, elem_id="prep-dest")
        button = page.text(gr.Button(page.t("prepare.button"), variant="secondary", elem_id="prep-button"),
                           value="prepare.button")
        result = gr.HTML("", elem_id="prep-result")
    page.parts["prepare"] = dict(token=token, klass=klass, repeats=repeats, images=images, reg=reg,
                                 reg_repeats=reg_repeats, dest=dest, button=button, result=result)


def _input(page: Page, cls: Any, label: str, info: str, *, wide: bool = False, **kwargs: Any) -> Any:
    with gr.Column(min_width=0, elem_classes=["lg-cell"] + (["lg-wide"] if wide else [])):
        return page.text(cls(label=page.t(label), info=page.t(info), **kwargs), label=label, info=info)


def wire(page: Page, lang_box: Any) -> None:
    p = page.parts["prepare"]
    targets = [page.fields[n] for n in ("train_data_dir", "reg_data_dir", "output_dir", "logging_dir")]

    def run_prepare(token: str, klass: str, repeats: float, images: str, reg: str, reg_repeats: float, dest: str,
                    lang: str) -> list[Any]:
        try:
            done = prepare_folders(instance_token=token or "", class_token=klass or "", repeats=int(repeats or 0),
                                   images_dir=images or "", dest_dir=dest or "", reg_images_dir=reg or "",
                                   reg_repeats=int(reg_repeats or 0))
        except PrepareError as exc:
            message = i18n.t(exc.key, lang, **exc.params)
            return [gr.skip()] * 4 + [f'<div class="lg-issue lg-issue-error">✖ {esc(message)}</div>']
        except OSError as exc:
            message = i18n.t("prepare.copy_failed", lang, error=str(exc))
            return [gr.skip()] * 4 + [f'<div class="lg-issue lg-issue-error">✖ {esc(message)}</div>']
        text = i18n.t("prepare.done", lang, images=done.copied_images, captions=done.copied_captions,
                      reg=done.copied_reg_images, folder=str(done.train_data_dir.parent))
        return [str(done.train_data_dir), str(done.reg_data_dir or ""), str(done.output_dir), str(done.logging_dir),
                f'<div class="lg-note ok">✔ {esc(text)}</div>']

    p["button"].click(run_prepare, [p["token"], p["klass"], p["repeats"], p["images"], p["reg"], p["reg_repeats"],
                                    p["dest"], lang_box], targets + [p["result"]])

    def pick_free_name(output_dir: str, name: str) -> str:
        return free_output_name(Path(output_dir), name)

    page.parts["tensorboard"].click(open_tensorboard, [page.fields["logging_dir"], lang_box],
                                    [page.parts["tensorboard_link"]])
    page.parts["free_name"].click(pick_free_name, [page.fields["output_dir"], page.fields["output_name"]],
                                  [page.fields["output_name"]])


def open_tensorboard(logging_dir: str, lang: str) -> str:
    """Start (or reuse) the TensorBoard server on the logging folder; a link to it, or why not."""
    try:
        url = SERVER.open(logging_dir or "")
    except TensorBoardError as exc:
        return f'<div class="lg-issue lg-issue-error">✖ {esc(i18n.t(exc.key, lang, **exc.params))}</div>'
    except OSError as exc:
        return f'<div class="lg-issue lg-issue-error">✖ {esc(i18n.t("tensorboard.failed", lang, error=str(exc)))}</div>'
    text = esc(i18n.t("tensorboard.running", lang, url=url))
    return f'<div class="lg-note ok">✔ <a href="{esc(url)}" target="_blank" rel="noopener">{text}</a></div>'


def free_output_name(output_dir: Path, name: str) -> str:
    """`name` with the next number that no file in output_dir uses yet (demo_lora -> demo_lora_2)."""
    base = re.sub(r"_\d+$", "", name.strip()) or "lora"
    try:
        taken = {p.name for p in output_dir.iterdir()}
    except OSError:
        taken = set()

    def used(candidate: str) -> bool:
        return any(n.startswith(candidate + ".") or n.startswith(candidate + "-") for n in taken)

    if not used(base):
        return base
    n = 2
    while used(f"{base}_{n}"):
        n += 1
    return f"{base}_{n}"
