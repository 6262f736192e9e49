"""The scheduler config a loaded model trains and samples with: the model's own, over its family's defaults.

A diffusers folder brings scheduler/scheduler_config.json, a file written by this app embeds one; other
single files have none. Keys the model leaves out come from the family's bundled config (kohya's
schedule: DDPM, scaled_linear 0.00085 -> 0.012, 1000 steps). The prediction type is the settled one
(ModelInfo.v_parameterization: the files merged with the user's setting).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from trainer.families.model_info import ModelPathError
from trainer.families.traits import EPSILON, V_PREDICTION, family_traits

SCHEDULER_CONFIG = Path("scheduler") / "scheduler_config.json"


def training_scheduler_config(family: str, model_config: Optional[dict], *, v_parameterization: bool) -> dict:
    """The model's scheduler config (without diffusers' private "_" keys) over the family's bundled one."""
    bundled = json.loads((family_traits(family).bundled_config_dir / SCHEDULER_CONFIG).read_text(encoding="utf-8"))
    merged = {**bundled, **(model_config or {})}
    config = {key: value for key, value in merged.items() if not key.startswith("_")}
    config["prediction_type"] = V_PREDICTION if v_parameterization else EPSILON
    return config


def folder_scheduler_config(model_path: str) -> Optional[dict]:
    """A diffusers folder's scheduler config, or None when it has none."""
    path = Path(model_path).expanduser() / SCHEDULER_CONFIG
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelPathError(f"Cannot read the scheduler config {path}: {exc}",
                             "Repair or remove the file; without it the standard schedule is used.") from exc
    return config if isinstance(config, dict) else None
