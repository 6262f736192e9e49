"""The per-sample training loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def diffusion_loss(prediction: torch.Tensor, target: torch.Tensor, sample_weights: torch.Tensor) -> torch.Tensor:
    """MSE per sample (mean over C, H, W), times the per-sample weight, averaged over the batch."""
    per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    return (per_sample * sample_weights.to(per_sample.device)).mean()
