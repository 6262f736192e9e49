"""The training dataset: batches from the step plan, loaded and augmented, with optional latent cache.

Reproducibility: every random choice of a sample (caption dropout/shuffle, flip, crop, colour) comes
from an RNG seeded by (seed, epoch, sample id), so a batch's content does not depend on the order in
which batches are loaded, on data-loader workers, or on whether latents are cached. Epochs are
0-based indices, as in `steps.epoch_batches`.

Batch dict (`load_batch`):
    latents          (B, C, h, w) float32, when latents are cached; otherwise
    pixel_values     (B, 3, H, W) float32 in [-1, 1]
    captions         list[str]
    loss_weights     (B,) float32 (prior_loss_weight for reg samples)
    original_sizes   (B, 2) int64, (height, width) of the image file          | SDXL size
    crop_top_lefts   (B, 2) int64, (top, left) of the crop in the resized image | conditioning,
    target_sizes     (B, 2) int64, (height, width) of the bucket               | diffusers order
    image_paths      list[str], is_reg (B,) bool
    masks            (B, 1, H, W) float32 in [0, 1], with masked_loss / alpha_mask (trainer.data.masks)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from trainer.data import images as imageops
from trainer.data.buckets import crop_offsets
from trainer.data.captions import CaptionOptions, process_caption
from trainer.data.latent_cache import (BadCacheFile, CacheKey, CachedLatents, cache_path, caching_blockers, load_latents,
                                       save_latents)
from trainer.data.masks import load_mask, mask_to_bucket, uses_masks
from trainer.data.scan import DatasetError, DatasetScan, scan_dataset
from trainer.data.steps import PlannedImage, StepPlan, epoch_batches, plan_steps

EncodeFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class CacheReport:
    images: int = 0  # images whose latents are now cached
    encoded: int = 0
    reused_from_disk: int = 0
    written_to_disk: int = 0
    disk_errors: int = 0  # cache files that could not be written (kept in memory only)
    skipped_reason: str = ""  # why nothing was cached, when nothing was
    rebuilt: list[BadCacheFile] = field(default_factory=list)  # disk cache files that were bad, encoded again


def cache_refusal_reason(cfg) -> str:
    """Why latents cannot be cached with these settings ("" when they can)."""
    reasons = caching_blockers(cfg)
    if not reasons:
        return ""
    return f"{' and '.join(reasons)} change the image every epoch, so latents are not cached"


def default_encoder_id(cfg) -> str:
    """What identifies the VAE that encodes the latents: the base model and VAE paths."""
    def resolved(path: str) -> str:
        p = Path(path).expanduser()
        return str(p.resolve()) if path and p.exists() else path

    return f"model={resolved(cfg.pretrained_model_name_or_path)};vae={resolved(cfg.vae)}"


class LoraDataset:
    def __init__(self, cfg, scan: Optional[DatasetScan] = None, family_latent_scale: float = 1.0, *,
                 plan: Optional[StepPlan] = None):
        self.cfg = cfg
        self.scan = scan if scan is not None else scan_dataset(cfg)
        self.scan.raise_for_problems()
        self.plan = plan if plan is not None else plan_steps(cfg, self.scan)
        if self.plan.batches_per_epoch == 0:
            raise DatasetError("no_images", "The dataset has no images to train on.", field="train_data_dir")
        self.latent_scale = family_latent_scale
        self.caption_options = CaptionOptions.from_config(cfg)
        self.cache_report: Optional[CacheReport] = None
        self._latents: dict[int, tuple[torch.Tensor, Optional[torch.Tensor]]] = {}

    # ---- batches ------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.plan.batches_per_epoch

    def batches(self, epoch: int) -> list[list[int]]:
        return epoch_batches(self.plan, epoch, self.cfg.seed)

    def load_batch(self, indices: list[int], epoch: int) -> dict:
        samples = [self._load_sample(sid, epoch) for sid in indices]
        batch: dict = {
            "captions": [s["caption"] for s in samples],
            "loss_weights": torch.tensor([s["loss_weight"] for s in samples], dtype=torch.float32),
            "original_sizes": torch.tensor([s["original_size"] for s in samples], dtype=torch.int64),
            "crop_top_lefts": torch.tensor([s["crop_top_left"] for s in samples], dtype=torch.int64),
            "target_sizes": torch.tensor([s["target_size"] for s in samples], dtype=torch.int64),
            "image_paths": [s["path"] for s in samples],
            "is_reg": torch.tensor([s["is_reg"] for s in samples], dtype=torch.bool),
        }
        key = "latents" if self.latents_cached else "pixel_values"
        batch[key] = torch.stack([s["tensor"] for s in samples])
        if uses_masks(self.cfg):
            batch["masks"] = torch.stack([s["mask"] for s in samples])
        return batch

    def _load_sample(self, sample_id: int, epoch: int) -> dict:
        cfg = self.cfg
        image = self.plan.sample_image(sample_id)
        rng = _sample_rng("image", cfg.seed, epoch, sample_id)
        flip = cfg.flip_aug and rng.random() < 0.5
        if self.latents_cached:
            latents, flipped = self._latents[self.plan.samples[sample_id]]
            tensor = flipped if flip else latents
            resized_size = image.resized_size
            left, top = crop_offsets(resized_size, image.bucket)
        else:
            pil = imageops.load_image(image.path)
            pil, resized_size, (left, top) = imageops.fit_to_bucket(
                pil, image.image_size, image.resized_size, image.bucket, random_crop=cfg.random_crop, rng=rng)
            if cfg.color_aug:
                pil = imageops.color_augment(pil, rng)
            if flip:
                pil = imageops.flip_horizontal(pil)
            tensor = imageops.to_tensor(pil)
        mask = self._mask(image, resized_size, (left, top), flip) if uses_masks(cfg) else None
        if flip:
            left = resized_size[0] - left - image.bucket[0]
        caption_rng = _sample_rng("caption", cfg.seed, epoch, sample_id)
        return {
            "mask": mask,
            "tensor": tensor,
            "caption": process_caption(image.caption, self.caption_options, epoch=epoch, rng=caption_rng),
            "loss_weight": image.loss_weight,
            "original_size": (image.image_size[1], image.image_size[0]),
            "crop_top_left": (top, left),
            "target_size": (image.bucket[1], image.bucket[0]),
            "path": str(image.path),
            "is_reg": image.is_reg,
        }

    def _mask(self, image: PlannedImage, resized_size: tuple[int, int], crop: tuple[int, int],
              flip: bool) -> torch.Tensor:
        """The image's loss mask at bucket size, (1, H, W) in [0, 1] (ones without one), with the image's resize,
        crop and flip."""
        mask = load_mask(image.path, self.cfg)
        if mask is not None:
            if mask.size != tuple(image.image_size):  # a mask drawn at another size: stretched to the image's
                mask = mask.resize(tuple(image.image_size))
            mask = mask_to_bucket(mask, resized_size, crop, image.bucket, flip=flip)
        if mask is None:
            return torch.ones((1, image.bucket[1], image.bucket[0]), dtype=torch.float32)
        return torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0).unsqueeze(0)

    # ---- latent cache -------------------------------------------------------------------
    @property
    def can_cache_latents(self) -> bool:
        return not cache_refusal_reason(self.cfg)

    @property
    def latents_cached(self) -> bool:
        return bool(self._latents) and len(self._latents) == len(self.plan.images)

    def cache_latents(self, encode_fn: EncodeFn, *, to_disk: Optional[bool] = None,
                      encoder_id: Optional[str] = None, latent_channels: Optional[int] = None,
                      batch_size: int = 1, progress: Optional[Callable[[int, int], None]] = None) -> int:
        """Encode every image once (center crop, plus its mirror with flip_aug); returns the image count.

        `encode_fn(pixel_values) -> latents` gets (B, 3, H, W) in [-1, 1] and returns scaled latents.
        With `to_disk` (default cfg.cache_latents_to_disk) a matching `.npz` beside the image is reused
        and new ones are written. `encoder_id` names the encoder (default: the model and VAE paths of the
        config); a disk cache written by another encoder is not reused. A disk cache file that is
        damaged, shaped wrong (`latent_channels`: the encoder's, when known) or not finite is listed in
        `cache_report.rebuilt` and encoded again.
        Refused (returns 0, see `cache_report.skipped_reason`) with color_aug or random_crop.
        """
        reason = cache_refusal_reason(self.cfg)
        if reason:
            self.cache_report = CacheReport(skipped_reason=reason)
            return 0
        to_disk = self.cfg.cache_latents_to_disk if to_disk is None else to_disk
        if encoder_id is None:
            encoder_id = default_encoder_id(self.cfg)
        report = CacheReport()
        pending: list[tuple[int, Optional[CacheKey]]] = []
        for index, image in enumerate(self.plan.images):
            key = self._cache_key(image, encoder_id) if to_disk else None
            cached = None
            try:
                if key is not None:
                    cached = load_latents(cache_path(image.path, image.bucket), key, channels=latent_channels)
            except BadCacheFile as bad:
                report.rebuilt.append(bad)
            if cached is not None:
                self._store(index, cached)
                report.reused_from_disk += 1
            else:
                pending.append((index, key))
        # Images of one bucket share a shape, so they are encoded together.
        by_bucket: dict[tuple[int, int], list[tuple[int, Optional[CacheKey]]]] = {}
        for item in pending:
            by_bucket.setdefault(self.plan.images[item[0]].bucket, []).append(item)
        done, step = report.reused_from_disk, max(1, batch_size)
        for items in by_bucket.values():
            for start in range(0, len(items), step):
                group = items[start:start + step]
                self._encode_group(group, encode_fn, report)
                done += len(group)
                if progress:
                    progress(done, len(self.plan.images))
        report.images = len(self._latents)
        self.cache_report = report
        return report.images

    def _encode_group(self, group: list[tuple[int, Optional[CacheKey]]], encode_fn: EncodeFn,
                      report: CacheReport) -> None:
        flip = self.cfg.flip_aug
        pixels = []
        for index, _ in group:
            image = self.plan.images[index]
            pil, _, _ = imageops.fit_to_bucket(imageops.load_image(image.path), image.image_size,
                                               image.resized_size, image.bucket)
            pixels.append(imageops.to_tensor(pil))
        batch = torch.stack(pixels)
        with torch.no_grad():
            latents = encode_fn(batch).detach().float().cpu()
            flipped = encode_fn(torch.flip(batch, dims=[3])).detach().float().cpu() if flip else None
        for j, (index, key) in enumerate(group):
            cached = CachedLatents(latents[j].numpy(), flipped[j].numpy() if flipped is not None else None)
            self._store(index, cached)
            report.encoded += 1
            if key is not None:
                try:
                    save_latents(cache_path(self.plan.images[index].path, key.bucket), key, cached)
                    report.written_to_disk += 1
                except OSError:
                    report.disk_errors += 1  # e.g. a read-only dataset folder: the memory cache still works

    def _cache_key(self, image: PlannedImage, encoder_id: str) -> CacheKey:
        return CacheKey.for_image(image.path, image_size=image.image_size, bucket=image.bucket,
                                  resized_size=image.resized_size,
                                  crop_left_top=crop_offsets(image.resized_size, image.bucket),
                                  flipped=self.cfg.flip_aug, encoder_id=encoder_id,
                                  latent_scale=self.latent_scale)

    def _store(self, index: int, cached: CachedLatents) -> None:
        latents = torch.from_numpy(np.ascontiguousarray(cached.latents, dtype=np.float32))
        flipped = None
        if cached.flipped is not None:
            flipped = torch.from_numpy(np.ascontiguousarray(cached.flipped, dtype=np.float32))
        self._latents[index] = (latents, flipped)

    # ---- torch DataLoader -----------------------------------------------------------------
    def loader(self, epoch: int, *, num_workers: Optional[int] = None) -> torch.utils.data.DataLoader:
        """A DataLoader yielding this epoch's batches in order (workers load ahead in parallel)."""
        workers = self.cfg.max_data_loader_n_workers if num_workers is None else num_workers
        keys = [(epoch, tuple(b)) for b in self.batches(epoch)]
        return torch.utils.data.DataLoader(_BatchView(self), batch_size=None, sampler=keys,
                                           num_workers=workers, collate_fn=_identity)


class _BatchView(torch.utils.data.Dataset):
    """Maps a key (epoch, sample ids) to a loaded batch; stateless, so workers can load any batch."""

    def __init__(self, dataset: LoraDataset):
        self.dataset = dataset

    def __getitem__(self, key: tuple[int, tuple[int, ...]]) -> dict:
        epoch, indices = key
        return self.dataset.load_batch(list(indices), epoch)


def _identity(x):
    return x


def _sample_rng(purpose: str, seed: int, epoch: int, sample_id: int) -> random.Random:
    # A string seed is hashed with SHA-512 by `random`, so this is stable across runs and platforms.
    return random.Random(f"lora_gui.{purpose}:{seed}:{epoch}:{sample_id}")

