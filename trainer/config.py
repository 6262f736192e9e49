"""The one parameter set of a training run.

`TrainConfig` is the single source of truth: the web UI builds its fields from the
metadata attached here (label, help, choices, range, tab), presets are its flat JSON,
and the engine reads it. Field names are sd-scripts argument names wherever one exists.

This module must import without torch: the web process uses it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from trainer.findings import Finding
# FieldError, coerce_value, field_type and param are re-exported: `from trainer.config import param` keeps working.
from trainer.params import FieldError, ParamError, coerce_value, field_type, param, read_values  # noqa: F401
from trainer.settings.advanced import AdvancedSettings
from trainer.settings.choices import *  # noqa: F401,F403  (re-exported: `from trainer.config import OPTIMIZERS`)
from trainer.settings.choices import FORMAT_VERSION, MIGRATIONS, TABS, parse_resolution  # noqa: F401
from trainer.settings.folders import FolderSettings
from trainer.settings.noise import NoiseSettings
from trainer.settings.parameters import ParameterSettings
from trainer.settings.samples import SampleSettings
from trainer.settings.source_model import SourceModelSettings


# The bases in reverse tab order: a dataclass takes its bases' fields from the last base to the first, so
# the fields (and the form) follow the tabs: source model, folders, parameters, advanced, samples.
@dataclass
class TrainConfig(SampleSettings, NoiseSettings, AdvancedSettings, ParameterSettings, FolderSettings,
                  SourceModelSettings):
    """Every parameter of a run (declared in trainer/settings/), and what the engine asks of them."""

    @classmethod
    def fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format_version": FORMAT_VERSION}
        data.update(dataclasses.asdict(self))
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, partial: bool = True) -> "TrainConfig":
        """Build a config from a flat dict, raising ConfigError naming every bad field.

        With partial=True missing keys keep their defaults (presets may be sparse).
        """
        values = read_values(cls, data, version=FORMAT_VERSION, migrations=MIGRATIONS, partial=partial)
        return cls(**values)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "TrainConfig":
        text = Path(path).read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError([FieldError("", f"{path} is not valid JSON: {exc}")]) from None
        if not isinstance(data, dict):
            raise ConfigError([FieldError("", f"{path} must hold a JSON object")])
        return cls.from_dict(data)

    def save(self, path: Union[str, Path]) -> None:
        from trainer.fileio import atomic_write_text

        atomic_write_text(Path(path), self.to_json() + "\n")

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def validate(self) -> list["ValidationIssue"]:
        """Per-field errors and warnings (see trainer.validation)."""
        from trainer.validation import validate

        return validate(self)

    # Derived values the engine and UI both need -------------------------------------
    def resolution_wh(self) -> tuple[int, int]:
        return parse_resolution(self.resolution)

    def effective_unet_lr(self) -> float:
        if self.network_train_text_encoder_only:
            return 0.0
        return self.learning_rate if self.unet_lr is None else self.unet_lr

    def effective_text_encoder_lr(self) -> float:
        if self.network_train_unet_only:
            return 0.0
        return self.learning_rate if self.text_encoder_lr is None else self.text_encoder_lr

    def loraplus_ratio(self, part: str) -> float:
        """LoRA+ ratio of "unet" or "text_encoder": its own ratio, else loraplus_lr_ratio (0 = off)."""
        own = self.loraplus_unet_lr_ratio if part == "unet" else self.loraplus_text_encoder_lr_ratio
        return float(own or self.loraplus_lr_ratio or 0.0)

    def uses_conv_lora(self) -> bool:
        return self.lora_type == "LoCon"


# A run/preset file with bad fields (`errors` names each field): the parameter base's one error type.
ConfigError = ParamError


# One finding of validate(): the project's one finding type (trainer.findings), under its old name.
ValidationIssue = Finding


def iter_field_meta() -> Iterator[tuple[dataclasses.Field, dict[str, Any]]]:
    """Fields with their UI metadata, in declaration order."""
    for f in dataclasses.fields(TrainConfig):
        yield f, dict(f.metadata)
