"""Path fields: presets store paths relative to the app folder; the form shows absolute ones."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lora_gui import APP_DIR
from trainer.config import iter_field_meta

DATA_ENV = "LORA_GUI_DATA"  # another data folder (tests, a second copy of the app)


def data_dir() -> Path:
    """The app's own state (the job record; later the job queue and history): <app>/data, kept out of git."""
    return Path(os.environ.get(DATA_ENV) or APP_DIR / "data")


def job_record_path() -> Path:
    """Where the server records its job (pid, files, settings) so a restarted server finds it again."""
    return data_dir() / "jobs" / "current.json"


PATH_FIELDS: tuple[str, ...] = tuple(f.name for f, meta in iter_field_meta() if meta.get("widget") == "path")


def looks_like_hub_id(text: str) -> bool:
    """'owner/name' that is not a local folder: a Hugging Face id, kept as written.

    Presets write local paths as './folder/model' so they are never mistaken for ids.
    """
    parts = text.split("/")
    return (len(parts) == 2 and all(parts) and not text.startswith((".", "~", "/"))
            and "\\" not in text and ":" not in text and not (APP_DIR / text).exists())


MODEL_FIELD = "pretrained_model_name_or_path"


def resolve_path(value: str, base: Path = APP_DIR, *, allow_hub_id: bool = False) -> str:
    """A relative path becomes absolute against `base`; '' (and hub ids where allowed) stay as they are."""
    text = (value or "").strip()
    if not text or (allow_hub_id and looks_like_hub_id(text)):
        return text
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = base / path
    return str(path.resolve())


def relativize_path(value: str, base: Path = APP_DIR) -> str:
    """Paths inside `base` are stored relative to it (portable presets); others unchanged."""
    text = (value or "").strip()
    if not text:
        return text
    path = Path(text)
    if not path.is_absolute():
        return text
    try:
        return "./" + path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return text


def resolve_config_paths(data: dict[str, Any], base: Path = APP_DIR) -> dict[str, Any]:
    return {k: (resolve_path(v, base, allow_hub_id=(k == MODEL_FIELD)) if k in PATH_FIELDS and isinstance(v, str) else v)
            for k, v in data.items()}


def relativize_config_paths(data: dict[str, Any], base: Path = APP_DIR) -> dict[str, Any]:
    return {k: (relativize_path(v, base) if k in PATH_FIELDS and isinstance(v, str) else v) for k, v in data.items()}
