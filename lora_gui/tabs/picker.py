"""The file picker: one dialog for every path field's Browse button (Page.path_box / browse_button).

It browses this computer's files on the server side (the app serves only 127.0.0.1 by default, so the
server's files are the user's). Gradio's FileExplorer shows a fixed root as a tree and cannot choose a
folder as such; model, image and output fields need exactly that, so the dialog lists one folder at a
time: walk into a sub-folder, go up, type or paste a folder, then use a file or the folder itself.
Typing and pasting into the fields keep working; the picker only fills them in.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import gradio as gr

from lora_gui import i18n
from lora_gui.file_browser import Accept, Listing, chosen_value, list_folder, size_text, start_folder
from lora_gui.page import Page
from lora_gui.panel_view import esc

FOLDER_MARK = "/"  # a list value ending in this is a sub-folder (file names cannot end in a slash)


def build(page: Page) -> None:
    """The dialog (hidden until a Browse button opens it); place once, after every path field."""
    with gr.Column(visible=False, elem_id="file-picker", elem_classes=["lg-picker"]) as dialog:
        title = gr.HTML("", elem_id="picker-title")
        with gr.Row(equal_height=False, elem_classes=["lg-picker-bar"]):
            folder = page.text(gr.Textbox(label=page.t("picker.folder"), scale=5, elem_id="picker-folder"),
                               label="picker.folder")
            up = page.text(gr.Button(page.t("picker.up"), size="sm", scale=0, min_width=70, elem_id="picker-up"),
                           value="picker.up")
            home = page.text(gr.Button(page.t("picker.home"), size="sm", scale=0, min_width=70,
                                       elem_id="picker-home"), value="picker.home")
        entries = gr.Radio(choices=[], value=None, show_label=False, elem_id="picker-entries")
        note = gr.HTML("", elem_id="picker-note")
        with gr.Row(equal_height=True):
            use_file = page.text(gr.Button(page.t("picker.use_file"), variant="primary", elem_id="picker-use-file"),
                                 value="picker.use_file")
            use_folder = page.text(gr.Button(page.t("picker.use_folder"), variant="primary",
                                             elem_id="picker-use-folder"), value="picker.use_folder")
            cancel = page.text(gr.Button(page.t("picker.cancel"), elem_id="picker-cancel"), value="picker.cancel")
    page.parts["picker"] = dict(dialog=dialog, title=title, folder=folder, up=up, home=home, entries=entries,
                                note=note, use_file=use_file, use_folder=use_folder, cancel=cancel,
                                target=gr.State(-1))


def wire(page: Page, lang_box: Any) -> None:
    p = page.parts["picker"]
    accepts = [Accept.of(accept) for _, _, accept in page.pickers]
    boxes = [box for _, box, _ in page.pickers]
    shown = [p["dialog"], p["title"], p["folder"], p["entries"], p["note"], p["use_file"], p["use_folder"]]
    for index, (button, box, _) in enumerate(page.pickers):
        button.click(functools.partial(_open, index, accepts[index]), [box, lang_box], [p["target"]] + shown,
                     show_progress="hidden", queue=False)
    browse = [p["folder"], p["entries"], p["note"]]
    walk = functools.partial(_walk, accepts)
    p["folder"].submit(walk, [p["target"], p["folder"], gr.State(""), lang_box], browse, show_progress="hidden")
    p["entries"].input(walk, [p["target"], p["folder"], p["entries"], lang_box], browse, show_progress="hidden")
    p["up"].click(walk, [p["target"], p["folder"], gr.State(".." + FOLDER_MARK), lang_box], browse,
                  show_progress="hidden")
    p["home"].click(walk, [p["target"], gr.State(str(Path.home())), gr.State(""), lang_box], browse,
                    show_progress="hidden")
    choose = functools.partial(_choose, accepts)
    p["use_file"].click(functools.partial(choose, True), [p["target"], p["folder"], p["entries"], lang_box] + boxes,
                        [p["dialog"], p["note"]] + boxes, show_progress="hidden")
    p["use_folder"].click(functools.partial(choose, False), [p["target"], p["folder"], p["entries"], lang_box] + boxes,
                          [p["dialog"], p["note"]] + boxes, show_progress="hidden")
    p["cancel"].click(lambda: gr.update(visible=False), None, [p["dialog"]], show_progress="hidden", queue=False)


def _open(index: int, accept: Accept, value: str, lang: str) -> list[Any]:
    folder = start_folder(str(value or ""), Path.home())
    listing = list_folder(folder, accept)
    kind = "picker.title_both" if accept.folders and (accept.suffixes or accept.any_file) else \
        "picker.title_folder" if accept.folders else "picker.title_file"
    suffixes = ", ".join(accept.suffixes) if accept.suffixes else ""
    title = f'<div class="lg-picker-title">{esc(i18n.t(kind, lang, suffixes=suffixes))}</div>'
    takes_files = bool(accept.suffixes) or accept.any_file
    return [index, gr.update(visible=True), title, str(listing.folder), _entries(listing), _note(listing, lang),
            gr.update(visible=takes_files), gr.update(visible=accept.folders)]


def _walk(accepts: list[Accept], index: int, folder: str, name: str, lang: str) -> list[Any]:
    """Into the sub-folder `name` (".." = up), or to the typed folder; a file name only selects."""
    if index < 0:
        return [gr.skip()] * 3
    here = Path(folder.strip() or Path.home()).expanduser()
    if name and not name.endswith(FOLDER_MARK):
        return [gr.skip(), gr.skip(), ""]  # a file was selected: Use file takes it
    if name == ".." + FOLDER_MARK:
        target = here.parent
    elif name:
        target = here / name[:-len(FOLDER_MARK)]
    else:
        target = here
    if not target.is_dir():
        return [gr.skip(), gr.skip(), _message(i18n.t("picker.not_folder", lang, path=str(target)))]
    listing = list_folder(target, accepts[index])
    return [str(listing.folder), _entries(listing), _note(listing, lang)]


def _choose(accepts: list[Accept], want_file: bool, index: int, folder: str, name: str, lang: str,
            *values: str) -> list[Any]:
    """Fill the field that opened the dialog and close it; the other fields are left as they are."""
    skips = [gr.skip()] * len(values)
    if index < 0:
        return [gr.update(visible=False), ""] + skips
    accept, here = accepts[index], Path(folder.strip()).expanduser()
    if want_file and (not name or name.endswith(FOLDER_MARK)):
        return [gr.skip(), _message(i18n.t("picker.pick_file", lang))] + skips
    if not here.is_dir():
        return [gr.skip(), _message(i18n.t("picker.not_folder", lang, path=str(here)))] + skips
    value = chosen_value(here, name if want_file else "", str(values[index] or ""), accept)
    skips[index] = value
    return [gr.update(visible=False), ""] + skips


def _entries(listing: Listing) -> Any:
    # plain marks: an emoji font is not on every machine
    choices = [(f"▸ {e.name}/", e.name + FOLDER_MARK) if e.is_folder else (f"{e.name}  ·  {size_text(e.size)}", e.name)
               for e in listing.entries]
    return gr.update(choices=choices, value=None)


def _note(listing: Listing, lang: str) -> str:
    if listing.error:
        return _message(i18n.t("picker.unreadable", lang, path=str(listing.folder), error=listing.error))
    parts = [] if listing.entries else [i18n.t("picker.empty", lang)]
    if listing.hidden:
        parts.append(i18n.t("picker.hidden", lang, count=listing.hidden))
    return f'<div class="lg-note">{esc(" ".join(parts))}</div>' if parts else ""


def _message(text: str) -> str:
    return f'<div class="lg-notice lg-notice-warning">⚠ {esc(text)}</div>'
