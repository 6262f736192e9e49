"""Presets: the engine's flat JSON (TrainConfig.to_dict) in presets/, uploads and downloads.

Paths inside the app folder are stored relative to it ('./demo/img') and resolved on load,
so the shipped presets work wherever the app is unpacked. kohya_ss GUI configs load too,
through the engine's importer, which lists what it could not map.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_gui import APP_DIR, engine
from lora_gui.paths import relativize_config_paths, resolve_config_paths
from trainer.config import ConfigError, TrainConfig

PRESET_DIR = Path(os.environ.get("LORA_GUI_PRESETS") or APP_DIR / "presets")  # the env var is for tests
DEFAULT_PRESET = "cpu_demo"
_NAME_RE = re.compile(r"^[\w\- .()\u3040-\u30ff\u4e00-\u9fff]{1,80}$")


@dataclass
class LoadedPreset:
    config: TrainConfig
    unmapped: list[str] = field(default_factory=list)
    kohya: bool = False
    keys: frozenset[str] = frozenset()  # fields the file sets; the others keep what the form shows


class PresetError(Exception):
    """A preset could not be read; `key`/`params` name the reason in the catalog."""

    def __init__(self, key: str, **params: Any):
        super().__init__(key)
        self.key = key
        self.params = params


def list_presets(folder: Path = PRESET_DIR) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json"))


def valid_name(name: str) -> bool:
    return bool(_NAME_RE.match(name.strip())) and not name.strip().startswith(".")


def parse_preset(data: Any, base: Path = APP_DIR) -> LoadedPreset:
    """A preset dict (ours or kohya_ss's) as a config with its paths resolved."""
    if not isinstance(data, dict):
        raise PresetError("preset.not_object")
    kohya = "format_version" not in data and any(k in data for k in ("LoRA_type", "epoch", "max_resolution"))
    try:
        cfg, unmapped = engine.load_any_config(data)
    except ConfigError as exc:
        raise PresetError("preset.bad_fields", fields="; ".join(str(e) for e in exc.errors)) from None
    resolved = resolve_config_paths(cfg.to_dict(), base)
    resolved.pop("format_version", None)
    keys = frozenset(TrainConfig.field_names()) if kohya else frozenset(data) & frozenset(TrainConfig.field_names())
    return LoadedPreset(TrainConfig.from_dict(resolved), list(unmapped), kohya, keys)


def read_preset_file(path: Path, base: Path = APP_DIR) -> LoadedPreset:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PresetError("preset.unreadable", path=str(path), error=str(exc)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PresetError("preset.not_json", path=Path(path).name, error=str(exc)) from None
    return parse_preset(data, base)


def load_preset(name: str, folder: Path = PRESET_DIR) -> LoadedPreset:
    path = folder / f"{name}.json"
    if not path.is_file():
        raise PresetError("preset.missing", name=name)
    return read_preset_file(path)


def preset_json(cfg: TrainConfig) -> str:
    """The flat JSON of a config, paths inside the app folder made relative."""
    return json.dumps(relativize_config_paths(cfg.to_dict()), indent=2, ensure_ascii=False) + "\n"


def save_preset(name: str, cfg: TrainConfig, folder: Path = PRESET_DIR) -> Path:
    name = name.strip()
    if not valid_name(name):
        raise PresetError("preset.bad_name", name=name)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    from trainer.fileio import atomic_write_text

    atomic_write_text(path, preset_json(cfg))
    return path
