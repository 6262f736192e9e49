"""One optimizer step: unscale, clip, step, schedule, zero, then kohya's max-norm (shared by every loop)."""

from __future__ import annotations

from typing import Any, Optional

import torch


def optimizer_step(optimizer: torch.optim.Optimizer, lr_scheduler: Any, params: list[torch.nn.Parameter], *,
                   grad_scaler: Optional[torch.amp.GradScaler], max_grad_norm: float, network: Any,
                   scale_weight_norms: float) -> None:
    if grad_scaler is not None:
        grad_scaler.unscale_(optimizer)
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if grad_scaler is not None:
        grad_scaler.step(optimizer)
        grad_scaler.update()
    else:
        optimizer.step()
    lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if scale_weight_norms > 0:
        network.apply_max_norm(scale_weight_norms)
