"""The tools' boundary to full Stable Diffusion checkpoints (diffusers folders or single files).

Everything model-specific comes from the engine: `trainer.families` detects and loads the model and
names the LoRA roots, `trainer.network.targets` decides which layers are LoRA targets (sd-scripts'
rules). This module only turns that into {kohya module name: layer}, which is what extract (weights
of two models) and merge --sd_model (adding ΔW into a model) need.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from trainer.errors import TrainingError
from trainer.tools.errors import ToolError


@dataclass
class LoadedModel:
    family: Any  # trainer.families.base.ModelFamily
    comp: Any  # trainer.families.base.Components
    path: str

    @property
    def info(self):
        return self.comp.info

    def family_id(self) -> str:
        """"sd1", "sd2" or "sd2-v": what save_single_file expects."""
        if self.info.family == "sd2" and self.info.v_parameterization:
            return "sd2-v"
        return self.info.family

    def base_metadata(self) -> dict[str, str]:
        """ss_v2 / ss_base_model_version / modelspec.architecture of a LoRA for this model."""
        return {
            "ss_v2": str(bool(self.info.v2)),
            "ss_base_model_version": self.family.base_model_version(self.info),
            "ss_sd_model_name": Path(self.path).name,
            "modelspec.sai_model_spec": "1.0.1",
            "modelspec.architecture": f"{self.family.modelspec_architecture(self.info)}/lora",
            "modelspec.implementation": "diffusers",
        }


def load_base_model(path: str | os.PathLike, *, v2: bool = False, v_parameterization: bool = False) -> LoadedModel:
    """Load a Stable Diffusion model (fp32, CPU) the way training does."""
    from trainer.config import TrainConfig
    from trainer.families import load_model

    cfg = TrainConfig(pretrained_model_name_or_path=str(path), v2=v2, v_parameterization=v_parameterization)
    try:
        family, comp = load_model(cfg)
    except TrainingError as exc:
        raise ToolError(f"cannot load model {path}: {exc.message}", hint=exc.hint) from exc
    return LoadedModel(family, comp, str(path))


def lora_layers(model: LoadedModel, *, conv: bool = True) -> dict[str, torch.nn.Module]:
    """{kohya module name: nn.Linear / nn.Conv2d} for every LoRA target of the model.
    `conv` adds the ResNet / down- / upsampler layers (LoCon)."""
    from trainer.network.targets import find_lora_targets

    layers: dict[str, torch.nn.Module] = {}
    for root in model.family.lora_roots(model.comp):
        for target in find_lora_targets(root.module, root.kind, conv=conv):
            layers[model.family.kohya_module_name(root, target.path)] = target.module
    return layers


def module_weights(model: LoadedModel, *, conv: bool = True) -> dict[str, torch.Tensor]:
    """{kohya module name: weight} of every LoRA target (the input of extract_lora)."""
    return {name: layer.weight.detach() for name, layer in lora_layers(model, conv=conv).items()}


def save_model(model: LoadedModel, path: str | os.PathLike, *, save_precision: str = "float") -> Path:
    """Write the model as one original-layout checkpoint (.safetensors or .ckpt), atomically."""
    from trainer.families.single_file import save_single_file

    dtype = {"float": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[save_precision]
    comp = model.comp
    for part in (comp.unet, comp.vae, comp.text_encoder):
        part.to(dtype)
    parts = SimpleNamespace(
        unet=comp.unet,
        vae=comp.vae,
        text_encoder=comp.text_encoder,
        scheduler=SimpleNamespace(config=dict(comp.scheduler_config)),
    )
    return save_single_file(parts, Path(path), model.family_id())


def save_model_folder(model: LoadedModel, path: str | os.PathLike, *, save_precision: str = "float") -> Path:
    """Write the model as a diffusers folder, built under a temporary name and renamed when complete."""
    import shutil
    import tempfile

    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from trainer.fileio import current_umask

    dtype = {"float": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[save_precision]
    comp = model.comp
    for part in (comp.unet, comp.vae, comp.text_encoder):
        part.to(dtype)
    pipe = StableDiffusionPipeline(vae=comp.vae, text_encoder=comp.text_encoder, tokenizer=comp.tokenizer,
                                   unet=comp.unet, scheduler=DDIMScheduler.from_config(dict(comp.scheduler_config)),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it 0700; the folder is the user's ordinary output
        tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path
