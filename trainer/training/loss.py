"""The training loss: the DDPM objective of a batch (sd-scripts' formulas).

The noise and timesteps are drawn for the whole (global) batch on every process from the same seeded
generator, and each process takes its slice: two processes with one image each then see exactly the
noise one process with both images sees, and the generator stays in step on all of them.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Callable, Optional

import torch

from trainer.config import TrainConfig
from trainer.families.base import Components, ModelFamily
from trainer.training.batches import Batch
from trainer.training.conditioning import Conditioner
from trainer.training.loss_terms import LossTerms
from trainer.training.noise import NoiseSchedule, make_noise, sample_timesteps


class DiffusionObjective:
    """`objective(batch)` -> the sum of this process's weighted per-sample losses (the loop divides by the
    global batch size). Also the slider's objective, one side at a time (`side_loss`)."""

    def __init__(self, cfg: TrainConfig, family: ModelFamily, comp: Components, conditioner: Conditioner,
                 schedule: NoiseSchedule, generator: torch.Generator, *, weight_dtype: torch.dtype,
                 autocast: Callable[[], AbstractContextManager]):
        self.cfg, self.family, self.comp, self.conditioner = cfg, family, comp, conditioner
        self.schedule, self.generator = schedule, generator
        self.weight_dtype, self.autocast = weight_dtype, autocast
        self.device = conditioner.device
        self.latent_channels = comp.vae.config.latent_channels
        self.latent_factor = 2 ** (len(comp.vae.config.block_out_channels) - 1)  # diffusers' vae_scale_factor
        self.terms = LossTerms(cfg, schedule)

    def draw(self, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise of `shape` and one timestep per sample, from the run's noise generator."""
        cfg = self.cfg
        like = torch.empty(shape, device=self.device)
        noise = make_noise(like, self.generator, offset_type=cfg.noise_offset_type, noise_offset=cfg.noise_offset,
                           multires_iterations=cfg.multires_noise_iterations,
                           multires_discount=cfg.multires_noise_discount)
        timesteps = sample_timesteps(shape[0], cfg.min_timestep, cfg.max_timestep, self.generator, self.device)
        return noise, timesteps

    def __call__(self, batch: Batch) -> torch.Tensor:
        data = batch.data
        noise, timesteps = self.draw(self._global_shape(batch))
        input_noise = self.terms.input_noise(noise, self.generator)  # drawn for the whole batch, as the noise
        if data is None:
            return torch.zeros((), device=self.device)
        if data.get("latents") is not None:
            latents = data["latents"].to(self.device, torch.float32)
        else:
            latents = self.conditioner.encode_pixels(data["pixel_values"]).float()
        local = slice(batch.offset, batch.offset + latents.shape[0])
        weights = torch.as_tensor(data["loss_weights"], dtype=torch.float32, device=self.device)
        cond = self.conditioner.encode_text(data["captions"])
        return self.side_loss(latents, noise[local], timesteps[local], cond, data, weights,
                              input_noise=None if input_noise is None else input_noise[local]).sum()

    def side_loss(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, cond: dict,
                  extras: dict, weights: torch.Tensor, *, input_noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The weighted per-sample losses of `latents` noised with `noise` (or `input_noise`, ip_noise_gamma's
        perturbed noise, while the target keeps `noise`) at `timesteps`."""
        noisy = self.schedule.add_noise(latents, noise if input_noise is None else input_noise, timesteps)
        with self.autocast():
            pred = self.family.predict(self.comp, noisy.to(self.weight_dtype), timesteps, cond, extras)
        loss = self.terms.per_sample(pred, self.schedule.target(latents, noise, timesteps), timesteps,
                                     mask=extras.get("masks"))
        return self.terms.apply_weights(loss * weights.to(loss.device), timesteps)

    def _global_shape(self, batch: Batch) -> tuple[int, int, int, int]:
        """The latents' shape of the whole batch (one bucket), known on a process without a slice too."""
        width, height = batch.bucket
        return (batch.size, self.latent_channels, height // self.latent_factor, width // self.latent_factor)
