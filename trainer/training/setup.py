"""The one setup of a LoRA training: model + network, data + caches, optimizer + scheduler, resume, all
built once into a `TrainingRun` for the loop. The paired slider reuses the model and optimizer parts."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Optional

import torch
from accelerate import Accelerator

from trainer.config import TrainConfig
from trainer.data.scan import DatasetScan
from trainer.data.steps import StepPlan
from trainer.errors import TrainingError
from trainer.events import EventWriter
from trainer.families.model_info import ModelInfo
from trainer.training.accel import Precision
from trainer.training.batches import DatasetBatches, Shard
from trainer.training.checkpoint import CheckpointWriter, RunFiles
from trainer.training.conditioning import Conditioner
from trainer.training.ema import NetworkEMA
from trainer.training.hooks import TrainingHooks
from trainer.training.loop import TrainingRun
from trainer.training.loss import DiffusionObjective
from trainer.training.model_setup import ModelSetup, setup_model
from trainer.training.noise import NoiseSchedule
from trainer.training.resources import ResourceMeter
from trainer.training.tensorboard_log import TensorBoardLog
from trainer.training.state import LoadedState, TrainPosition, restore_rng


def build_training_run(cfg: TrainConfig, *, accelerator: Accelerator, precision: Precision, info: ModelInfo,
                       scan: DatasetScan, plan: StepPlan, events: EventWriter, stop: Any,
                       resume: Optional[LoadedState]) -> tuple[TrainingRun, CheckpointWriter]:
    from trainer.data.dataset import LoraDataset
    from trainer.families import get_family

    device = accelerator.device
    model = setup_model(cfg, info, get_family(info), device=device, precision=precision, events=events)
    conditioner = make_conditioner(cfg, model, accelerator)
    dataset = LoraDataset(cfg, scan, model.family.latent_scale, plan=plan)
    with accelerator.main_process_first():  # disk caches: the main process writes, the others then read
        cache_latents(dataset, conditioner, model, events)
        if cfg.cache_text_encoder_outputs or cfg.cache_text_encoder_outputs_to_disk:
            conditioner.cache_before_training([(i.path, i.caption) for i in plan.images], events)

    generator = torch.Generator().manual_seed(cfg.seed)
    schedule = NoiseSchedule.from_scheduler_config(model.comp.scheduler_config, zero_terminal_snr=cfg.zero_terminal_snr)
    objective = DiffusionObjective(cfg, model.family, model.comp, conditioner, schedule, generator,
                                   weight_dtype=precision.weight_dtype, autocast=accelerator.autocast)
    optimizer, lr_scheduler = build_optimization(cfg, model, accelerator, total_steps=plan.total_steps)
    position = TrainPosition(global_step=0, epoch=0, batch_in_epoch=0, loss_history=[])
    files = RunFiles(Path(cfg.output_dir), cfg.output_name, cfg.save_model_as)
    metadata = RunMetadata(cfg, model, scan, plan, accelerator.num_processes)
    ema = NetworkEMA.for_run(cfg, model.network.trainable_parameters())
    writer = CheckpointWriter(files, events, stop, accelerator, model.network, optimizer, lr_scheduler, generator,
                              position, metadata, cfg.save_precision, cfg.save_state, ema=ema,
                              save_non_ema=cfg.ema_save_non_ema)
    hooks = TrainingHooks(cfg, plan, events, files, writer, model, device, precision.weight_dtype,
                          meter=ResourceMeter(device), tensorboard=TensorBoardLog(accelerator, cfg))
    batches = DatasetBatches(dataset, Shard(accelerator.process_index, accelerator.num_processes,
                                            cfg.train_batch_size),
                             workers=cfg.max_data_loader_n_workers, persistent=cfg.persistent_data_loader_workers,
                             pin_memory=device.type == "cuda")
    run = TrainingRun(cfg, accelerator, model.network, batches, objective, optimizer, lr_scheduler, position,
                      stop, hooks, ema=ema)
    if resume is not None:
        restore(run, resume, generator, source=cfg.resume, events=events)
    return run, writer


def make_conditioner(cfg: TrainConfig, model: ModelSetup, accelerator: Accelerator) -> Conditioner:
    return Conditioner(cfg, model.family, model.comp, device=accelerator.device, vae_dtype=model.vae_dtype,
                       train_text_encoder=model.train_text_encoder, autocast=accelerator.autocast)


def cache_latents(dataset: Any, conditioner: Conditioner, model: ModelSetup, events: EventWriter) -> None:
    cfg = dataset.cfg
    if not (dataset.can_cache_latents and (cfg.cache_latents or cfg.cache_latents_to_disk)):
        return
    events.emit("log", message="caching latents")
    n = dataset.cache_latents(conditioner.encode_pixels, to_disk=cfg.cache_latents_to_disk,
                              latent_channels=model.comp.vae.config.latent_channels)
    report = dataset.cache_report
    for bad in report.rebuilt if report is not None else []:
        events.emit("warning", code="latent_cache_rebuilt", field="cache_latents_to_disk",
                    message=f"the latent cache file {bad.path} was not used: {bad.reason}; "
                            "it was encoded again and rewritten", params={"path": str(bad.path)})
    disk = (f" ({report.reused_from_disk} reused from disk, {report.written_to_disk} written to disk)"
            if cfg.cache_latents_to_disk and report is not None else "")
    events.emit("log", message=f"cached latents of {n} images{disk}")


def build_optimization(cfg: TrainConfig, model: ModelSetup, accelerator: Accelerator, *,
                       total_steps: int) -> tuple[Any, Any]:
    """The optimizer (wrapped by accelerate: fp16 loss scaling, device placement of its state) and the
    learning-rate scheduler, stepped once per optimizer step by the loop (not by accelerate, which would
    step it once per process)."""
    from trainer.training.optimizers import build_optimizer, effective_optimizer_args
    from trainer.training.schedulers import build_lr_scheduler

    groups = model.network.param_groups(cfg.effective_unet_lr(), cfg.effective_text_encoder_lr(),
                                        loraplus={part: cfg.loraplus_ratio(part) for part in ("unet", "text_encoder")})
    args = effective_optimizer_args(cfg.optimizer_type, cfg.lr_scheduler, cfg.optimizer_args)
    optimizer = accelerator.prepare_optimizer(build_optimizer(cfg.optimizer_type, groups, cfg.learning_rate, args))
    lr_scheduler = build_lr_scheduler(cfg.lr_scheduler, optimizer.optimizer, total_steps=total_steps,
                                      warmup=cfg.lr_warmup_steps, num_cycles=cfg.lr_scheduler_num_cycles,
                                      power=cfg.lr_scheduler_power)
    return optimizer, lr_scheduler


def restore(run: TrainingRun, state: LoadedState, generator: torch.Generator, *, source: str,
            events: EventWriter) -> None:
    """Continue where a state folder left off (the same number of processes: a step's batches were
    split over that many)."""
    if state.num_processes != run.accelerator.num_processes:
        raise TrainingError(
            "resume_processes_mismatch", f"the state {source} was saved by a run on {state.num_processes} "
            f"process(es), and this run has {run.accelerator.num_processes}: the batches of a step would be "
            "different", field="num_processes",
            hint=f"Set the number of processes to {state.num_processes} to resume, or start from the LoRA file "
                 "(network_weights) without resume.",
            params={"saved": state.num_processes, "now": run.accelerator.num_processes})
    run.network.load_trainable_state(state.network_state, source=source)
    run.optimizer.load_state_dict(state.optimizer)
    run.lr_scheduler.load_state_dict(state.scheduler)
    if run.accelerator.scaler is not None and state.grad_scaler:
        run.accelerator.scaler.load_state_dict(state.grad_scaler)
    restore_rng(state.rng, generator)
    if run.ema is not None and state.ema is not None:
        run.ema.load_state_dict(state.ema)
    elif run.ema is not None:
        events.emit("log", message=f"{source} holds no EMA weights: the EMA starts from the resumed weights")
    run.position.__dict__.update(state.position.__dict__)  # the writer and hooks hold this same object
    events.emit("log", message=f"resumed from {source} at step {run.position.global_step}")


class RunMetadata:
    """sd-scripts' ss_* metadata of each saved file: (epoch=, step=) -> dict."""

    def __init__(self, cfg: TrainConfig, model: ModelSetup, scan: DatasetScan, plan: StepPlan, processes: int):
        self.cfg, self.model, self.scan, self.plan, self.processes = cfg, model, scan, plan, processes
        self.session_id = uuid.uuid4().hex[:16]
        self.started_at = time.time()

    def __call__(self, *, epoch: int, step: int) -> dict[str, str]:
        from trainer.network.metadata import RunInfo, build_training_metadata
        from trainer.training.optimizers import describe_optimizer
        from trainer.training.schedulers import warmup_steps

        cfg, plan, family, info = self.cfg, self.plan, self.model.family, self.model.info
        run_info = RunInfo(
            session_id=self.session_id, training_started_at=self.started_at, epoch=epoch, steps=step,
            max_train_steps=plan.total_steps, num_epochs=plan.epochs, num_batches_per_epoch=plan.batches_per_epoch,
            num_train_images=plan.num_train_images, num_reg_images=plan.num_reg_images,
            dataset_dirs=self.scan.dataset_dirs(), reg_dataset_dirs=self.scan.reg_dataset_dirs(),
            tag_frequency=self.scan.tag_frequency(), bucket_info=plan.bucket_info(),
            base_model_version=family.base_model_version(info),
            modelspec_architecture=family.modelspec_architecture(info),
            modelspec_implementation=family.modelspec_implementation(info),
            optimizer=describe_optimizer(cfg.optimizer_type, cfg.optimizer_args),
            lr_warmup_steps=warmup_steps(cfg.lr_warmup_steps, plan.total_steps),
            total_batch_size=cfg.train_batch_size * self.processes * cfg.gradient_accumulation_steps,
            v2=info.v2, v_parameterization=info.v_parameterization)
        return build_training_metadata(cfg, run_info)
