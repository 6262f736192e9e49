"""What is known about a base model before loading it, and the names of an original checkpoint's parts.

Torch-free; shared by detection (`detect.py`) and the single-file reader and writer (`single_file.py`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Optional

from trainer.errors import TrainingError

# Files that can hold a whole base model (a diffusers folder is the other form).
MODEL_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")

# Key prefixes of the original (LDM / SGM) checkpoint layout.
UNET_PREFIX = "model.diffusion_model."
SD1_TE_PREFIX = "cond_stage_model.transformer."
SD2_TE_PREFIX = "cond_stage_model.model."
SDXL_PREFIX = "conditioner."
SDXL_TE1_PREFIX = "conditioner.embedders.0.transformer."  # CLIP ViT-L (transformers layout)
SDXL_TE2_PREFIX = "conditioner.embedders.1.model."  # OpenCLIP ViT-bigG
V_PRED_KEY = "v_pred"  # ComfyUI marks v-prediction checkpoints with this (empty) tensor
# Safetensors metadata key under which `save_single_file` stores the diffusers component configs.
EMBEDDED_CONFIG_KEY = "lora_gui.diffusers_configs"


class ModelPathError(TrainingError):
    """The base model (or VAE) path is missing, unreadable or not a supported model."""

    def __init__(self, message: str, hint: Optional[str] = None, *, field: str = "pretrained_model_name_or_path"):
        super().__init__("model_path", message, field=field, hint=hint)


@dataclass
class ModelInfo:
    """What the engine needs to know about a base model before loading it.

    family is None only for pickle checkpoints before they are loaded (detection needs torch).
    v_parameterization is None when nothing in the files says which target the model was trained for.
    """

    family: Optional[str]  # "sd1" | "sd2" | "sdxl"
    v2: bool
    v_parameterization: Optional[bool]
    kind: str  # "diffusers" | "single_file" | "hub"
    path: str
    notes: list[str] = field(default_factory=list)

    def with_notes(self, *notes: str) -> "ModelInfo":
        return replace(self, notes=[*self.notes, *notes])


def embedded_configs(metadata: Optional[dict]) -> Optional[dict]:
    """The diffusers component configs `save_single_file` stored in a file's metadata, if any."""
    raw = (metadata or {}).get(EMBEDDED_CONFIG_KEY)
    if not raw:
        return None
    try:
        configs = json.loads(raw)
    except ValueError:
        return None
    return configs if isinstance(configs, dict) else None
