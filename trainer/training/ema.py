"""EMA of the trained LoRA weights: the saved files and the samples use the average, training goes on with
the raw weights.

diffusers' `EMAModel` keeps the shadow copy and its decay; like diffusers' training scripts, the decay
ramps up as (1 + n)/(10 + n) over the first updates and is then capped at `ema_decay`. This module adds the
cadence (from `ema_start_step`, every `ema_update_every` optimizer steps), the swap for saves and samples,
and its part of a resumable state.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch
from torch import nn


class NetworkEMA:
    def __init__(self, parameters: list[nn.Parameter], *, decay: float, start_step: int = 0, every: int = 1):
        from diffusers.training_utils import EMAModel

        self.parameters = parameters
        self.start_step, self.every = start_step, max(1, every)
        self.average = EMAModel(parameters, decay=decay)

    @classmethod
    def for_run(cls, cfg: Any, parameters: list[nn.Parameter]) -> Optional["NetworkEMA"]:
        """The run's EMA, or None when ema_decay is 0 (off)."""
        if not cfg.ema_decay:
            return None
        return cls(parameters, decay=cfg.ema_decay, start_step=cfg.ema_start_step, every=cfg.ema_update_every)

    def update(self, step: int) -> bool:
        """After optimizer step `step` (1-based): fold the weights into the average on the cadence. Before
        the start step the average simply follows the weights."""
        if step < self.start_step:
            self._copy_from_weights()
            return False
        if (step - self.start_step) % self.every:
            return False
        self.average.step(self.parameters)
        return True

    @torch.no_grad()
    def _copy_from_weights(self) -> None:
        for shadow, param in zip(self.average.shadow_params, self.parameters):
            shadow.copy_(param.detach())

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The network holds the averaged weights inside the block, its own ones again after it."""
        self.average.store(self.parameters)
        self.average.copy_to(self.parameters)
        try:
            yield
        finally:
            self.average.restore(self.parameters)

    # ---- resumable state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.average.decay, "optimization_step": self.average.optimization_step,
                "shadow_params": [p.detach().cpu() for p in self.average.shadow_params]}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        shadows = state["shadow_params"]
        if len(shadows) != len(self.average.shadow_params) or any(
                s.shape != p.shape for s, p in zip(shadows, self.average.shadow_params)):
            raise ValueError("the saved EMA weights do not match this network")
        for shadow, saved in zip(self.average.shadow_params, shadows):
            shadow.copy_(saved.to(shadow.device, shadow.dtype))
        self.average.optimization_step = int(state["optimization_step"])
