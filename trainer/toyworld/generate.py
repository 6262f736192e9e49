"""Batched sampling from a toy model, through the project's loader or through plain diffusers."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch

SAMPLE_STEPS = 25
GUIDANCE = 4.0
BATCH = 32


class ProjectSampler:
    """A model loaded the way training loads it, sampled with DDIM; an optional kohya LoRA at a weight."""

    def __init__(self, model_path: str | Path, lora_path: Optional[str | Path] = None, weight: float = 1.0):
        from trainer.tools.models import load_base_model

        self.loaded = load_base_model(model_path)
        self.family, self.comp = self.loaded.family, self.loaded.comp
        self.pipe = self.family.sampling_pipeline(self.comp, "ddim")
        self.patch = None
        if lora_path is not None:
            self.set_lora(lora_path, weight)

    def set_lora(self, lora_path: str | Path, weight: float) -> None:
        from trainer.network.kohya_format import read_lora_file
        from trainer.slider.preview import LoraPatch
        from trainer.tools.models import lora_layers

        if self.patch is not None:
            self.patch.remove()
        self.patch = LoraPatch(lora_layers(self.loaded, conv=True), read_lora_file(lora_path))
        self.patch.set(weight)

    def set_weight(self, weight: float) -> None:
        self.patch.set(weight)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], seed: int = 0) -> list[Any]:
        images = []
        for start in range(0, len(prompts), BATCH):
            chunk = list(prompts[start:start + BATCH])
            embeds = self.family.encode_prompts(self.comp, chunk)["encoder_hidden_states"]
            empty = self.family.encode_prompts(self.comp, [""])["encoder_hidden_states"].expand_as(embeds)
            images += self.pipe(prompt_embeds=embeds, negative_prompt_embeds=empty, **_common(seed + start)).images
        return images


class DiffusersSampler:
    """The same model through diffusers alone (`from_pretrained`, `load_lora_weights`): what users run."""

    def __init__(self, model_dir: str | Path, lora_path: Optional[str | Path] = None):
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        self.pipe = StableDiffusionPipeline.from_pretrained(str(model_dir), torch_dtype=torch.float32,
                                                            safety_checker=None, local_files_only=True)
        self.pipe.scheduler = DDIMScheduler.from_config(self.pipe.scheduler.config)
        self.pipe.set_progress_bar_config(disable=True)
        if lora_path is not None:
            self.pipe.load_lora_weights(str(Path(lora_path).parent), weight_name=Path(lora_path).name)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], seed: int = 0) -> list[Any]:
        images = []
        for start in range(0, len(prompts), BATCH):
            chunk = list(prompts[start:start + BATCH])
            images += self.pipe(prompt=chunk, negative_prompt=[""] * len(chunk), **_common(seed + start)).images
        return images


def _common(seed: int) -> dict:
    return dict(num_inference_steps=SAMPLE_STEPS, guidance_scale=GUIDANCE, output_type="pil",
                generator=torch.Generator("cpu").manual_seed(seed))
