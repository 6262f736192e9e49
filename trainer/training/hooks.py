"""What a LoRA training does around the loop's steps: the event stream (start, step, epoch), the periodic
and final saves, and the sample images, each on its cadence. Only the main process writes events and
samples (the other processes' event writer writes nothing); saves go through the checkpoint writer."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Optional

import torch

from trainer.config import TrainConfig
from trainer.data.steps import StepPlan
from trainer.events import EventWriter
from trainer.training.accel import any_process
from trainer.training.checkpoint import CheckpointWriter, RunFiles
from trainer.training.loop import TrainingRun
from trainer.training.model_setup import ModelSetup
from trainer.training.resources import ResourceMeter
from trainer.training.tensorboard_log import TensorBoardLog


@dataclass
class TrainingHooks:
    cfg: TrainConfig
    plan: StepPlan
    events: EventWriter
    files: RunFiles
    checkpoints: CheckpointWriter
    model: ModelSetup
    device: torch.device
    weight_dtype: torch.dtype
    step_times: list[float] = field(default_factory=list)
    meter: Optional[ResourceMeter] = None
    tensorboard: Optional[TensorBoardLog] = None

    # ---- events ----------------------------------------------------------------------------------
    def started(self, run: TrainingRun) -> None:
        plan, pos = self.plan, run.position
        self.events.emit(
            "start", total_steps=plan.total_steps, epochs=plan.epochs, steps_per_epoch=plan.steps_per_epoch,
            num_train_images=plan.num_train_images, num_reg_images=plan.num_reg_images,
            buckets=plan.bucket_table(), resumed_from_step=pos.global_step,
            config_path=str(self.files.config_json), device=str(self.device))
        if self.tensorboard is not None and self.tensorboard.on:
            self.events.emit("log", message=f"TensorBoard logs in {self.tensorboard.folder}")
        if self.cfg.sample_at_first and pos.global_step == 0:
            self.sample(step=0, epoch=0)

    def stepped(self, run: TrainingRun, loss: float, seconds: float) -> None:
        pos, total = run.position, self.plan.total_steps
        self.step_times = (self.step_times + [seconds])[-20:]
        self.events.emit(
            "step", step=pos.global_step, total_steps=total, epoch=pos.epoch + 1, loss=loss,
            avg_loss=sum(pos.loss_history) / len(pos.loss_history), lr=run.optimizer.param_groups[0]["lr"] or 0.0,
            sec_per_step=seconds, eta_sec=sum(self.step_times) / len(self.step_times) * (total - pos.global_step),
            resources=self.meter.read() if self.meter else {})
        if self.tensorboard is not None:
            self.tensorboard.step(pos.global_step, loss=loss, avg_loss=sum(pos.loss_history) / len(pos.loss_history),
                                  param_groups=run.optimizer.param_groups, seconds=seconds)
        cfg, step = self.cfg, pos.global_step
        if cfg.save_every_n_steps and step % cfg.save_every_n_steps == 0 and step < total:
            self.checkpoints.save(self.files.step_lora(step), kind="step", epoch=pos.epoch + 1, step=step)
        n = cfg.sample_every_n_steps
        if n > 0 and cfg.sample_every_n_epochs == 0 and step % n == 0:
            self.sample(step=step, epoch=pos.epoch + 1)
        self.answer_requests(run)

    def answer_requests(self, run: TrainingRun) -> None:
        """Save now / Sample now: `<output_name>.save_now` or `.sample_now` in the output folder is answered
        after the step it is seen at, and removed (the page creates them; so can anyone)."""
        pos, main = run.position, self.checkpoints.accelerator.is_main_process
        for request in ("save_now", "sample_now"):  # (stop: the loop's StopSignal)
            control = self.files.control(request)
            if not any_process(run.accelerator, control.exists()):
                continue
            if main:
                control.unlink(missing_ok=True)
            nothing = request == "sample_now" and not self.cfg.sample_prompts.strip()
            self.events.emit("log", message=f"{request.replace('_', ' ')} requested at step {pos.global_step}"
                             + (" (no sample prompts are set: nothing to draw)" if nothing else ""))
            if request == "sample_now":
                self.sample(step=pos.global_step, epoch=pos.epoch + 1)
            elif not self.files.step_lora(pos.global_step).exists():  # this step may have been saved already
                self.checkpoints.save(self.files.step_lora(pos.global_step), kind="step", epoch=pos.epoch + 1,
                                      step=pos.global_step)

    def epoch_ended(self, run: TrainingRun) -> None:
        cfg, pos, plan = self.cfg, run.position, self.plan
        avg = sum(pos.loss_history) / max(1, len(pos.loss_history))
        self.events.emit("epoch", epoch=pos.epoch, epochs=plan.epochs, avg_loss=avg)
        is_last = pos.epoch >= plan.epochs or pos.global_step >= plan.total_steps
        if cfg.save_every_n_epochs and pos.epoch % cfg.save_every_n_epochs == 0 and not is_last:
            self.checkpoints.save(self.files.epoch_lora(pos.epoch), kind="epoch", epoch=pos.epoch,
                                  step=pos.global_step)
        if cfg.sample_every_n_epochs and pos.epoch % cfg.sample_every_n_epochs == 0:
            self.sample(step=pos.global_step, epoch=pos.epoch)

    # ---- the end -----------------------------------------------------------------------------------
    def stopped(self, run: TrainingRun) -> str:
        pos = run.position
        self.events.emit("log", message=f"stop requested: saving at step {pos.global_step}")
        self.checkpoints.save(self.files.stopped_lora(), kind="stopped", epoch=pos.epoch + 1, step=pos.global_step)
        self._close_logs()
        return "stopped"

    def completed(self, run: TrainingRun) -> str:
        pos = run.position
        final_epoch = min(pos.epoch + (1 if pos.batch_in_epoch else 0), self.plan.epochs) or 1
        self.checkpoints.save(self.files.lora(), kind="final", epoch=final_epoch, step=pos.global_step)
        self._close_logs()
        return "completed"

    def _close_logs(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()

    # ---- samples -----------------------------------------------------------------------------------
    def sample(self, *, step: int, epoch: int) -> None:
        from trainer.sampling import generate_samples, parse_prompts

        prompts = parse_prompts(self.cfg.sample_prompts)
        if not prompts or not self.checkpoints.accelerator.is_main_process:
            return
        cfg, model, ema = self.cfg, self.model, self.checkpoints.ema
        with ema.applied() if ema is not None else nullcontext():  # samples show what the files hold
            paths = generate_samples(model.family, model.comp, prompts, out_dir=self.files.samples_dir,
                                     output_name=cfg.output_name, step=step, epoch=epoch, sampler=cfg.sample_sampler,
                                     device=self.device, dtype=self.weight_dtype, clip_skip=cfg.clip_skip,
                                     max_token_length=cfg.max_token_length, base_seed=cfg.seed)
        model.network.train()  # sampling switched the models to eval mode (network dropout)
        self.events.emit("sample", step=step, epoch=epoch, paths=[str(x) for x in paths],
                         prompts=[pr.prompt for pr in prompts])
        if self.tensorboard is not None:
            self.tensorboard.samples(step, paths)
