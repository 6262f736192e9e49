"""Translation catalogs (English, Japanese) and the lookups the page uses.

English labels and help of parameters come from the config dataclass metadata (the single
source of truth); `en.json` holds only the page's own strings. `ja.json` holds the Japanese
for every page string, every parameter (label + help) and every validation code.
"""

from __future__ import annotations

import functools
import json
import string
from pathlib import Path
from typing import Any, Optional

from trainer.config import iter_field_meta
from trainer.findings import names_fields
from trainer.unused_fields import NOT_USED_YET

LANGUAGES: dict[str, str] = {"en": "English", "ja": "日本語"}
DEFAULT_LANGUAGE = "en"
_DIR = Path(__file__).resolve().parent
_FIELD_META = {f.name: meta for f, meta in iter_field_meta()}


@functools.lru_cache(maxsize=None)
def catalog(lang: str) -> dict[str, Any]:
    path = _DIR / f"{lang}.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def normalize(lang: Optional[str]) -> str:
    lang = (lang or "").strip().lower()
    for code in LANGUAGES:
        if lang == code or lang.startswith(code + "-") or lang.startswith(code + "_"):
            return code
    return DEFAULT_LANGUAGE


def pick_language(accept_language: Optional[str]) -> str:
    """The first supported language of an Accept-Language header (or navigator.language)."""
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, q = part.strip().partition(";q=")
        if not tag:
            continue
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            weight = 0.0
        ranked.append((-weight, i, tag))
    for _, _, tag in sorted(ranked):
        code = tag.split("-")[0].split("_")[0].lower()
        if code in LANGUAGES:
            return code
    return DEFAULT_LANGUAGE


class _SafeDict(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _format(template: str, params: dict[str, Any]) -> str:
    if not params:
        return template
    try:
        return string.Formatter().vformat(template, (), _SafeDict(params))
    except (ValueError, IndexError, AttributeError):
        return template


def t(key: str, lang: str, **params: Any) -> str:
    """A page string by key; falls back to English, then to the key itself."""
    template = catalog(normalize(lang)).get("ui", {}).get(key)
    if template is None:
        template = catalog(DEFAULT_LANGUAGE).get("ui", {}).get(key, key)
    return _format(template, params)


def has(key: str, lang: str) -> bool:
    return key in catalog(normalize(lang)).get("ui", {})


def field_label(name: str, lang: str) -> str:
    entry = catalog(normalize(lang)).get("fields", {}).get(name, {})
    return entry.get("label") or _FIELD_META.get(name, {}).get("label") or name.replace("_", " ").capitalize()


def field_help(name: str, lang: str) -> str:
    """The field's help; a field that changes nothing yet (trainer.unused_fields) says so after it."""
    entry = catalog(normalize(lang)).get("fields", {}).get(name, {})
    text = entry.get("help") or _FIELD_META.get(name, {}).get("help") or ""
    if name in NOT_USED_YET:
        text = t("field.not_used_yet", lang, help=text)
    return text


def section_title(tab: str, section: str, lang: str) -> str:
    key = f"section.{tab}.{section}"
    if has(key, lang) or has(key, DEFAULT_LANGUAGE):
        return t(key, lang)
    return section.replace("_", " ").capitalize()


def issue_text(code: str, message: str, params: Optional[dict[str, Any]], lang: str) -> str:
    """A validation finding in the page's language: the catalog template, else the engine's English.

    The template is used only when every {placeholder} it names has a value (the rule's params, or
    the engine's own `message`); otherwise the engine's English text is shown, never a bare "{steps}".
    """
    lang = normalize(lang)
    template = catalog(lang).get("validation", {}).get(code)
    if template is None and lang != DEFAULT_LANGUAGE:
        template = catalog(DEFAULT_LANGUAGE).get("validation", {}).get(code)
    if template is None:
        return message
    values = {k: _display(k, v, lang) for k, v in (params or {}).items()}
    values.setdefault("message", message)
    if not set(placeholders(template)) <= set(values):
        return message
    return _format(template, values)


def engine_event_text(event: dict[str, Any], lang: str) -> tuple[str, str]:
    """An engine `error` or `warning` event's message and hint in the page's language.

    Refusals that come from validation carry the rule's `params`: they use the validation
    template. Engine failures (out of memory, NaN loss, ...) use the `engine_errors` entry of
    their code. Anything the catalog does not know stays in the engine's English.
    """
    code = str(event.get("code") or "")
    message = str(event.get("message") or "")
    hint = str(event.get("hint") or "")
    params = event.get("params")
    lang = normalize(lang)
    has_template = code in catalog(lang).get("validation", {})
    if isinstance(params, dict) and has_template:
        return issue_text(code, message, params, lang), hint
    if code in catalog(lang).get("engine_errors", {}):
        return engine_error_text(code, message, hint, lang)
    if has_template:
        return issue_text(code, message, params if isinstance(params, dict) else {}, lang), hint
    return message, hint


def engine_error_text(code: str, message: str, hint: Optional[str], lang: str) -> tuple[str, str]:
    """An engine `error` event's message and hint, translated when the catalog knows the code."""
    entry = catalog(normalize(lang)).get("engine_errors", {}).get(code or "")
    if not entry:
        return message, hint or ""
    return (_format(entry.get("message", message), {"message": message}),
            _format(entry.get("hint", hint or ""), {"hint": hint or ""}))


def placeholders(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def _display(param: str, value: Any, lang: str = DEFAULT_LANGUAGE) -> str:
    """A param as the template shows it: field names as their labels in `lang`, lists joined, 2.0 as 2."""
    if names_fields(param):
        names = value if isinstance(value, (list, tuple)) else [value]
        labels = [t("issue.setting", lang, label=field_label(str(name), lang)) for name in names]
        return t("issue.list_separator", lang).join(labels)
    if isinstance(value, (list, tuple)):
        return t("issue.list_separator", lang).join(str(item) for item in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
