"""Presets: the engine's flat JSON (TrainConfig.to_dict), uploads and downloads.

The shipped presets (presets/) are read-only; the page saves the user's own in presets/user/,
and never replaces one without being told to. Paths inside the app folder are stored relative
to it ('./demo/img') and resolved on load, so presets work wherever the app is unpacked.
kohya_ss GUI configs load too, through the engine's importer, which lists what it could not map.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from lora_gui import APP_DIR, engine
from lora_gui.family import model_family
from lora_gui.paths import MODEL_FIELD, relativize_config_paths, resolve_config_paths
from trainer.config import ConfigError, TrainConfig
from trainer.families.traits import SDXL

PRESET_DIR = Path(os.environ.get("LORA_GUI_PRESETS") or APP_DIR / "presets")  # the env var is for tests
USER_PRESET_DIR = Path(os.environ.get("LORA_GUI_USER_PRESETS") or PRESET_DIR / "user")
DEFAULT_PRESET = "cpu_demo"
_NAME_RE = re.compile(r"^[\w\- .()\u3040-\u30ff\u4e00-\u9fff]{1,80}$")


@dataclass
class LoadedPreset:
    config: TrainConfig
    unmapped: list[str] = field(default_factory=list)
    kohya: bool = False
    keys: frozenset[str] = frozenset()  # fields the file sets; the others keep what the form shows
    sdxl_flag: Optional[bool] = None  # a kohya_ss config's "sdxl" checkbox


@dataclass(frozen=True)
class PresetFolders:
    shipped: Path  # read-only in the page
    user: Path  # where "Save as preset" writes


FOLDERS = PresetFolders(PRESET_DIR, USER_PRESET_DIR)


class PresetError(Exception):
    """A preset could not be read; `key`/`params` name the reason in the catalog."""

    def __init__(self, key: str, **params: Any):
        super().__init__(key)
        self.key = key
        self.params = params


def _names(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob("*.json")} if folder.is_dir() else set()


def list_presets(folders: PresetFolders = FOLDERS) -> list[str]:
    """Shipped and user presets by name (a user file may not shadow a shipped one)."""
    return sorted(_names(folders.shipped) | _names(folders.user))


def is_shipped(name: str, folders: PresetFolders = FOLDERS) -> bool:
    return name.strip() in _names(folders.shipped)


def preset_path(name: str, folders: PresetFolders = FOLDERS) -> Optional[Path]:
    """The file of preset `name`: the shipped one if there is one, else the user's; None if neither."""
    for folder in (folders.shipped, folders.user):
        path = folder / f"{name}.json"
        if valid_name(name) and path.is_file():
            return path
    return None


def valid_name(name: str) -> bool:
    return bool(_NAME_RE.match(name.strip())) and not name.strip().startswith(".")


def parse_preset(data: Any, base: Path = APP_DIR) -> LoadedPreset:
    """A preset dict (ours or kohya_ss's) as a config with its paths resolved."""
    if not isinstance(data, dict):
        raise PresetError("preset.not_object")
    kohya = engine.is_kohya_config(data)
    try:
        cfg, unmapped = engine.load_any_config(data)
    except ConfigError as exc:
        raise PresetError("preset.bad_fields", fields="; ".join(str(e) for e in exc.errors)) from None
    resolved = resolve_config_paths(cfg.to_dict(), base)
    resolved.pop("format_version", None)
    keys = engine.kohya_fields(data) if kohya else frozenset(data) & frozenset(TrainConfig.field_names())
    sdxl_flag = data["sdxl"] if kohya and isinstance(data.get("sdxl"), bool) else None
    return LoadedPreset(TrainConfig.from_dict(resolved), list(unmapped), kohya, keys, sdxl_flag)


def made_for_sdxl(loaded: LoadedPreset) -> bool:
    """The preset is for SDXL only when it says so: its model is SDXL, a kohya_ss config has its SDXL
    box ticked, or it sets an SDXL-only option away from its default. (Saved presets list every
    field, SDXL-only ones included, so merely naming one proves nothing.)"""
    if loaded.sdxl_flag is not None:
        return loaded.sdxl_flag
    if MODEL_FIELD in loaded.keys:
        family = model_family(loaded.config.pretrained_model_name_or_path)
        if family:
            return family == SDXL.id
    defaults = TrainConfig()
    return any(name in loaded.keys and getattr(loaded.config, name) != getattr(defaults, name) for name in SDXL.own_fields)


def read_preset_file(path: Path, base: Path = APP_DIR) -> LoadedPreset:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PresetError("preset.unreadable", path=str(path), error=str(exc)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PresetError("preset.not_json", path=Path(path).name, error=str(exc)) from None
    return parse_preset(data, base)


def load_preset(name: str, folders: PresetFolders = FOLDERS) -> LoadedPreset:
    path = preset_path(name, folders)
    if path is None:
        raise PresetError("preset.missing", name=name)
    return read_preset_file(path)


def preset_json(cfg: TrainConfig) -> str:
    """The flat JSON of a config, paths inside the app folder made relative."""
    return json.dumps(relativize_config_paths(cfg.to_dict()), indent=2, ensure_ascii=False) + "\n"


def save_preset(name: str, cfg: TrainConfig, folders: PresetFolders = FOLDERS, *, overwrite: bool = False) -> Path:
    """Write a user preset. A shipped name is refused; an existing user preset only with `overwrite`."""
    name = name.strip()
    if not valid_name(name):
        raise PresetError("preset.bad_name", name=name)
    if is_shipped(name, folders):
        raise PresetError("preset.shipped_read_only", name=name)
    path = folders.user / f"{name}.json"
    if path.exists() and not overwrite:
        raise PresetError("preset.exists", name=name, path=str(path))
    folders.user.mkdir(parents=True, exist_ok=True)
    from trainer.fileio import atomic_write_text

    atomic_write_text(path, preset_json(cfg))
    return path
