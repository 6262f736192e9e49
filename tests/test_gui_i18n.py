"""Translation catalogs: Japanese for every field, every page string and every validation code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lora_gui import engine, i18n
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
    keys |= set(re.findall(r'"((?:job|preset|prepare|print|start|file)\.[a-z_]+)"',
                           "\n".join(p.read_text(encoding="utf-8") for p in sources)))
    namespaces = {k.split(".")[0] for k in EN["ui"]}
    return {k for k in keys if k.split(".")[0] in namespaces}  # e.g. the label "run.json" is not a key


def _dynamic_keys() -> set[str]:
    keys = {f"tab.{t}" for t in TABS}
    keys |= {f"status.{s}" for s in ("idle", "starting", "running", "stopping", "completed", "stopped", "failed")}
    keys |= {f"quick_pick.{k}" for k in QUICK_PICKS}
    keys |= {"family.sd1", "family.sd2", "family.sdxl", "model_kind.diffusers", "model_kind.single_file",
             "model_kind.hub"}
    return keys


def test_every_key_used_by_the_code_is_in_both_catalogs():
    used = _keys_used_in_code() | _dynamic_keys()
    assert used - set(EN["ui"]) == set()
    assert used - set(JA["ui"]) == set()


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
    codes = engine.validation_codes()
    if not codes:
        pytest.skip("trainer/validation.py has not landed yet")
    assert set(codes) - set(JA["validation"]) == set()


def test_validation_templates_use_only_their_params():
    """Each template's {placeholders} are among the params the rule sends (read from the validation source)."""
    source = (ROOT / "trainer/validation.py").read_text(encoding="utf-8") if (ROOT / "trainer/validation.py").exists() else ""
    if not source:
        pytest.skip("trainer/validation.py has not landed yet")
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


@pytest.mark.parametrize("header, lang", [("ja-JP,ja;q=0.9,en;q=0.8", "ja"), ("en-US,en;q=0.9", "en"),
                                          ("fr-FR,ja;q=0.5", "ja"), ("", "en"), ("de", "en")])
def test_accept_language(header, lang):
    assert i18n.pick_language(header) == lang
