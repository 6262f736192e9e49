"""accelerate owns the devices, the mixed precision (autocast and fp16 loss scaling), clipping, the
random state and the processes of a run; this module builds its Accelerator from the config.

Gradient sync is `sync_gradients` below rather than DistributedDataParallel: the LoRA weights live inside
the frozen base model, whose forward is not a module accelerate could wrap, and a bucket's last batch may
split unevenly over the processes (even leave one without an image). Each process backpropagates the sum
of its images' losses divided by the global batch size, and a sum-reduce of the LoRA gradients through
`accelerator.reduce` then gives exactly the one-process mean, where DDP's average would weight a one-image
slice like a full one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from trainer.config import TrainConfig
from trainer.training.tensorboard_log import tracker_options


@dataclass(frozen=True)
class Precision:
    mixed_precision: str  # what accelerate autocasts with: "no" | "fp16" | "bf16"
    weight_dtype: torch.dtype  # the frozen base weights
    network_dtype: torch.dtype  # the LoRA weights


def resolve_precision(cfg: TrainConfig, *, cuda: bool) -> Precision:
    """The dtypes of a run. Without CUDA everything is fp32 (pre-flight's `precision_cpu` warning says so).
    Full fp16/bf16 keeps the LoRA in that dtype too, so there is nothing to autocast or loss-scale."""
    mp = cfg.mixed_precision if cuda else "no"
    if mp == "no":
        return Precision("no", torch.float32, torch.float32)
    dtype = torch.float16 if mp == "fp16" else torch.bfloat16
    if cfg.full_fp16 or cfg.full_bf16:
        return Precision("no", dtype, dtype)
    return Precision(mp, dtype, torch.float32)


def make_accelerator(cfg: TrainConfig) -> tuple[Accelerator, Precision]:
    """The run's Accelerator (one per process; under `accelerate launch` it joins the process group) and
    its precision. Seeds python, numpy and torch of every process with the run's seed."""
    cuda = torch.cuda.is_available()
    precision = resolve_precision(cfg, cuda=cuda)
    accelerator = Accelerator(mixed_precision=precision.mixed_precision, cpu=not cuda,
                              step_scheduler_with_optimizer=False, **tracker_options(cfg))
    set_seed(cfg.seed)
    return accelerator, precision


def sync_gradients(accelerator: Accelerator, params: list[torch.nn.Parameter]) -> None:
    """Sum every process's gradients of `params` (one flat buffer, one reduce). A process that had no
    image in this step contributes zeros."""
    if accelerator.num_processes == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="sum")
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset:offset + g.numel()].view_as(g).to(g.dtype)
        offset += g.numel()


def any_process(accelerator: Accelerator, flag: bool) -> bool:
    """True on every process when `flag` is true on any (a stop file seen by one, a NaN on one)."""
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="sum").item() > 0)


def global_sum(accelerator: Accelerator, value: float) -> float:
    """`value` summed over the processes (the step loss is reported once, for all of them)."""
    if accelerator.num_processes == 1:
        return value
    return float(accelerator.reduce(torch.tensor([value], device=accelerator.device), reduction="sum").item())


def main_process_only(accelerator: Optional[Accelerator]) -> bool:
    return accelerator is None or accelerator.is_main_process
