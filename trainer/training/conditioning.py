"""What the denoiser is conditioned on: images to latents (the VAE) and captions to the family's text
conditioning, with each frozen caption encoded once (optionally cached to disk before training)."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Callable

import torch

from trainer.config import TrainConfig
from trainer.events import EventWriter
from trainer.families.base import Components, ModelFamily

Conditioning = dict[str, torch.Tensor]


class Conditioner:
    """Encodes pixels and captions for one run. With a frozen text encoder every distinct caption is
    encoded once (a large saving on the CPU); a trained one is called every time, under autocast."""

    def __init__(self, cfg: TrainConfig, family: ModelFamily, comp: Components, *, device: torch.device,
                 vae_dtype: torch.dtype, train_text_encoder: bool,
                 autocast: Callable[[], AbstractContextManager]):
        self.cfg, self.family, self.comp = cfg, family, comp
        self.device, self.vae_dtype = device, vae_dtype
        self.train_text_encoder = train_text_encoder
        self.autocast = autocast
        self.cache: dict[str, Conditioning] = {}

    @torch.no_grad()
    def encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> scaled latents. A seeded generator keeps caching reproducible."""
        gen = torch.Generator(device="cpu").manual_seed(self.cfg.seed)
        dist = self.comp.vae.encode(pixel_values.to(self.device, self.vae_dtype)).latent_dist
        eps = torch.randn(dist.mean.shape, generator=gen, dtype=dist.mean.dtype).to(dist.mean.device)
        latents = torch.nan_to_num(dist.mean + dist.std * eps, nan=0.0)
        return latents * self.family.latent_scale

    def encode_text(self, captions: list[str]) -> Conditioning:
        if self.train_text_encoder:
            with self.autocast():
                return self.family.encode_prompts(self.comp, captions, **self._prompt_options())
        missing = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if missing:
            out = self.encode_frozen(missing)
            for i, caption in enumerate(missing):
                self.cache[caption] = {k: v[i:i + 1] for k, v in out.items()}
        # cached outputs may live on the CPU
        return {k: torch.cat([self.cache[c][k] for c in captions]).to(self.device) for k in self.cache[captions[0]]}

    def encode_frozen(self, captions: list[str]) -> Conditioning:
        """The frozen text encoders' conditioning of `captions` (no gradients)."""
        with torch.no_grad(), self.autocast():
            return self.family.encode_prompts(self.comp, captions, **self._prompt_options())

    def _prompt_options(self) -> dict:
        return dict(clip_skip=self.cfg.clip_skip, max_token_length=self.cfg.max_token_length)

    def cache_before_training(self, items: list[tuple[Path, str]], events: EventWriter) -> None:
        """sd-scripts' cache_text_encoder_outputs: every caption encoded once now; then the text encoders
        leave the GPU (sampling still encodes its prompts with them, on the CPU)."""
        from trainer.training.text_cache import cache_text_encoder_outputs

        cfg = self.cfg
        if self.train_text_encoder:
            events.emit("warning", code="te_cache_with_te_training", field="cache_text_encoder_outputs",
                        message="text-encoder outputs are not cached because the text encoder is trained")
            return
        model = Path(cfg.pretrained_model_name_or_path).expanduser()
        encoder_id = json.dumps({"model": str(model.resolve()) if model.exists() else str(model),
                                 "family": self.family.name, "clip_skip": cfg.clip_skip,
                                 "max_token_length": cfg.max_token_length}, sort_keys=True)
        events.emit("log", message="caching text-encoder outputs")
        cache, report = cache_text_encoder_outputs(items, self.encode_frozen, encoder_id=encoder_id,
                                                   to_disk=cfg.cache_text_encoder_outputs_to_disk)
        self.cache.update(cache)
        events.emit("log", message=report.summary())
        if self.device.type != "cpu":
            for text_encoder in self.comp.text_encoders:
                text_encoder.to("cpu", dtype=torch.float32)  # half precision is slow or unsupported on CPU
            events.emit("log", message="text encoders moved to the CPU")
