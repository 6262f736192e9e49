"""Method "paired": one slider LoRA trained on matched image pairs (A_i low, B_i high).

Each step takes one pair, draws ONE noise tensor and ONE timestep, and noises both images with them.
The LoRA runs at multiplier +scale on B and −scale on A, and one optimizer step follows on the sum
of the two losses. With everything else shared, the only way to lower both losses is a LoRA
direction that turns A's content into B's: the slider. (The two backward passes accumulate into the
same gradients, which is the gradient of the summed loss with half the activation memory.)

The pieces are the engine's (families, LoraNetwork, NoiseSchedule, make_noise, sample_timesteps, the
optimizer and scheduler factories, the kohya writer and metadata); the loop is this file's own.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from trainer.config import TrainConfig
from trainer.errors import TrainingError
from trainer.network.kohya_format import LoraFile
from trainer.slider.progress import SliderEvents
from trainer.slider.spec import (SliderFiles, SliderSpec, Stage, caption_of, list_images, match_images,
                                 slider_comment)


@dataclass
class ImagePair:
    pair: str  # the pair's name
    low: Path
    high: Path
    low_caption: str
    high_caption: str


def collect_pairs(spec: SliderSpec) -> list[ImagePair]:
    """Every matched (A_i, B_i) of every folder pair, with captions (caption file, else the prompt)."""
    found = []
    for pair, name in zip(spec.pairs, spec.pair_names()):
        try:
            matched, _ = match_images(list_images(pair.low), list_images(pair.high), spec.pair_matching)
        except ValueError as exc:
            raise TrainingError("pair_mismatch", f"pair {name}: {exc}", field="pairs") from None
        for low, high in matched:
            found.append(ImagePair(name, low, high, caption_of(low, spec.caption_extension) or spec.prompt,
                                   caption_of(high, spec.caption_extension) or spec.prompt))
    return found


def paired_config(spec: SliderSpec, files: SliderFiles) -> TrainConfig:
    """The TrainConfig of the paired training (no data folder: the pairs come from the spec)."""
    values = spec.training_values()
    values.update(output_dir=str(files.output_dir), output_name=files.name, training_comment=slider_comment(spec))
    return TrainConfig.from_dict(values)


def check_config(cfg: TrainConfig, events: SliderEvents) -> None:
    """The engine's pre-flight rules for the paired config: warnings become events, the first error raises.
    Rules about the dataset folder do not apply (the pairs were checked by validate_spec)."""
    from trainer.slider.spec import spec_field

    for issue in cfg.validate():
        if issue.field in ("train_data_dir", "reg_data_dir") or issue.code == "output_exists":
            continue
        field = spec_field(issue.field, events.spec)
        if issue.level == "error":
            raise TrainingError(issue.code, issue.message, field=field)
        events.emit("warning", code=issue.code, field=field, message=issue.message, params=issue.params)


class PairedTrainer:
    """Set up once (`setup`), then `run` the steps; returns the trained LoraFile, or None when stopped."""

    def __init__(self, spec: SliderSpec, files: SliderFiles, events: SliderEvents, stop: Any, stage: Stage):
        self.spec, self.files, self.events, self.stop, self.stage = spec, files, events, stop, stage
        self.cfg = paired_config(spec, files)

    # ---- setup -----------------------------------------------------------------------------------
    def setup(self) -> None:
        from trainer.families import get_family
        from trainer.families.detect import resolve_model_info
        from trainer.network.lora import LoraNetwork, NetworkSpec
        from trainer.train import resolve_precision, seed_everything
        from trainer.training.noise import NoiseSchedule
        from trainer.training.optimizers import build_optimizer
        from trainer.training.schedulers import build_lr_scheduler

        cfg = self.cfg
        check_config(cfg, self.events)
        self.started_at = time.time()
        seed_everything(cfg.seed)
        self.precision = resolve_precision(cfg, self.events.train_fields())
        device = self.precision.device
        self.pairs = collect_pairs(self.spec)
        self.events.log(f"paired: {len(self.pairs)} image pairs")

        self.info = resolve_model_info(cfg)
        self.family = get_family(self.info)
        self.events.log(f"loading model {cfg.pretrained_model_name_or_path} ({self.info.family})")
        comp = self.comp = self.family.load(cfg, self.info)
        self.train_te = cfg.effective_text_encoder_lr() > 0 and any(
            root.kind == "text_encoder" for root in self.family.lora_roots(comp))
        for model in (comp.unet, *comp.text_encoders, comp.vae):
            model.requires_grad_(False)
        for model in (comp.unet, *comp.text_encoders):
            model.to(device, dtype=self.precision.weight_dtype)
        if cfg.gradient_checkpointing:
            self.family.enable_gradient_checkpointing(comp, text_encoder=self.train_te)
        self.network = LoraNetwork.inject(self.family, comp, NetworkSpec.from_config(cfg),
                                          train_unet=cfg.effective_unet_lr() > 0, train_text_encoder=self.train_te)
        self.network.to(device, dtype=self.precision.network_dtype)

        vae_dtype, _ = self.family.vae_dtype(self.precision.weight_dtype, no_half_vae=cfg.no_half_vae)
        comp.vae.to(device, dtype=vae_dtype)
        self.events.log("encoding the image pairs")
        self.samples = [self._prepare(p, vae_dtype) for p in self.pairs]
        comp.vae.to("cpu")  # not needed again while training

        groups = self.network.param_groups(cfg.effective_unet_lr(), cfg.effective_text_encoder_lr())
        self.optimizer = build_optimizer(cfg.optimizer_type, groups, cfg.learning_rate, cfg.optimizer_args)
        self.lr_scheduler = build_lr_scheduler(cfg.lr_scheduler, self.optimizer, total_steps=cfg.max_train_steps,
                                               warmup=cfg.lr_warmup_steps, num_cycles=cfg.lr_scheduler_num_cycles,
                                               power=cfg.lr_scheduler_power)
        self.grad_scaler = torch.amp.GradScaler("cuda") if self.precision.use_grad_scaler else None
        self.schedule = NoiseSchedule.from_scheduler_config(self.comp.scheduler_config)
        self.noise_generator = torch.Generator().manual_seed(cfg.seed)

    @torch.no_grad()
    def _prepare(self, pair: ImagePair, vae_dtype: torch.dtype) -> dict[str, Any]:
        """Both images at the same size (the low image's bucket), their latents and conditioning."""
        from trainer.data import images as imageops
        from trainer.data.buckets import BucketRules, assign_bucket, cover_size, crop_offsets

        low, high = imageops.load_image(pair.low), imageops.load_image(pair.high)
        bucket = assign_bucket(low.size, BucketRules.from_config(self.cfg)).bucket
        sample: dict[str, Any] = {"pair": pair}
        for side, img, caption in (("low", low, pair.low_caption), ("high", high, pair.high_caption)):
            resized = cover_size(img.size, bucket)
            left, top = crop_offsets(resized, bucket)
            img = imageops.resize(img, resized).crop((left, top, left + bucket[0], top + bucket[1]))
            pixels = imageops.to_tensor(img)[None].to(self.precision.device, vae_dtype)
            sample[side] = {
                "latents": self._encode(pixels).float(),
                "caption": caption,
                "cond": None if self.train_te else self._encode_text([caption]),
                "batch": {"original_sizes": torch.tensor([[resized[1], resized[0]]]),
                          "crop_top_lefts": torch.tensor([[top, left]]),
                          "target_sizes": torch.tensor([[bucket[1], bucket[0]]])},
            }
        return sample

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> scaled latents, sampled with a seeded generator as the engine caches them."""
        dist = self.comp.vae.encode(pixels).latent_dist
        gen = torch.Generator().manual_seed(self.cfg.seed)
        eps = torch.randn(dist.mean.shape, generator=gen, dtype=dist.mean.dtype).to(dist.mean.device)
        return torch.nan_to_num(dist.mean + dist.std * eps) * self.family.latent_scale

    def _encode_text(self, captions: list[str]) -> dict[str, torch.Tensor]:
        with self._autocast():
            return self.family.encode_prompts(self.comp, captions, clip_skip=self.cfg.clip_skip,
                                              max_token_length=self.cfg.max_token_length)

    def _autocast(self):
        p = self.precision
        if p.autocast_dtype is None:
            return torch.autocast(p.device.type, enabled=False)
        return torch.autocast(p.device.type, dtype=p.autocast_dtype)

    # ---- the loop ----------------------------------------------------------------------------------
    def side_loss(self, side: dict[str, Any], noise: torch.Tensor, timesteps: torch.Tensor,
                  multiplier: float) -> torch.Tensor:
        """The diffusion loss of one image with the LoRA at `multiplier`."""
        from trainer.training.loss import diffusion_loss

        cfg, device = self.cfg, self.precision.device
        self.network.set_multiplier(multiplier)
        latents = side["latents"]
        cond = self._encode_text([side["caption"]]) if self.train_te else side["cond"]
        noisy = self.schedule.add_noise(latents, noise, timesteps)
        with self._autocast():
            pred = self.family.predict(self.comp, noisy.to(self.precision.weight_dtype), timesteps, cond,
                                       side["batch"])
        weights = torch.ones(1, device=device)
        if cfg.min_snr_gamma > 0:
            weights = weights * self.schedule.min_snr_weights(timesteps, cfg.min_snr_gamma)
        return diffusion_loss(pred, self.schedule.target(latents, noise, timesteps), weights)

    def run(self) -> Optional[LoraFile]:
        from trainer.train import NAN_HINT
        from trainer.training.noise import make_noise, sample_timesteps

        cfg, total, scale = self.cfg, self.cfg.max_train_steps, self.spec.slider_scale
        params = self.network.trainable_parameters()
        self.network.train()
        order: list[int] = []
        for step in range(1, total + 1):
            t_step = time.perf_counter()
            if not order:  # a new pass over the pairs, in a seeded order
                order = list(range(len(self.samples)))
                random.Random(cfg.seed + step).shuffle(order)
            sample = self.samples[order.pop()]
            latents = sample["low"]["latents"]
            noise = make_noise(latents, self.noise_generator, offset_type=cfg.noise_offset_type,
                               noise_offset=cfg.noise_offset, multires_iterations=cfg.multires_noise_iterations,
                               multires_discount=cfg.multires_noise_discount)
            timesteps = sample_timesteps(1, cfg.min_timestep, cfg.max_timestep, self.noise_generator, latents.device)
            loss_value = 0.0
            for side, multiplier in (("high", scale), ("low", -scale)):
                loss = self.side_loss(sample[side], noise, timesteps, multiplier)
                if not torch.isfinite(loss):
                    raise TrainingError("nan_loss", f"the loss became {loss.item()} at step {step}",
                                        field="learning_rate", hint=NAN_HINT)
                (self.grad_scaler.scale(loss) if self.grad_scaler else loss).backward()
                loss_value += loss.item()
            self._optimizer_step(params)
            if not torch.stack([torch.isfinite(p).all() for p in params]).all():
                raise TrainingError("nan_loss", f"the LoRA weights became inf or nan at step {step}",
                                    field="learning_rate", hint=NAN_HINT)
            self.step = step
            self.events.step_done(loss=loss_value, lr=self.optimizer.param_groups[0]["lr"] or 0.0,
                                  sec_per_step=time.perf_counter() - t_step, epoch=1)
            if self.stop.requested() and step < total:
                self.events.log(f"stop requested: saving at step {step}")
                return None
        return self.lora_file()

    def _optimizer_step(self, params: list[torch.nn.Parameter]) -> None:
        from trainer.training.step import optimizer_step

        optimizer_step(self.optimizer, self.lr_scheduler, params, grad_scaler=self.grad_scaler,
                       max_grad_norm=self.cfg.max_grad_norm, network=self.network,
                       scale_weight_norms=self.cfg.scale_weight_norms)

    # ---- the result ----------------------------------------------------------------------------------
    def lora_file(self) -> LoraFile:
        """The LoRA as trained (multiplier 1: +1 = high), with sd-scripts' training metadata."""
        from trainer.network.metadata import RunInfo, build_training_metadata
        from trainer.training.optimizers import describe_optimizer
        from trainer.training.schedulers import warmup_steps

        cfg = self.cfg
        self.network.set_multiplier(1.0)
        dirs: dict[str, dict[str, int]] = {}
        for pair in self.spec.pairs:
            for folder in (pair.low, pair.high):
                dirs[Path(folder).name] = {"n_repeats": 1, "img_count": len(list_images(folder))}
        info = RunInfo(
            session_id=uuid.uuid4().hex[:16], training_started_at=self.started_at, epoch=1,
            steps=getattr(self, "step", 0), max_train_steps=cfg.max_train_steps, num_epochs=1,
            num_batches_per_epoch=cfg.max_train_steps, num_train_images=2 * len(self.pairs), num_reg_images=0,
            dataset_dirs=dirs, base_model_version=self.family.base_model_version(self.info),
            modelspec_architecture=self.family.modelspec_architecture(self.info),
            modelspec_implementation=self.family.modelspec_implementation(self.info),
            optimizer=describe_optimizer(cfg.optimizer_type, cfg.optimizer_args),
            lr_warmup_steps=warmup_steps(cfg.lr_warmup_steps, cfg.max_train_steps), v2=self.info.v2,
            v_parameterization=self.info.v_parameterization)
        metadata = build_training_metadata(cfg, info)
        return self.network.to_lora_file(metadata)


def train_paired(spec: SliderSpec, files: SliderFiles, events: SliderEvents, stop: Any,
                 stage: Stage) -> tuple[Optional[LoraFile], Optional[LoraFile]]:
    """Train the paired slider. Returns (LoRA, None) when completed, (None, LoRA so far) when stopped."""
    trainer = PairedTrainer(spec, files, events, stop, stage)
    trainer.setup()
    result = trainer.run()
    if result is None:
        return None, trainer.lora_file()
    return result, None
