"""The loss options sd-scripts offers beyond plain MSE, with its formulas (kohya-reference §6):

- the element loss: l2, l1, huber `2c(√(d²+c²)−c)` or smooth_l1 `2(√(d²+c²)−c)`, whose threshold c follows
  the timestep (`huber_schedule`);
- the per-timestep weights, applied after the per-sample mean in sd-scripts' order: Min-SNR-γ,
  scale-v-pred-like-noise-pred, v-pred-like loss, debiased estimation;
- input-perturbation noise (`ip_noise_gamma`) on the noisy input only;
- masked loss: the element loss times the image's mask at latent size (trainer/data/masks.py).

Written here because no library offers them with sd-scripts' exact semantics (diffusers' training
examples carry Min-SNR only); the loop calls `LossTerms` through trainer/training/loss.py.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F

from trainer.training.noise import NoiseSchedule

SNR_CAP = 1000.0  # sd-scripts caps the SNR in the scale-v, v-pred-like and debiased weights


class LossTerms:
    """The configured loss of one run: `per_sample(pred, target, timesteps)` and `weights(timesteps)`."""

    def __init__(self, cfg: Any, schedule: NoiseSchedule):
        self.cfg, self.schedule = cfg, schedule
        self.v_prediction = schedule.prediction_type == "v_prediction"

    # ---- the element loss --------------------------------------------------------------------
    def per_sample(self, pred: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor,
                   mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The element loss averaged over C, H, W: one value per sample. `mask` (B, 1, H, W) in [0, 1] at
        pixel size: shrunk to the latents by area averaging and multiplied in before the mean, as
        sd-scripts' masked loss does (the mean still counts every element)."""
        diff = pred.float() - target.float()
        kind = self.cfg.loss_type
        if kind == "l2":
            loss = diff.square()
        elif kind == "l1":
            loss = diff.abs()
        else:
            c = self.huber_c(timesteps).to(diff.device).view(-1, *([1] * (diff.dim() - 1)))
            root = (diff.square() + c.square()).sqrt() - c
            loss = 2 * c * root if kind == "huber" else 2 * root
        if mask is not None:
            loss = loss * F.interpolate(mask.to(loss.device, loss.dtype), size=loss.shape[-2:], mode="area")
        return loss.mean(dim=tuple(range(1, diff.dim())))

    def huber_c(self, timesteps: torch.Tensor) -> torch.Tensor:
        """The Huber threshold of each sample's timestep: constant c·scale; exponential exp(−(−ln c/T)·t)·scale;
        snr (1−c)/(1+σ_t)² + c with σ_t = √((1−ᾱ)/ᾱ)."""
        cfg = self.cfg
        t = timesteps.float().cpu()
        if cfg.huber_schedule == "constant":
            return torch.full_like(t, cfg.huber_c * cfg.huber_scale)
        if cfg.huber_schedule == "exponential":
            rate = -math.log(cfg.huber_c) / len(self.schedule.alphas_cumprod)
            return torch.exp(-rate * t) * cfg.huber_scale
        alpha_bar = self.schedule.alphas_cumprod[timesteps.cpu()].float()
        sigmas = ((1.0 - alpha_bar) / alpha_bar).sqrt()
        return (1.0 - cfg.huber_c) / (1.0 + sigmas) ** 2 + cfg.huber_c

    # ---- the per-timestep weights ------------------------------------------------------------
    def apply_weights(self, loss: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """`loss` (per sample) with the configured timestep weights, in sd-scripts' order."""
        cfg = self.cfg
        if cfg.min_snr_gamma > 0:
            loss = loss * self.schedule.min_snr_weights(timesteps, cfg.min_snr_gamma).to(loss.device)
        snr = torch.clamp(self.schedule.snr.to(loss.device)[timesteps.to(loss.device)].float(), max=SNR_CAP)
        if cfg.scale_v_pred_loss_like_noise_pred and self.v_prediction:
            loss = loss * snr / (snr + 1.0)
        if cfg.v_pred_like_loss > 0:
            loss = loss + loss * cfg.v_pred_like_loss * (snr + 1.0) / snr
        if cfg.debiased_estimation_loss:
            loss = loss / (snr + 1.0) if self.v_prediction else loss / snr.sqrt()
        return loss

    # ---- input perturbation ------------------------------------------------------------------
    def input_noise(self, noise: torch.Tensor, generator: torch.Generator) -> Optional[torch.Tensor]:
        """The noise the input is noised with when it differs from the target's: ε + γ·ε′ (γ drawn in
        [0, γ) per step with random strength); None without ip_noise_gamma (nothing is drawn then)."""
        gamma = self.cfg.ip_noise_gamma
        if gamma <= 0:
            return None
        if self.cfg.ip_noise_gamma_random_strength:
            gamma = float(torch.rand(1, generator=generator)) * gamma
        extra = torch.randn(noise.shape, generator=generator, dtype=torch.float32).to(noise.device, noise.dtype)
        return noise + gamma * extra
