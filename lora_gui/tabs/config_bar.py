"""The configuration bar above the tabs: presets (shipped and the user's), save, upload and download JSON.

Saving never replaces a preset silently: a shipped name is refused, an existing user preset is
replaced only after the Overwrite button that appears for it is pressed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from lora_gui import i18n, presets
from lora_gui.family import model_family
from lora_gui.form import FIELDS, build_config, config_to_values
from lora_gui.page import Page
from lora_gui.panel_view import esc
from lora_gui.sysinfo import xformers_usable
from trainer.families.traits import SDXL

MODEL_FIELD = "pretrained_model_name_or_path"
EXPORT_DIR = Path(tempfile.gettempdir()) / "lora_gui_exports"


def build(page: Page, initial_preset: str) -> None:
    with page.text(gr.Accordion(page.t("config.title"), open=True, elem_id="config-bar"), label="config.title"):
        with gr.Row(equal_height=True, elem_classes=["lg-config-row"]):
            choices = presets.list_presets()
            dropdown = page.text(gr.Dropdown(choices=choices, value=initial_preset if initial_preset in choices else None,
                                             label=page.t("config.preset"), elem_id="preset-select", scale=3, min_width=170,
                                             allow_custom_value=False), label="config.preset")
            load = page.text(gr.Button(page.t("config.load"), elem_id="preset-load", scale=1, min_width=100),
                             value="config.load")
            name = page.text(gr.Textbox(label=page.t("config.save_name"), placeholder=page.t("config.save_placeholder"),
                                        elem_id="preset-name", scale=3, min_width=190),
                             label="config.save_name", placeholder="config.save_placeholder")
            save = page.text(gr.Button(page.t("config.save"), elem_id="preset-save", scale=1, min_width=100),
                             value="config.save")
            upload = page.text(gr.UploadButton(page.t("config.upload"), file_types=[".json"], elem_id="preset-upload",
                                               scale=2, min_width=170), label="config.upload")
            export = page.text(gr.Button(page.t("config.download"), elem_id="preset-download", scale=2, min_width=170),
                               value="config.download")
        with gr.Row(elem_classes=["lg-preset-message-row"]):
            message = gr.HTML("", elem_id="preset-message")
            overwrite = page.text(gr.Button(page.t("config.overwrite"), variant="stop", size="sm", visible=False,
                                            elem_id="preset-overwrite", scale=0, min_width=140), value="config.overwrite")
        file_out = gr.File(visible=False, label="JSON", elem_id="preset-file", interactive=False)
    page.parts.update(preset_dropdown=dropdown, preset_load=load, preset_name=name, preset_save=save,
                      preset_overwrite=overwrite, preset_upload=upload, preset_export=export, preset_message=message, preset_file=file_out)


def _note(text: str, level: str = "ok") -> str:
    icon = {"ok": "✔", "warning": "⚠", "error": "✖"}[level]
    cls = {"ok": "lg-note ok", "warning": "lg-note warn", "error": "lg-issue lg-issue-error"}[level]
    return f'<div class="{cls}">{icon} {esc(text)}</div>'


def _loaded_message(loaded: presets.LoadedPreset, name: str, lang: str, model_path: str = "") -> str:
    text = i18n.t("config.loaded_kohya" if loaded.kohya else "config.loaded", lang, name=name)
    # an SDXL preset loaded while the form's model (after loading) is not SDXL
    path = loaded.config.pretrained_model_name_or_path if MODEL_FIELD in loaded.keys else model_path
    if presets.made_for_sdxl(loaded) and model_family(path) != SDXL.id:
        text += " " + i18n.t("config.needs_sdxl", lang)
    if not xformers_usable() and loaded.config.xformers:
        text += " " + i18n.t("config.xformers_off", lang)
    if not loaded.unmapped:
        return _note(text)
    items = "".join(f"<li>{esc(u)}</li>" for u in loaded.unmapped)
    return (f'<div class="lg-note warn">⚠ {esc(text)} {esc(i18n.t("config.unmapped", lang, count=len(loaded.unmapped)))}'
            f'<ul class="lg-unmapped">{items}</ul></div>')


def _values(loaded: presets.LoadedPreset) -> list[Any]:
    """New field values; fields the preset does not mention keep what the form shows.

    xformers without a usable CUDA + xformers is switched to SDPA here, as the form would do:
    a disabled field must never arrive holding a value that is refused."""
    cfg, keys = loaded.config, loaded.keys
    if cfg.xformers and not xformers_usable():
        cfg, keys = cfg.replace(xformers=False, sdpa=True), keys | {"xformers", "sdpa"}
    return [v if spec.name in keys else gr.skip() for spec, v in zip(FIELDS, config_to_values(cfg))]


def wire(page: Page, lang_box: Any) -> None:
    p = page.parts
    fields = page.ordered_fields()
    skip_fields = [gr.skip()] * len(FIELDS)

    def load_named(name: str, model_path: str, lang: str) -> list[Any]:
        if not name:
            return skip_fields + [_note(i18n.t("config.pick_first", lang), "error")]
        try:
            loaded = presets.load_preset(name)
        except presets.PresetError as exc:
            return skip_fields + [_note(i18n.t(exc.key, lang, **exc.params), "error")]
        return _values(loaded) + [_loaded_message(loaded, name, lang, model_path or "")]

    def load_upload(file: Any, model_path: str, lang: str) -> list[Any]:
        path = Path(file if isinstance(file, str) else getattr(file, "name", ""))
        try:
            loaded = presets.read_preset_file(path)
        except presets.PresetError as exc:
            return skip_fields + [_note(i18n.t(exc.key, lang, **exc.params), "error")]
        return _values(loaded) + [_loaded_message(loaded, path.name, lang, model_path or "")]

    hidden = gr.update(visible=False)

    def save(args: tuple, overwrite: bool) -> list[Any]:
        values, name, lang = args[:-2], (args[-2] or "").strip(), args[-1]
        cfg, errors = build_config(values)
        if cfg is None:
            return [gr.skip(), _note(i18n.t("config.cannot_save", lang, count=len(errors)), "error"), hidden]
        try:
            path = presets.save_preset(name, cfg, overwrite=overwrite)
        except presets.PresetError as exc:
            ask = exc.key == "preset.exists"  # the Overwrite button replaces it
            level = "warning" if ask else "error"
            return [gr.skip(), _note(i18n.t(exc.key, lang, **exc.params), level), gr.update(visible=ask)]
        except OSError as exc:
            return [gr.skip(), _note(i18n.t("config.save_failed", lang, error=str(exc)), "error"), hidden]
        return [gr.update(choices=presets.list_presets(), value=path.stem),
                _note(i18n.t("config.saved", lang, name=path.stem, path=str(path))), hidden]

    def export(*args: Any) -> list[Any]:
        values, lang = args[:-1], args[-1]
        cfg, errors = build_config(values)
        if cfg is None:
            return [gr.update(visible=False), _note(i18n.t("config.cannot_save", lang, count=len(errors)), "error")]
        EXPORT_DIR.mkdir(parents=True, exist_ok=True)
        path = EXPORT_DIR / f"{cfg.output_name or 'lora'}.json"
        path.write_text(presets.preset_json(cfg), encoding="utf-8")
        return [gr.update(value=str(path), visible=True), _note(i18n.t("config.exported", lang))]

    model = page.fields[MODEL_FIELD]
    quiet = dict(show_progress="hidden")  # no Gradio timers over the fields a preset fills
    p["preset_load"].click(load_named, [p["preset_dropdown"], model, lang_box], fields + [p["preset_message"]], **quiet)
    p["preset_upload"].upload(load_upload, [p["preset_upload"], model, lang_box], fields + [p["preset_message"]],
                              **quiet)
    save_inputs = fields + [p["preset_name"], lang_box]
    save_outputs = [p["preset_dropdown"], p["preset_message"], p["preset_overwrite"]]
    p["preset_save"].click(lambda *args: save(args, False), save_inputs, save_outputs, **quiet)
    p["preset_overwrite"].click(lambda *args: save(args, True), save_inputs, save_outputs, **quiet)
    p["preset_name"].input(lambda: hidden, None, [p["preset_overwrite"]], show_progress="hidden")
    p["preset_export"].click(export, fields + [lang_box], [p["preset_file"], p["preset_message"]], **quiet)
