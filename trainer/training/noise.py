"""Noise, timesteps, targets and loss weights of the DDPM objective (sd-scripts' formulas)."""

from __future__ import annotations

from functools import lru_cache
from typing import Optional

import torch
import torch.nn.functional as F


# sd-scripts' schedule (DDPM, scaled_linear 0.00085 -> 0.012, 1000 steps): used where a model's
# scheduler config leaves a value out, as sd-scripts hard-codes it.
KOHYA_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear"}


def alphas_cumprod(scheduler_config: Optional[dict] = None) -> torch.Tensor:
    """ᾱ_t of the forward process a scheduler config describes: diffusers' DDPMScheduler builds it from
    the model's own values (beta schedule, range, steps, trained betas, zero-SNR rescaling), with
    kohya's values where the config has none."""
    from diffusers import DDPMScheduler

    given = {key: value for key, value in (scheduler_config or {}).items() if not key.startswith("_")}
    return DDPMScheduler.from_config({**KOHYA_SCHEDULE, **given}).alphas_cumprod.clone()


class NoiseSchedule:
    """What the loss needs from the forward process: add noise, build the target, SNR."""

    def __init__(self, prediction_type: str, alphas_cumprod: Optional[torch.Tensor] = None):
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"unsupported prediction type {prediction_type!r}")
        self.prediction_type = prediction_type
        self.alphas_cumprod = _default_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod
        self.snr = self.alphas_cumprod / (1.0 - self.alphas_cumprod)

    @classmethod
    def from_scheduler_config(cls, scheduler_config: dict, *, zero_terminal_snr: bool = False) -> "NoiseSchedule":
        """The schedule of a loaded model (`Components.scheduler_config`, which holds the prediction type).
        `zero_terminal_snr`: betas rescaled so the last timestep is pure noise (diffusers' rescaling); its ᾱ
        is kept a hair above 0 so that its SNR (and the weights divided by it) stay finite."""
        config = dict(scheduler_config, rescale_betas_zero_snr=True) if zero_terminal_snr else scheduler_config
        alpha_bar = alphas_cumprod(config)
        if zero_terminal_snr:
            alpha_bar[-1] = max(float(alpha_bar[-1]), 2.0 ** -24)
        return cls(scheduler_config.get("prediction_type", "epsilon"), alpha_bar)

    def _coeffs(self, timesteps: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.alphas_cumprod.to(like.device)[timesteps].to(like.dtype)
        shape = (-1,) + (1,) * (like.dim() - 1)
        return a.sqrt().view(shape), (1.0 - a).sqrt().view(shape)

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        sa, s1a = self._coeffs(timesteps, latents)
        return sa * latents + s1a * noise

    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "epsilon":
            return noise
        sa, s1a = self._coeffs(timesteps, latents)
        return sa * noise - s1a * latents  # v = √ᾱ·ε − √(1−ᾱ)·x₀

    def min_snr_weights(self, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
        """Min-SNR-γ: min(SNR, γ)/SNR for ε targets, min(SNR, γ)/(SNR+1) for v targets."""
        snr = self.snr.to(timesteps.device)[timesteps]
        clipped = torch.clamp(snr, max=gamma)
        return clipped / (snr + 1.0) if self.prediction_type == "v_prediction" else clipped / snr


@lru_cache(maxsize=1)
def _default_alphas_cumprod() -> torch.Tensor:
    return alphas_cumprod()


def sample_timesteps(batch_size: int, min_timestep: int, max_timestep: int, generator: torch.Generator,
                     device: torch.device) -> torch.Tensor:
    """Uniform integer timesteps in [min, max); a constant when min >= max (as sd-scripts)."""
    if min_timestep >= max_timestep:
        return torch.full((batch_size,), min_timestep, dtype=torch.long, device=device)
    t = torch.randint(min_timestep, max_timestep, (batch_size,), generator=generator)
    return t.to(device)


def make_noise(latents: torch.Tensor, generator: torch.Generator, *, offset_type: str = "Original",
               noise_offset: float = 0.0, multires_iterations: int = 0, multires_discount: float = 0.3) -> torch.Tensor:
    """Gaussian noise plus the optional offset (per-channel constant) or multires (pyramid) noise."""
    shape = latents.shape
    noise = torch.randn(shape, generator=generator, dtype=torch.float32).to(latents.device, latents.dtype)
    if offset_type == "Multires" and multires_iterations > 0:
        noise = _pyramid_noise(noise, generator, multires_iterations, multires_discount)
    elif noise_offset > 0:
        offset = torch.randn((shape[0], shape[1], 1, 1), generator=generator).to(latents.device, latents.dtype)
        noise = noise + noise_offset * offset
    return noise


def _pyramid_noise(noise: torch.Tensor, generator: torch.Generator, iterations: int, discount: float) -> torch.Tensor:
    # sd-scripts shrinks the size cumulatively (size /= r**i each round); kept so results match.
    b, c, h, w = noise.shape
    sh, sw = h, w
    for i in range(iterations):
        r = float(torch.rand(1, generator=generator)) * 2 + 2  # r ~ U(2, 4)
        sh, sw = max(1, int(sh / r**i)), max(1, int(sw / r**i))
        low = torch.randn((b, c, sh, sw), generator=generator).to(noise.device, noise.dtype)
        noise = noise + F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False) * discount**i
        if sh == 1 or sw == 1:
            break
    return noise / noise.std()
