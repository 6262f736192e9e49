"""Source model tab: the base model, VAE, clip skip, save format and precision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional  # noqa: F401  (annotations name it)

from trainer.params import param
from trainer.settings.choices import *  # noqa: F401,F403  (the choices and checks the declarations name)


@dataclass
class SourceModelSettings:
    pretrained_model_name_or_path: str = param(
        "", "Base model: a diffusers folder, a single .safetensors/.ckpt file, or a Hugging Face id already in the local cache.",
        tab="source_model", label="Pretrained model name or path", widget="path",
        accept=MODEL_ACCEPTS)
    v2: bool = param(False, "Stable Diffusion 2.x model. Detected from the weights when possible.",
                     tab="source_model", label="SD 2.x (v2)")
    v_parameterization: bool = param(
        False, "The model predicts v (SD 2.x 768-v models). Detected from the weights when possible.",
        tab="source_model", label="v-parameterization")
    vae: str = param("", "Optional separate VAE (file or diffusers folder) to use instead of the model's own.",
                     tab="source_model", label="VAE", widget="path", accept=MODEL_ACCEPTS)
    clip_skip: int = param(1, "Use the output of the N-th last text-encoder layer (1 = last, 2 is common for anime models).",
                           tab="source_model", label="Clip skip", min=1, max=12)
    save_model_as: str = param("safetensors", "File format of the saved LoRA.", tab="source_model",
                               label="Save trained model as", choices=("safetensors", "ckpt", "pt"))
    save_precision: str = param("fp16", "Precision of the saved LoRA weights.", tab="source_model",
                                label="Save precision", choices=SAVE_PRECISIONS)
