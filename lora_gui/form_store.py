"""The form survives a page reload: every change is copied into the browser's storage (gr.BrowserState,
localStorage), and a reloaded page puts the values back (unless a training runs: then the page shows
that run's settings). Copying happens in the browser (a JavaScript-only event), so typing costs no
server round trip.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import gradio as gr

from lora_gui import APP_DIR
from lora_gui.form import FIELDS, FieldSpec

STORAGE_KEY = "lora_gui_form_v1"


def make_store() -> gr.BrowserState:
    # a fixed key and secret per installation, so the stored form outlives a server restart
    secret = hashlib.sha256(str(APP_DIR).encode("utf-8")).hexdigest()[:32]
    return gr.BrowserState(None, storage_key=STORAGE_KEY, secret=secret)


def save_js() -> str:
    """JavaScript for an event whose inputs are the fields (FIELDS order): {field name: value}."""
    names = json.dumps([s.name for s in FIELDS])
    return f"(...values) => {{ const names = {names}; return Object.fromEntries(names.map((n, i) => [n, values[i]])); }}"


def restored_values(stored: Any) -> list[Any]:
    """Stored values in FIELDS order; gr.skip() for a field without a usable stored value (a field
    added since, or a value this version does not accept: it keeps what the page shows)."""
    stored = stored if isinstance(stored, dict) else {}
    return [stored[s.name] if s.name in stored and _usable(s, stored[s.name]) else gr.skip() for s in FIELDS]


def has_values(stored: Any) -> bool:
    return isinstance(stored, dict) and any(s.name in stored for s in FIELDS)


def _usable(spec: FieldSpec, value: Any) -> bool:
    if spec.choices is not None:
        return value in spec.choices
    if spec.kind is bool:
        return isinstance(value, bool)
    if spec.kind in (int, float) and not spec.optional:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str)  # text, paths, and optional numbers (a text box: blank = default)
