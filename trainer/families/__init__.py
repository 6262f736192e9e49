"""Model families (SD1.x, SD2.x, SDXL): detection, loading, conditioning, LoRA naming, sampling.

Importing this package does not import torch (the web process uses `detect`); the loaders are
imported when a model is loaded.

    info = resolve_model_info(cfg)            # torch-free
    family, comp = load_model(cfg)            # engine
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from trainer.families.detect import detect_model, resolve_model_info
from trainer.families.model_info import ModelInfo, ModelPathError

if TYPE_CHECKING:
    from trainer.config import TrainConfig
    from trainer.families.base import Components, ModelFamily


def stay_offline() -> None:
    """Training and the tools never reach for a model hub: every load passes local_files_only=True as
    well, this covers library paths that do not take it. Set by the entry points and load_model, not at
    import: the web process imports this package, and downloads when the user asks (lora_gui/hub_download.py)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


__all__ = ["ModelInfo", "ModelPathError", "detect_model", "resolve_model_info", "get_family", "load_model",
           "stay_offline"]


def get_family(info: ModelInfo) -> "ModelFamily":
    """The ModelFamily for a detected model."""
    from trainer.families.sd import SD1Family, SD2Family
    from trainer.families.sdxl import SDXLFamily

    families = {"sd1": SD1Family, "sd2": SD2Family, "sdxl": SDXLFamily}
    if info.family not in families:
        raise ModelPathError(f"Unsupported model family {info.family!r}.", "Choose an SD 1.x, SD 2.x or SDXL model.")
    return families[info.family](info)


def load_model(cfg: "TrainConfig") -> tuple["ModelFamily", "Components"]:
    """Detect the base model, merge the user's v2/v_parameterization flags, and load it (fp32, CPU)."""
    stay_offline()
    info = resolve_model_info(cfg)
    family = get_family(info)
    return family, family.load(cfg, info)
