"""Learning-rate schedules: diffusers' scheduler functions plus Adafactor's own schedule."""

from __future__ import annotations

import torch

from trainer.errors import TrainingError


def warmup_steps(value: float, total_steps: int) -> int:
    """An int is a step count; a fraction below 1 is a share of the total (as sd-scripts reads it)."""
    if 0 < value < 1:
        return int(value * total_steps)
    return int(value)


def build_lr_scheduler(name: str, optimizer: torch.optim.Optimizer, *, total_steps: int, warmup: float,
                       num_cycles: int, power: float) -> torch.optim.lr_scheduler.LRScheduler:
    from diffusers.optimization import get_scheduler

    n_warmup = warmup_steps(warmup, total_steps)
    if name == "adafactor":
        from transformers.optimization import Adafactor, AdafactorSchedule

        if not isinstance(optimizer, Adafactor):
            raise TrainingError("scheduler_needs_adafactor", "the adafactor scheduler works only with the Adafactor optimizer",
                                field="lr_scheduler", hint="Pick another scheduler, or the Adafactor optimizer.")
        return AdafactorSchedule(optimizer, initial_lr=optimizer.param_groups[0].get("lr") or 1e-3)
    if name == "constant" and n_warmup:
        raise TrainingError("warmup_with_constant", "the constant scheduler takes no warmup",
                            field="lr_warmup_steps", hint="Set warmup to 0, or pick constant_with_warmup.")
    return get_scheduler(name, optimizer, num_warmup_steps=n_warmup, num_training_steps=total_steps,
                         num_cycles=num_cycles, power=power)
