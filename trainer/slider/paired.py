"""Method "paired": one slider LoRA trained on matched image pairs (A_i low, B_i high).

Each pair gets ONE noise tensor and ONE timestep, which noise both images. The LoRA runs at multiplier
+scale on B and −scale on A, and the pair's loss is the sum of the two losses. With everything else
shared, the only way to lower both is a LoRA direction that turns A's content into B's: the slider.

This is the engine's training core (trainer/training/loop.py) with another batch source (pairs in a
seeded order, `train_batch_size` pairs a step per process) and another objective; model setup, attention,
starting weights, optimizer (Adafactor's rules too), accumulation, several processes and resume
(`train_args`: resume, save_state) are the core's.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from trainer.config import TrainConfig
from trainer.errors import TrainingError
from trainer.network.kohya_format import LoraFile
from trainer.slider.progress import SliderEvents
from trainer.slider.spec import (SliderFiles, SliderSpec, Stage, caption_of, list_images, match_images,
                                 slider_comment)
from trainer.training.batches import Batch, Shard
from trainer.training.conditioning import Conditioner
from trainer.training.loop import TrainingRun
from trainer.training.loss import DiffusionObjective
from trainer.training.resources import ResourceMeter


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


# ---- the batch source and the objective ------------------------------------------------------------
@dataclass
class PairPlan:
    total_steps: int
    epochs: int  # passes over the pairs
    steps_per_epoch: int
    batches_per_epoch: int
    gradient_accumulation_steps: int

    @classmethod
    def of(cls, pairs: int, cfg: TrainConfig, processes: int) -> "PairPlan":
        batches = math.ceil(pairs / (cfg.train_batch_size * processes))
        accum = max(1, cfg.gradient_accumulation_steps)
        steps_per_epoch = math.ceil(batches / accum)
        return cls(cfg.max_train_steps, math.ceil(cfg.max_train_steps / steps_per_epoch), steps_per_epoch,
                   batches, accum)


class PairBatches:
    """Each epoch a pass over the pairs in a seeded order, cut into batches of train_batch_size pairs per
    process."""

    def __init__(self, samples: list[dict[str, Any]], plan: PairPlan, shard: Shard, seed: int):
        self.samples, self.plan, self.shard, self.seed = samples, plan, shard, seed

    def count(self, epoch: int) -> int:
        return self.plan.batches_per_epoch

    def iterate(self, epoch: int, start: int) -> Iterator[Batch]:
        order = list(range(len(self.samples)))
        random.Random(f"lora_gui.pairs:{self.seed}:{epoch}").shuffle(order)
        size = self.shard.per_process * self.shard.count
        for index in range(start, self.plan.batches_per_epoch):
            pairs = [self.samples[i] for i in order[index * size:(index + 1) * size]]
            offset, local = self.shard.local(pairs)
            yield Batch(index, len(pairs), offset, {"pairs": local} if local else None, pairs)


class PairedObjective:
    """The sum over this process's pairs of loss(B, +scale) + loss(A, −scale), one noise and timestep per
    pair (drawn for every pair of the batch on every process, so the generator stays in step)."""

    def __init__(self, diffusion: DiffusionObjective, network: Any, scale: float):
        self.diffusion, self.network, self.scale = diffusion, network, scale

    def __call__(self, batch: Batch) -> torch.Tensor:
        total = torch.zeros((), device=self.diffusion.device)
        for j, sample in enumerate(batch.global_items):
            noise, timesteps = self.diffusion.draw(tuple(sample["low"]["latents"].shape))
            if batch.data is None or not batch.offset <= j < batch.offset + len(batch.data["pairs"]):
                continue
            for side, multiplier in (("high", self.scale), ("low", -self.scale)):
                total = total + self._side(sample[side], noise, timesteps, multiplier)
        self.network.set_multiplier(1.0)
        return total

    def _side(self, side: dict[str, Any], noise: torch.Tensor, timesteps: torch.Tensor,
              multiplier: float) -> torch.Tensor:
        self.network.set_multiplier(multiplier)  # autograd keeps the value each forward used
        cond = self.diffusion.conditioner.encode_text([side["caption"]])
        weights = torch.ones(1, device=self.diffusion.device)
        return self.diffusion.side_loss(side["latents"], noise, timesteps, cond, side["extras"], weights).sum()


@torch.no_grad()
def prepare_pair(pair: ImagePair, cfg: TrainConfig, conditioner: Conditioner) -> dict[str, Any]:
    """Both images at the same size (the low image's bucket) and their latents."""
    from trainer.data import images as imageops
    from trainer.data.buckets import BucketRules, assign_bucket, cover_size, crop_offsets

    low, high = imageops.load_image(pair.low), imageops.load_image(pair.high)
    bucket = assign_bucket(low.size, BucketRules.from_config(cfg)).bucket
    sample: dict[str, Any] = {"pair": pair}
    for side, img, caption in (("low", low, pair.low_caption), ("high", high, pair.high_caption)):
        resized = cover_size(img.size, bucket)
        left, top = crop_offsets(resized, bucket)
        img = imageops.resize(img, resized).crop((left, top, left + bucket[0], top + bucket[1]))
        sample[side] = {
            "latents": conditioner.encode_pixels(imageops.to_tensor(img)[None]).float(),
            "caption": caption,
            "extras": {"original_sizes": torch.tensor([[resized[1], resized[0]]]),
                       "crop_top_lefts": torch.tensor([[top, left]]),
                       "target_sizes": torch.tensor([[bucket[1], bucket[0]]])},
        }
    return sample


# ---- the run ------------------------------------------------------------------------------------------
@dataclass
class PairedHooks:
    events: SliderEvents
    state_dir: Path  # where a stop saves the state to resume from
    generator: torch.Generator
    meter: ResourceMeter

    def started(self, run: TrainingRun) -> None:
        pass  # the slider stream's start and stage events come from trainer/slider/run.py

    def stepped(self, run: TrainingRun, loss: float, seconds: float) -> None:
        self.events.step_done(loss=loss, lr=run.optimizer.param_groups[0]["lr"] or 0.0, sec_per_step=seconds,
                              epoch=1, resources=self.meter.read())

    def epoch_ended(self, run: TrainingRun) -> None:
        pass

    def stopped(self, run: TrainingRun) -> str:
        from trainer.training.state import save_state

        self.events.log(f"stop requested: saving at step {run.position.global_step}")
        if run.accelerator.is_main_process:
            save_state(self.state_dir, position=run.position, network_state=run.network.trainable_state(),
                       optimizer=run.optimizer, scheduler=run.lr_scheduler, noise_generator=self.generator,
                       grad_scaler=run.accelerator.scaler, num_processes=run.accelerator.num_processes)
        run.accelerator.wait_for_everyone()
        return "stopped"

    def completed(self, run: TrainingRun) -> str:
        return "completed"


@dataclass
class PairedTraining:
    run: TrainingRun
    model: Any  # ModelSetup: the family and model info the file's metadata names
    pair_count: int
    started_at: float


def build_paired_run(spec: SliderSpec, files: SliderFiles, events: SliderEvents, stop: Any) -> PairedTraining:
    import time

    from trainer.families import get_family
    from trainer.families.detect import resolve_model_info
    from trainer.training.accel import make_accelerator
    from trainer.training.model_setup import setup_model
    from trainer.training.noise import NoiseSchedule
    from trainer.training.setup import build_optimization, make_conditioner, restore
    from trainer.training.state import TrainPosition, load_state

    started_at = time.time()
    cfg = paired_config(spec, files)
    check_config(cfg, events)
    resume = load_state(Path(cfg.resume)) if cfg.resume else None
    accelerator, precision = make_accelerator(cfg)
    pairs = collect_pairs(spec)
    events.log(f"paired: {len(pairs)} image pairs")
    info = resolve_model_info(cfg)
    model = setup_model(cfg, info, get_family(info), device=accelerator.device, precision=precision,
                        events=events.train_fields())
    conditioner = make_conditioner(cfg, model, accelerator)
    events.log("encoding the image pairs")
    samples = [prepare_pair(p, cfg, conditioner) for p in pairs]
    model.comp.vae.to("cpu")  # not needed again while training

    generator = torch.Generator().manual_seed(cfg.seed)
    schedule = NoiseSchedule.from_scheduler_config(model.comp.scheduler_config, zero_terminal_snr=cfg.zero_terminal_snr)
    diffusion = DiffusionObjective(cfg, model.family, model.comp, conditioner, schedule, generator,
                                   weight_dtype=precision.weight_dtype, autocast=accelerator.autocast)
    plan = PairPlan.of(len(samples), cfg, accelerator.num_processes)
    optimizer, lr_scheduler = build_optimization(cfg, model, accelerator, total_steps=plan.total_steps)
    batches = PairBatches(samples, plan, Shard(accelerator.process_index, accelerator.num_processes,
                                               cfg.train_batch_size), cfg.seed)
    run = TrainingRun(cfg, accelerator, model.network, batches, PairedObjective(diffusion, model.network,
                                                                                spec.slider_scale),
                      optimizer, lr_scheduler, TrainPosition(0, 0, 0, []), stop,
                      PairedHooks(events, files.stopped_lora.with_name(files.stopped_lora.stem + "-state"), generator,
                                  ResourceMeter(accelerator.device)))
    if resume is not None:
        restore(run, resume, generator, source=cfg.resume, events=events.train_fields())
        events.step += run.position.global_step  # the steps done before the stop count as done
    return PairedTraining(run, model, len(pairs), started_at)


def lora_file(training: PairedTraining, spec: SliderSpec) -> LoraFile:
    """The LoRA as trained (multiplier 1: +1 = high), with sd-scripts' training metadata."""
    import uuid

    from trainer.network.metadata import RunInfo, build_training_metadata
    from trainer.training.optimizers import describe_optimizer
    from trainer.training.schedulers import warmup_steps

    run, model, count = training.run, training.model, training.pair_count
    cfg = run.cfg
    run.network.set_multiplier(1.0)
    dirs: dict[str, dict[str, int]] = {}
    for pair in spec.pairs:
        for folder in (pair.low, pair.high):
            dirs[Path(folder).name] = {"n_repeats": 1, "img_count": len(list_images(folder))}
    family, info = model.family, model.info
    run_info = RunInfo(
        session_id=uuid.uuid4().hex[:16], training_started_at=training.started_at, epoch=1,
        steps=run.position.global_step, max_train_steps=cfg.max_train_steps, num_epochs=1,
        num_batches_per_epoch=cfg.max_train_steps, num_train_images=2 * count, num_reg_images=0,
        dataset_dirs=dirs, base_model_version=family.base_model_version(info),
        modelspec_architecture=family.modelspec_architecture(info),
        modelspec_implementation=family.modelspec_implementation(info),
        optimizer=describe_optimizer(cfg.optimizer_type, cfg.optimizer_args),
        lr_warmup_steps=warmup_steps(cfg.lr_warmup_steps, cfg.max_train_steps), v2=info.v2,
        v_parameterization=info.v_parameterization)
    return run.network.to_lora_file(build_training_metadata(cfg, run_info))


def train_paired(spec: SliderSpec, files: SliderFiles, events: SliderEvents, stop: Any,
                 stage: Stage) -> tuple[Optional[LoraFile], Optional[LoraFile]]:
    """Train the paired slider. Returns (LoRA, None) when completed, (None, LoRA so far) when stopped."""
    from trainer.training.loop import train

    training = build_paired_run(spec, files, events, stop)
    status = train(training.run)
    lora = lora_file(training, spec)
    return (lora, None) if status == "completed" else (None, lora)
