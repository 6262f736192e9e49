"""The training loop: one for every run (LoRA training and the paired slider), on any number of processes.

Reads top to bottom like nanoGPT's: for each epoch, for each batch, the loss, backward; every
`gradient_accumulation_steps` batches (and at an epoch's end) the optimizer steps. What a run does around
the steps (events, saves, samples) is its `LoopHooks`; what a batch is and how its loss is computed are its
batch source and objective. Every decision that ends the loop (a stop, a NaN) is taken by all processes
together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from accelerate import Accelerator

from trainer.config import TrainConfig
from trainer.errors import TrainingError
from trainer.training.accel import any_process, global_sum, sync_gradients
from trainer.training.batches import Batch, BatchSource
from trainer.training.state import TrainPosition

NAN_HINT = ("Lower the learning rate (or network alpha); with fp16 the numbers may overflow: "
            "use bf16 or no mixed precision.")


class LoopHooks(Protocol):
    def started(self, run: "TrainingRun") -> None: ...
    def stepped(self, run: "TrainingRun", loss: float, seconds: float) -> None: ...
    def epoch_ended(self, run: "TrainingRun") -> None: ...
    def stopped(self, run: "TrainingRun") -> str: ...
    def completed(self, run: "TrainingRun") -> str: ...


@dataclass
class TrainingRun:
    """Everything a run trains with, built once (trainer.training.setup) before the loop starts."""

    cfg: TrainConfig
    accelerator: Accelerator
    network: Any  # LoraNetwork
    batches: BatchSource
    objective: Callable[[Batch], torch.Tensor]  # a batch -> the sum of this process's sample losses
    optimizer: Any  # accelerate's AcceleratedOptimizer
    lr_scheduler: Any
    position: TrainPosition
    stop: Any  # StopSignal
    hooks: LoopHooks
    ema: Any = None  # NetworkEMA, when ema_decay is set

    def stop_requested(self) -> bool:
        return any_process(self.accelerator, self.stop.requested())


def train(run: TrainingRun) -> str:
    """Train until the plan's last step or a stop; returns the hooks' status ("completed" / "stopped")."""
    plan, pos = run.batches.plan, run.position
    accum = plan.gradient_accumulation_steps
    window = max(1, min(plan.steps_per_epoch, 100))  # the moving average of the loss
    params = run.network.trainable_parameters()
    run.network.train()
    run.hooks.started(run)
    while pos.epoch < plan.epochs and pos.global_step < plan.total_steps:
        count = run.batches.count(pos.epoch)
        step_loss, t_step = 0.0, time.perf_counter()
        for batch in run.batches.iterate(pos.epoch, start=pos.batch_in_epoch):
            loss = run.objective(batch) / batch.size  # this process's share of the batch mean
            if any_process(run.accelerator, not torch.isfinite(loss).item()):
                raise TrainingError("nan_loss", f"the loss became {loss.item()} at step {pos.global_step + 1}",
                                    field="learning_rate", hint=NAN_HINT)
            if batch.data is not None:
                run.accelerator.backward(loss / accum)
            step_loss += global_sum(run.accelerator, loss.item()) / accum
            pos.batch_in_epoch = batch.index + 1
            if (batch.index + 1) % accum != 0 and batch.index != count - 1:
                continue
            optimizer_step(run, params)
            pos.global_step += 1
            if run.ema is not None:
                run.ema.update(pos.global_step)
            pos.loss_history = (pos.loss_history + [step_loss])[-window:]
            run.hooks.stepped(run, step_loss, time.perf_counter() - t_step)
            step_loss, t_step = 0.0, time.perf_counter()
            if pos.global_step >= plan.total_steps:
                break
            if batch.index != count - 1 and run.stop_requested():
                return run.hooks.stopped(run)
        if pos.batch_in_epoch < count:
            break  # the last step came inside the epoch
        pos.epoch, pos.batch_in_epoch = pos.epoch + 1, 0
        run.hooks.epoch_ended(run)
        if pos.epoch < plan.epochs and pos.global_step < plan.total_steps and run.stop_requested():
            return run.hooks.stopped(run)
    return run.hooks.completed(run)


def optimizer_step(run: TrainingRun, params: list[torch.nn.Parameter]) -> None:
    """Sync, clip (accelerate unscales fp16 gradients first), step (skipped by the loss scaler on inf),
    schedule, zero, then kohya's max-norm regularisation."""
    cfg, accelerator = run.cfg, run.accelerator
    sync_gradients(accelerator, params)
    if cfg.max_grad_norm > 0:
        accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
    run.optimizer.step()
    run.lr_scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    if cfg.scale_weight_norms > 0:
        run.network.apply_max_norm(cfg.scale_weight_norms)
    if not torch.stack([torch.isfinite(p).all() for p in params]).all():
        # A finite loss can still give inf gradients, and the optimizer step then NaN weights; stop
        # before a step event or a save reports them as good. (Weights are the same on every process.)
        raise TrainingError("nan_loss", f"the LoRA weights became inf or nan at step {run.position.global_step + 1}",
                            field="learning_rate", hint=NAN_HINT)
