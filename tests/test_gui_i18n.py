"""Translation catalogs: Japanese for every field, every page string and every validation code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lora_gui import engine, i18n
from lora_gui.form import sections_for_tab
from lora_gui.slider_form import FIELDS as SLIDER_FIELDS
from lora_gui.tabs.parameters import GROUPS
from lora_gui.tool_args import DYNAMIC_METHODS, TOOLS
from lora_gui.tool_view import TABLE_COLUMNS
from trainer.slider import METHODS
from lora_gui.tabs.source_model import QUICK_PICKS
from trainer.config import TABS, TrainConfig

ROOT = Path(__file__).resolve().parent.parent
EN = json.loads((ROOT / "lora_gui/i18n/en.json").read_text(encoding="utf-8"))
JA = json.loads((ROOT / "lora_gui/i18n/ja.json").read_text(encoding="utf-8"))
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _keys_used_in_code() -> set[str]:
    """Catalog keys written literally in lora_gui/ and app.py (t("..."), page.t("..."), label="...")."""
    keys: set[str] = set()
    sources = list((ROOT / "lora_gui").rglob("*.py")) + [ROOT / "app.py"]
    pattern = re.compile(r"""(?:\bt\(|i18n\.t\(|page\.t\(|\b(?:label|info|value|placeholder)=)\s*["']([a-z_]+\.[a-z_0-9]+)["']""")
    for path in sources:
        keys |= set(pattern.findall(path.read_text(encoding="utf-8")))
    keys |= set(re.findall(r'"((?:job|preset|prepare|print|start|file|tools|tool_err|slider|stage)\.[a-z_]+)"',
                           "\n".join(p.read_text(encoding="utf-8") for p in sources)))
    namespaces = {k.split(".")[0] for k in EN["ui"]}
    return {k for k in keys if k.split(".")[0] in namespaces}  # e.g. the label "run.json" is not a key


def _dynamic_keys() -> set[str]:
    keys = {f"tab.{t}" for t in TABS}
    keys |= {f"status.{s}" for s in ("idle", "starting", "running", "stopping", "completed", "stopped", "failed")}
    keys |= {f"quick_pick.{k}" for k in QUICK_PICKS}
    keys |= {"family.sd1", "family.sd2", "family.sdxl", "model_kind.diffusers", "model_kind.single_file",
             "model_kind.hub"}
    keys |= {f"section.{tab}.{section}" for tab in TABS for section, _ in sections_for_tab(tab) if section != "basic"}
    keys |= {key for key, _ in GROUPS}
    # the slider wizard and the LoRA toolbox (lora_gui/tabs/slider.py, utilities.py, tool_view.py)
    keys |= {"tab.slider", "tab.utilities", "intro.slider", "intro.utilities", "file.kind_intermediate"}
    keys |= {f"tools.{tool}{suffix}" for tool in TOOLS for suffix in ("", "_intro")} | {f"tools.run_{t}" for t in TOOLS}
    keys |= {f"tools.method_{m}" for m in DYNAMIC_METHODS} | {f"tools.{c}" for c in TABLE_COLUMNS}
    keys |= {f"slider_{kind}.{name}" for kind in ("field", "help") for name in SLIDER_FIELDS}
    keys |= {f"slider.method_{m}" for m in METHODS}
    keys |= {f"slider.section_{s}" for s in ("training", "merge", "paired", "preview")}
    keys |= {f"stage.kind_{k}" for k in ("train", "merge", "resize", "preview")} | {"stage.side_low", "stage.side_high"}
    return keys


def test_every_key_used_by_the_code_is_in_both_catalogs():
    used = _keys_used_in_code() | _dynamic_keys()
    assert used - set(EN["ui"]) == set()
    assert used - set(JA["ui"]) == set()


def test_every_section_has_a_title_in_both_languages():
    """Accordion titles come from the catalogs (the fallback would show the bare section name)."""
    for tab in TABS:
        for section, specs in sections_for_tab(tab):
            if section == "basic":
                continue
            assert f"section.{tab}.{section}" in EN["ui"], (tab, section)
            assert f"section.{tab}.{section}" in JA["ui"], (tab, section)
            assert i18n.section_title(tab, section, "ja") != i18n.section_title(tab, section, "en")
    assert {s for s, _ in sections_for_tab("advanced")} >= {"network", "memory", "buckets", "captions", "noise",
                                                              "saving"}


def test_japanese_has_every_page_string_with_the_same_placeholders():
    assert set(JA["ui"]) == set(EN["ui"])
    for key, text in EN["ui"].items():
        assert set(PLACEHOLDER.findall(JA["ui"][key])) <= set(PLACEHOLDER.findall(text)), key
        assert JA["ui"][key].strip(), key


def test_japanese_has_label_and_help_for_every_field():
    names = TrainConfig.field_names()
    assert sorted(JA["fields"]) == sorted(names)
    for name in names:
        assert JA["fields"][name]["label"].strip() and JA["fields"][name]["help"].strip(), name
        assert i18n.field_help(name, "ja") != i18n.field_help(name, "en"), name


def test_japanese_has_every_validation_code():
    codes = engine.validation_codes()  # derived from the rules' @rule declarations
    assert codes
    assert set(codes) - set(JA["validation"]) == set()


def test_validation_templates_use_only_their_params():
    """Each template's {placeholders} are among the params the rule sends (read from the validation source)."""
    source = "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "trainer/preflight").glob("*.py")))
    for code, template in JA["validation"].items():
        calls = [m.end() for m in re.finditer(rf'(?:ERROR|WARNING|level), "{code}"', source)]
        assert f'"{code}"' in source, code
        if not calls:
            continue  # the code reaches issue() through a variable; nothing to check statically
        params: set[str] = set()
        for start in calls:  # the keyword arguments up to the end of the issue(...) call
            depth, end = 1, start
            while depth and end < len(source):
                depth += {"(": 1, ")": -1}.get(source[end], 0)
                end += 1
            params |= set(re.findall(r"\b(\w+)=", source[start:end]))
        missing = set(PLACEHOLDER.findall(template)) - params - {"message"}
        assert not missing, (code, missing)


def test_issue_text_fills_templates():
    text = i18n.issue_text("dir_holds_images", "english", {"path": "/x/img", "parent": "/x", "count": 4,
                                                           "pattern": "<repeats>_<token> <class>"}, "ja")
    assert "/x/img" in text and "/x" in text and "4" in text and "親フォルダ" in text
    assert i18n.issue_text("dir_holds_images", "english text", {}, "en") == "english text"
    assert i18n.issue_text("no_such_code", "english text", {}, "ja") == "english text"


def test_templates_missing_a_param_fall_back_to_english():
    # the engine re-checks some rules without params: never show "{steps}" to the user
    assert i18n.issue_text("bucket_steps_not_32", "english text", {}, "ja") == "english text"
    assert "48" in i18n.issue_text("bucket_steps_not_32", "english text", {"steps": 48}, "ja")


def test_params_that_name_fields_show_the_field_labels():
    """A finding's params carry field names, never English labels; the page shows the labels of its language."""
    text = i18n.issue_text("te_cache_caption_changes", "english",
                           {"caption_fields": ["shuffle_caption", "caption_dropout_rate"]}, "ja")
    assert JA["fields"]["shuffle_caption"]["label"] in text and JA["fields"]["caption_dropout_rate"]["label"] in text
    assert "shuffle_caption" not in text
    text = i18n.issue_text("cache_latents_disabled", "english", {"augmentation_fields": ["random_crop"]}, "ja")
    assert JA["fields"]["random_crop"]["label"] in text and "random_crop" not in text


def test_the_rules_send_field_names_in_params(tmp_path):
    from trainer.config import TrainConfig
    from trainer.findings import names_fields
    from trainer.preflight import validate

    cfg = TrainConfig(cache_text_encoder_outputs=True, network_train_unet_only=True, shuffle_caption=True,
                      caption_dropout_rate=0.1, cache_latents=True, color_aug=True, random_crop=True)
    findings = {f.code: f for f in validate(cfg, cuda_available=False)}
    fields = set(TrainConfig.field_names())
    for code in ("te_cache_caption_changes", "cache_latents_disabled"):
        named = {k: v for k, v in findings[code].params.items() if names_fields(k)}
        assert named and all(set(v) <= fields for v in named.values()), (code, findings[code].params)


def test_engine_events_in_japanese():
    # a refusal from validation carries the rule's params: the validation template
    refusal = {"type": "error", "code": "bucket_steps_not_32", "message": "Bucket resolution steps 48 ...",
               "field": "bucket_reso_steps", "hint": None, "params": {"steps": 48}}
    message, hint = i18n.engine_event_text(refusal, "ja")
    assert "48" in message and "32 の倍数" in message and hint == ""
    assert i18n.engine_event_text(refusal, "en") == ("Bucket resolution steps 48 ...", "")
    # a code both catalogs know: with params it is the validation finding, without it the engine failure
    both = {"code": "nothing_to_train", "message": "no LoRA parameters", "hint": "set a rate", "params": {}}
    assert i18n.engine_event_text(both, "ja")[0] == JA["validation"]["nothing_to_train"]
    assert i18n.engine_event_text(dict(both, params=None), "ja")[0].startswith("学習するものがありません")
    # an engine failure: the engine_errors entry, with the engine's message inside
    oom = {"code": "out_of_memory", "message": "CUDA out of memory", "hint": "lower the batch size"}
    message, hint = i18n.engine_event_text(oom, "ja")
    assert "CUDA out of memory" in message and "バッチサイズ" in hint
    # a warning the engine sends without params, whose template needs none
    warning = {"type": "warning", "code": "te_cache_with_te_training", "message": "not cached", "field": None}
    assert "キャッシュ" in i18n.engine_event_text(warning, "ja")[0]
    # unknown codes stay in English
    assert i18n.engine_event_text({"code": "new_code", "message": "m", "hint": "h"}, "ja") == ("m", "h")


def test_engine_refusal_is_rendered_translated_in_the_panel():
    from lora_gui.run_view import ViewState
    from lora_gui.panel_view import render_status

    state = ViewState(status="failed")
    state.errors.append({"type": "error", "code": "te_cache_caption_changes", "message": "english",
                         "field": "cache_text_encoder_outputs", "hint": None,
                         "params": {"caption_fields": ["shuffle_caption"]}})
    html = render_status(state, "ja")
    assert "キャプションのシャッフル" in html and "english" not in html
    assert 'data-code="te_cache_caption_changes"' in html


@pytest.mark.parametrize("header, lang", [("ja-JP,ja;q=0.9,en;q=0.8", "ja"), ("en-US,en;q=0.9", "en"),
                                          ("fr-FR,ja;q=0.5", "ja"), ("", "en"), ("de", "en")])
def test_accept_language(header, lang):
    assert i18n.pick_language(header) == lang
