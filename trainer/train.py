"""The training loop.

Reads like nanoGPT's: set up (model, LoRA, data, optimizer), then one loop over epochs and
batches that steps the optimizer every `gradient_accumulation_steps` batches, saves and
samples on cadence, and reports every step as an event. The loop never branches on the
model family: everything family-specific goes through the `ModelFamily` it was given.
"""

from __future__ import annotations

import json
import random
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from trainer.config import TrainConfig
from trainer.errors import TrainingError
from trainer.events import EventWriter
from trainer.fileio import remove_stale_temp_files
from trainer.findings import errors_of, warnings_of
from trainer.training.failures import error_fields
from trainer.training.loss import diffusion_loss
from trainer.training.noise import NoiseSchedule, make_noise, sample_timesteps
from trainer.training.optimizers import (build_optimizer, check_optimizer_args, describe_optimizer,
                                         effective_optimizer_args)
from trainer.training.saving import Saving
from trainer.training.schedulers import build_lr_scheduler, warmup_steps
from trainer.training.state import LoadedState, TrainPosition, load_state, restore_rng

NAN_HINT = ("Lower the learning rate (or network alpha); with fp16 the numbers may overflow: "
            "use bf16 or no mixed precision.")


class StopSignal:
    """A graceful stop: SIGINT/SIGTERM or a stop file; the loop checks it after every step."""

    def __init__(self, stop_file: Optional[Path] = None, install_handlers: bool = True):
        self.stop_file = stop_file
        self._flag = False
        self._signals = 0
        if install_handlers:
            signal.signal(signal.SIGINT, self._handle)
            signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self._flag = True
        self._signals += 1

    def requested(self) -> bool:
        return self._flag or (self.stop_file is not None and self.stop_file.exists())

    def mark(self) -> tuple[int, Optional[int]]:
        """What has been asked so far, for `requested_since`: the signal count and the stop file's mtime."""
        return self._signals, self._stop_file_mtime()

    def requested_since(self, mark: tuple[int, Optional[int]]) -> bool:
        """A new stop since `mark`: another signal, or the stop file created or touched (a stop file that was
        already there does not count: it asked for the stop that is being handled)."""
        mtime = self._stop_file_mtime()
        return self._signals > mark[0] or (mtime is not None and mtime != mark[1])

    def _stop_file_mtime(self) -> Optional[int]:
        try:
            return self.stop_file.stat().st_mtime_ns if self.stop_file is not None else None
        except OSError:
            return None


@dataclass
class Precision:
    device: torch.device
    weight_dtype: torch.dtype  # frozen base weights
    autocast_dtype: Optional[torch.dtype]  # None = no autocast
    use_grad_scaler: bool
    network_dtype: torch.dtype = torch.float32


def resolve_precision(cfg: TrainConfig, events: EventWriter) -> Precision:
    if torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        device = torch.device("cpu")
    mp = cfg.mixed_precision
    if device.type == "cpu" and mp != "no":
        events.emit("warning", code="precision_cpu", field="mixed_precision", params={"mixed_precision": mp},
                    message=f"mixed precision {mp} needs a GPU; training in fp32 on the CPU")
        mp = "no"
    if mp == "no":
        return Precision(device, torch.float32, None, False)
    dtype = torch.float16 if mp == "fp16" else torch.bfloat16
    network_dtype = dtype if (cfg.full_fp16 or cfg.full_bf16) else torch.float32
    return Precision(device, dtype, dtype, mp == "fp16" and not cfg.full_fp16, network_dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class RunFiles:
    """Names of everything a run writes into output_dir (kohya's naming)."""

    output_dir: Path
    name: str
    ext: str

    def lora(self, suffix: str = "") -> Path:
        return self.output_dir / f"{self.name}{suffix}.{self.ext}"

    def epoch_lora(self, epoch: int) -> Path:
        return self.lora(f"-{epoch:06d}")

    def step_lora(self, step: int) -> Path:
        return self.lora(f"-step{step:08d}")

    def state_dir(self, lora_path: Path) -> Path:
        return lora_path.with_name(lora_path.stem + "-state")

    @property
    def config_json(self) -> Path:
        return self.output_dir / f"{self.name}.json"

    @property
    def samples_dir(self) -> Path:
        return self.output_dir / "sample"


@dataclass
class Trainer(Saving):
    cfg: TrainConfig
    events: EventWriter
    stop: StopSignal
    saved_files: list[str] = field(default_factory=list)
    reported_codes: set[str] = field(default_factory=set)  # validation codes already emitted before setup

    # ---- setup ----------------------------------------------------------------------
    def setup(self) -> None:
        from trainer.data.dataset import LoraDataset
        from trainer.data.scan import scan_dataset
        from trainer.data.steps import plan_steps
        from trainer.families import get_family
        from trainer.families.detect import resolve_model_info
        from trainer.network.lora import LoraNetwork, NetworkSpec

        cfg = self.cfg
        # Read first: a state folder that cannot be used is refused before minutes of model loading.
        resume_state = load_state(Path(cfg.resume)) if cfg.resume else None
        self.started_at = time.time()
        self.session_id = uuid.uuid4().hex[:16]
        self.files = RunFiles(Path(cfg.output_dir), cfg.output_name, cfg.save_model_as)
        seed_everything(cfg.seed)
        self.precision = resolve_precision(cfg, self.events)
        device = self.precision.device

        self.info = resolve_model_info(cfg)
        for note in self.info.notes:
            self.events.emit("log", message=note)
        self.family = get_family(self.info)
        self._check_family_settings()
        self.optimizer_args = effective_optimizer_args(cfg.optimizer_type, cfg.lr_scheduler, cfg.optimizer_args)
        check_optimizer_args(cfg.optimizer_type, cfg.learning_rate, self.optimizer_args)  # before the slow loading

        self.scan = scan_dataset(cfg, verify=True)
        self.scan.raise_for_problems()
        self.plan = plan_steps(cfg, self.scan)
        self.events.emit("log", message=f"loading model {cfg.pretrained_model_name_or_path} ({self.info.family}"
                         f"{', v-prediction' if self.info.v_parameterization else ''})")
        self.comp = self.family.load(cfg, self.info)

        self.train_unet = cfg.effective_unet_lr() > 0
        # A family may leave text encoders without LoRA (SDXL's per-encoder switches): then none is trained.
        self.train_te = cfg.effective_text_encoder_lr() > 0 and any(
            root.kind == "text_encoder" for root in self.family.lora_roots(self.comp))
        for model in (self.comp.unet, *self.comp.text_encoders, self.comp.vae):
            model.requires_grad_(False)
        for model in (self.comp.unet, *self.comp.text_encoders):
            model.to(device, dtype=self.precision.weight_dtype)
        if cfg.xformers:
            self.family.enable_xformers(self.comp)
        if cfg.gradient_checkpointing:
            self.family.enable_gradient_checkpointing(self.comp, text_encoder=self.train_te)

        spec = NetworkSpec(rank=cfg.network_dim, alpha=cfg.network_alpha,
                           conv_rank=cfg.conv_dim if cfg.uses_conv_lora() else 0,
                           conv_alpha=cfg.conv_alpha, dropout=cfg.network_dropout)
        self.network = LoraNetwork.inject(self.family, self.comp, spec, train_unet=self.train_unet,
                                          train_text_encoder=self.train_te)
        self.network.to(device, dtype=self.precision.network_dtype)
        if cfg.network_weights:
            from trainer.network.kohya_format import read_lora_file

            report = self.network.load_lora_file(read_lora_file(cfg.network_weights))
            self.events.emit("log", message=f"network weights {cfg.network_weights}: {report}")

        # The VAE is only needed to encode images; sampling needs it too (decode).
        self.vae_dtype, note = self.family.vae_dtype(self.precision.weight_dtype, no_half_vae=cfg.no_half_vae)
        if note:
            self.events.emit("log", message=note)
        self.comp.vae.to(device, dtype=self.vae_dtype)
        self.schedule = NoiseSchedule.from_scheduler_config(self.comp.scheduler_config)
        self.noise_generator = torch.Generator().manual_seed(cfg.seed)

        self.dataset = LoraDataset(cfg, self.scan, self.family.latent_scale, plan=self.plan)
        if self.dataset.can_cache_latents and (cfg.cache_latents or cfg.cache_latents_to_disk):
            self.events.emit("log", message="caching latents")
            n = self.dataset.cache_latents(self._encode_pixels, to_disk=cfg.cache_latents_to_disk,
                                           latent_channels=self.comp.vae.config.latent_channels)
            report = self.dataset.cache_report
            for bad in report.rebuilt if report is not None else []:
                self.events.emit("warning", code="latent_cache_rebuilt", field="cache_latents_to_disk",
                                 message=f"the latent cache file {bad.path} was not used: {bad.reason}; "
                                         "it was encoded again and rewritten", params={"path": str(bad.path)})
            disk = (f" ({report.reused_from_disk} reused from disk, {report.written_to_disk} written to disk)"
                    if cfg.cache_latents_to_disk and report is not None else "")
            self.events.emit("log", message=f"cached latents of {n} images{disk}")
        self._text_cache: dict[str, dict[str, torch.Tensor]] = {}
        if cfg.cache_text_encoder_outputs or cfg.cache_text_encoder_outputs_to_disk:
            self._cache_text_encoder_outputs()

        groups = self.network.param_groups(cfg.effective_unet_lr(), cfg.effective_text_encoder_lr())
        self.optimizer = build_optimizer(cfg.optimizer_type, groups, cfg.learning_rate, self.optimizer_args)
        self.lr_scheduler = build_lr_scheduler(
            cfg.lr_scheduler, self.optimizer, total_steps=self.plan.total_steps, warmup=cfg.lr_warmup_steps,
            num_cycles=cfg.lr_scheduler_num_cycles, power=cfg.lr_scheduler_power)
        self.grad_scaler = torch.amp.GradScaler("cuda") if self.precision.use_grad_scaler else None

        self.position = TrainPosition(global_step=0, epoch=0, batch_in_epoch=0, loss_history=[])
        if resume_state is not None:
            self._resume(resume_state)

    def _check_family_settings(self) -> None:
        """The family-dependent validation rules, for what validation could not see (a .ckpt's family)."""
        from trainer.validation import family_issues

        for issue in family_issues(self.cfg, self.info.family, cuda=self.precision.device.type == "cuda"):
            if issue.code in self.reported_codes:
                continue
            if issue.is_error:
                raise TrainingError.from_finding(issue)
            self.events.emit(issue.level, **issue.event_fields())

    def _cache_text_encoder_outputs(self) -> None:
        """Encode every caption once (optionally from/to `_te_outputs.npz` files); the text encoders then
        leave the GPU. Sampling still encodes its prompts with them, on the CPU."""
        from trainer.training.text_cache import cache_text_encoder_outputs

        cfg = self.cfg
        if self.train_te:
            self.events.emit("warning", code="te_cache_with_te_training", field="cache_text_encoder_outputs",
                             message="text-encoder outputs are not cached because the text encoder is trained")
            return
        model = Path(cfg.pretrained_model_name_or_path).expanduser()
        encoder_id = json.dumps({"model": str(model.resolve()) if model.exists() else str(model),
                                 "family": self.info.family, "clip_skip": cfg.clip_skip,
                                 "max_token_length": cfg.max_token_length}, sort_keys=True)
        items = [(image.path, image.caption) for image in self.dataset.plan.images]
        self.events.emit("log", message="caching text-encoder outputs")
        cache, report = cache_text_encoder_outputs(items, self._encode_captions, encoder_id=encoder_id,
                                                   to_disk=cfg.cache_text_encoder_outputs_to_disk)
        self._text_cache.update(cache)
        self.events.emit("log", message=report.summary())
        if self.precision.device.type != "cpu":
            for text_encoder in self.comp.text_encoders:
                text_encoder.to("cpu", dtype=torch.float32)  # half precision is slow or unsupported on CPU
            self.events.emit("log", message="text encoders moved to the CPU")

    def _resume(self, state: LoadedState) -> None:
        self.network.load_trainable_state(state.network_state, source=self.cfg.resume)
        self.optimizer.load_state_dict(state.optimizer)
        self.lr_scheduler.load_state_dict(state.scheduler)
        if self.grad_scaler is not None and state.grad_scaler:
            self.grad_scaler.load_state_dict(state.grad_scaler)
        restore_rng(state.rng, self.noise_generator)
        self.position = state.position
        self.events.emit("log", message=f"resumed from {self.cfg.resume} at step {self.position.global_step}")

    # ---- model calls ------------------------------------------------------------------
    @torch.no_grad()
    def _encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> scaled latents. A seeded generator keeps caching reproducible."""
        vae = self.comp.vae
        gen = torch.Generator(device="cpu").manual_seed(self.cfg.seed)
        dist = vae.encode(pixel_values.to(self.precision.device, self.vae_dtype)).latent_dist
        eps = torch.randn(dist.mean.shape, generator=gen, dtype=dist.mean.dtype).to(dist.mean.device)
        latents = dist.mean + dist.std * eps
        latents = torch.nan_to_num(latents, nan=0.0)
        return latents * self.family.latent_scale

    def _encode_text(self, captions: list[str]) -> dict[str, torch.Tensor]:
        kw = dict(clip_skip=self.cfg.clip_skip, max_token_length=self.cfg.max_token_length)
        if self.train_te:
            with self._autocast():
                return self.family.encode_prompts(self.comp, captions, **kw)
        # Frozen text encoder: each distinct caption is encoded once (a large saving on CPU).
        missing = [c for c in dict.fromkeys(captions) if c not in self._text_cache]
        if missing:
            out = self._encode_captions(missing)
            for i, c in enumerate(missing):
                self._text_cache[c] = {k: v[i : i + 1] for k, v in out.items()}
        device = self.precision.device  # cached outputs may live on the CPU
        return {k: torch.cat([self._text_cache[c][k] for c in captions]).to(device)
                for k in self._text_cache[captions[0]]}

    def _encode_captions(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """The frozen text encoders' conditioning of `captions` (no gradients)."""
        with torch.no_grad(), self._autocast():
            return self.family.encode_prompts(self.comp, captions, clip_skip=self.cfg.clip_skip,
                                              max_token_length=self.cfg.max_token_length)

    def _autocast(self):
        p = self.precision
        if p.autocast_dtype is None:
            return torch.autocast(p.device.type, enabled=False)
        return torch.autocast(p.device.type, dtype=p.autocast_dtype)

    def compute_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        cfg, device = self.cfg, self.precision.device
        if batch.get("latents") is not None:
            latents = batch["latents"].to(device, torch.float32)
        else:
            latents = self._encode_pixels(batch["pixel_values"]).float()
        cond = self._encode_text(batch["captions"])
        noise = make_noise(latents, self.noise_generator, offset_type=cfg.noise_offset_type,
                           noise_offset=cfg.noise_offset, multires_iterations=cfg.multires_noise_iterations,
                           multires_discount=cfg.multires_noise_discount)
        timesteps = sample_timesteps(latents.shape[0], cfg.min_timestep, cfg.max_timestep,
                                     self.noise_generator, device)
        noisy = self.schedule.add_noise(latents, noise, timesteps)
        with self._autocast():
            pred = self.family.predict(self.comp, noisy.to(self.precision.weight_dtype), timesteps, cond, batch)
        target = self.schedule.target(latents, noise, timesteps)
        weights = torch.as_tensor(batch["loss_weights"], dtype=torch.float32, device=device)
        if cfg.min_snr_gamma > 0:
            weights = weights * self.schedule.min_snr_weights(timesteps, cfg.min_snr_gamma)
        return diffusion_loss(pred, target, weights)

    # ---- saving and sampling -------------------------------------------------------------
    def metadata(self, *, epoch: int, step: int) -> dict[str, str]:
        from trainer.network.metadata import RunInfo, build_training_metadata

        info = RunInfo(
            session_id=self.session_id,
            training_started_at=self.started_at,
            epoch=epoch,
            steps=step,
            max_train_steps=self.plan.total_steps,
            num_epochs=self.plan.epochs,
            num_batches_per_epoch=self.plan.batches_per_epoch,
            num_train_images=self.plan.num_train_images,
            num_reg_images=self.plan.num_reg_images,
            dataset_dirs=self.scan.dataset_dirs(),
            reg_dataset_dirs=self.scan.reg_dataset_dirs(),
            tag_frequency=self.scan.tag_frequency(),
            bucket_info=self.plan.bucket_info(),
            base_model_version=self.family.base_model_version(self.info),
            modelspec_architecture=self.family.modelspec_architecture(self.info),
            modelspec_implementation=self.family.modelspec_implementation(self.info),
            optimizer=describe_optimizer(self.cfg.optimizer_type, self.cfg.optimizer_args),
            lr_warmup_steps=warmup_steps(self.cfg.lr_warmup_steps, self.plan.total_steps),
            v2=self.info.v2,
            v_parameterization=self.info.v_parameterization,
        )
        return build_training_metadata(self.cfg, info)

    def maybe_sample(self, *, step: int, epoch: int) -> None:
        from trainer.sampling import generate_samples, parse_prompts

        prompts = parse_prompts(self.cfg.sample_prompts)
        if not prompts:
            return
        p = self.precision
        paths = generate_samples(self.family, self.comp, prompts, out_dir=self.files.samples_dir,
                                 output_name=self.cfg.output_name, step=step, epoch=epoch,
                                 sampler=self.cfg.sample_sampler, device=p.device, dtype=p.weight_dtype,
                                 clip_skip=self.cfg.clip_skip, max_token_length=self.cfg.max_token_length,
                                 base_seed=self.cfg.seed)
        self.network.train()  # sampling switched the models to eval mode (network dropout)
        self.events.emit("sample", step=step, epoch=epoch, paths=[str(x) for x in paths],
                         prompts=[pr.prompt for pr in prompts])

    def _sample_due_after_step(self, step: int) -> bool:
        n = self.cfg.sample_every_n_steps
        return n > 0 and self.cfg.sample_every_n_epochs == 0 and step % n == 0

    # ---- the loop -------------------------------------------------------------------------
    def run(self) -> str:
        cfg, plan, pos = self.cfg, self.plan, self.position
        total, accum = plan.total_steps, cfg.gradient_accumulation_steps
        self.events.emit(
            "start", total_steps=total, epochs=plan.epochs, steps_per_epoch=plan.steps_per_epoch,
            num_train_images=plan.num_train_images, num_reg_images=plan.num_reg_images,
            buckets=plan.bucket_table(), resumed_from_step=pos.global_step,
            config_path=str(self.files.config_json), device=str(self.precision.device))
        if cfg.sample_at_first and pos.global_step == 0:
            self.maybe_sample(step=0, epoch=0)

        params = self.network.trainable_parameters()
        self.network.train()
        step_times: list[float] = []
        window = max(1, min(plan.steps_per_epoch, 100))
        while pos.epoch < plan.epochs and pos.global_step < total:
            batches = self.dataset.batches(pos.epoch)
            last = len(batches) - 1
            step_loss, t_step = 0.0, time.perf_counter()
            for i in range(pos.batch_in_epoch, len(batches)):
                batch = self.dataset.load_batch(batches[i], pos.epoch)
                loss = self.compute_loss(batch)
                if not torch.isfinite(loss):
                    raise TrainingError("nan_loss", f"the loss became {loss.item()} at step {pos.global_step + 1}",
                                        field="learning_rate", hint=NAN_HINT)
                scaled = loss / accum
                (self.grad_scaler.scale(scaled) if self.grad_scaler else scaled).backward()
                step_loss += loss.item() / accum
                pos.batch_in_epoch = i + 1
                if (i + 1) % accum != 0 and i != last:
                    continue
                self._optimizer_step(params)
                if not torch.stack([torch.isfinite(p).all() for p in params]).all():
                    # A finite loss can still give inf gradients, and the optimizer step then NaN
                    # weights; stop before a step event or a save reports them as good.
                    raise TrainingError("nan_loss", f"the LoRA weights became inf or nan at step "
                                        f"{pos.global_step + 1}", field="learning_rate", hint=NAN_HINT)
                pos.global_step += 1
                pos.loss_history = (pos.loss_history + [step_loss])[-window:]
                dt = time.perf_counter() - t_step
                step_times = (step_times + [dt])[-20:]
                self.events.emit(
                    "step", step=pos.global_step, total_steps=total, epoch=pos.epoch + 1, loss=step_loss,
                    avg_loss=sum(pos.loss_history) / len(pos.loss_history),
                    lr=self.optimizer.param_groups[0]["lr"] or 0.0, sec_per_step=dt,
                    eta_sec=sum(step_times) / len(step_times) * (total - pos.global_step))
                step_loss, t_step = 0.0, time.perf_counter()
                self._after_step()
                if pos.global_step >= total:
                    break
                if self.stop.requested() and i != last:
                    return self._stopped()
            if pos.batch_in_epoch < len(batches):
                break  # max_train_steps reached inside the epoch
            self._after_epoch()
            if self.stop.requested() and pos.epoch < plan.epochs and pos.global_step < total:
                return self._stopped()

        final_epoch = min(pos.epoch + (1 if pos.batch_in_epoch else 0), plan.epochs) or 1
        self.save_lora(self.files.lora(), kind="final", epoch=final_epoch, step=pos.global_step)
        return "completed"

    def _after_step(self) -> None:
        cfg, pos = self.cfg, self.position
        if cfg.save_every_n_steps and pos.global_step % cfg.save_every_n_steps == 0 \
                and pos.global_step < self.plan.total_steps:
            self.save_lora(self.files.step_lora(pos.global_step), kind="step", epoch=pos.epoch + 1,
                           step=pos.global_step)
        if self._sample_due_after_step(pos.global_step):
            self.maybe_sample(step=pos.global_step, epoch=pos.epoch + 1)

    def _after_epoch(self) -> None:
        cfg, pos, plan = self.cfg, self.position, self.plan
        pos.epoch, pos.batch_in_epoch = pos.epoch + 1, 0
        avg = sum(pos.loss_history) / max(1, len(pos.loss_history))
        self.events.emit("epoch", epoch=pos.epoch, epochs=plan.epochs, avg_loss=avg)
        is_last = pos.epoch >= plan.epochs or pos.global_step >= plan.total_steps
        if cfg.save_every_n_epochs and pos.epoch % cfg.save_every_n_epochs == 0 and not is_last:
            self.save_lora(self.files.epoch_lora(pos.epoch), kind="epoch", epoch=pos.epoch, step=pos.global_step)
        if cfg.sample_every_n_epochs and pos.epoch % cfg.sample_every_n_epochs == 0:
            self.maybe_sample(step=pos.global_step, epoch=pos.epoch)

    def _optimizer_step(self, params: list[torch.nn.Parameter]) -> None:
        from trainer.training.step import optimizer_step

        optimizer_step(self.optimizer, self.lr_scheduler, params, grad_scaler=self.grad_scaler,
                       max_grad_norm=self.cfg.max_grad_norm, network=self.network,
                       scale_weight_norms=self.cfg.scale_weight_norms)

    def _stopped(self) -> str:
        pos = self.position
        self.events.emit("log", message=f"stop requested: saving at step {pos.global_step}")
        path = self.files.lora("-stopped")  # an older one of this run name is replaced, its state too
        self.save_lora(path, kind="stopped", epoch=pos.epoch + 1, step=pos.global_step)
        return "stopped"


def run_training(cfg: TrainConfig, *, events: EventWriter, stop: Optional[StopSignal] = None) -> int:
    """Validate, train, and report. Returns the process exit code (0 completed/stopped, 1 failed)."""
    t0 = time.time()
    stop = stop or StopSignal(Path(cfg.output_dir) / f"{cfg.output_name}.stop")
    trainer: Optional[Trainer] = None
    issues = cfg.validate()
    errors = errors_of(issues)
    if cfg.resume:  # resuming continues a run whose files already exist
        errors = [i for i in errors if i.code != "output_exists"]
    for issue in warnings_of(issues):
        events.emit(issue.level, **issue.event_fields())
    if errors:
        for issue in errors:
            events.emit(issue.level, **issue.event_fields())
        events.emit("done", status="failed", files=[], wall_time_sec=time.time() - t0, steps_done=0,
                    message=errors[0].message)
        return 1
    removed = remove_stale_temp_files(Path(cfg.output_dir))
    if removed:
        events.emit("log", message=f"removed {len(removed)} temporary file(s) an interrupted run left in "
                    f"{cfg.output_dir}: {', '.join(p.name for p in removed)}")
    try:
        cfg.save(Path(cfg.output_dir) / f"{cfg.output_name}.json")
        trainer = Trainer(cfg, events, stop, reported_codes={issue.code for issue in issues})
        trainer.setup()
        status = trainer.run()
    except Exception as exc:  # noqa: BLE001 - every failure ends as an error event
        return _fail(events, trainer, t0, error_fields(exc))
    steps = trainer.position.global_step
    events.emit("done", status=status, files=trainer.saved_files, wall_time_sec=time.time() - t0, steps_done=steps,
                message=f"{status} after {steps} steps")
    return 0


def _fail(events: EventWriter, trainer: Optional[Trainer], t0: float, error: dict[str, Any]) -> int:
    events.emit("error", **error)
    files = trainer.saved_files if trainer else []
    steps = trainer.position.global_step if trainer and hasattr(trainer, "position") else 0
    events.emit("done", status="failed", files=files, wall_time_sec=time.time() - t0, steps_done=steps,
                message=error["message"])
    return 1
