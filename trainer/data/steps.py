"""The dataset plan, the exact step count, and each epoch's batch order (torch-free).

One plan serves the UI's preview and the training run, so the numbers shown are by construction
the steps that run:

- Each image becomes `repeats` samples. Regularisation images are balanced to the train sample
  count as sd-scripts does: registered in order with their folder repeats until the count is reached
  (extra reg images are unused), then raised one repeat at a time, round-robin, until it is.
- Samples are grouped by bucket; a batch never mixes buckets.
  batches_per_epoch = sum over buckets of ceil(count_b / batch_size)
  steps_per_epoch   = ceil(batches_per_epoch / gradient_accumulation_steps)
  (the loop steps the optimizer after the last batch of an epoch even with fewer accumulated batches)
- max_train_steps > 0: total = max_train_steps and epochs = ceil(total / steps_per_epoch);
  otherwise epochs = max_train_epochs and total = epochs x steps_per_epoch.
- `epoch_batches(plan, epoch, seed)` gives the batches of an epoch (lists of sample ids), a pure
  function of (plan, epoch, seed). Epochs are 0-based indices (0 = the first epoch).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from trainer.data.buckets import BucketRules, Size, assign_bucket
from trainer.data.scan import DatasetScan, ImageRecord, scan_dataset


@dataclass(frozen=True)
class PlannedImage:
    path: Path
    caption: str
    is_reg: bool
    loss_weight: float
    image_size: Size  # (width, height) as loaded
    bucket: Size
    resized_size: Size
    repeats: int  # samples per epoch (balanced repeats for reg images)
    ar_error: float


@dataclass(frozen=True)
class BucketRow:
    resolution: Size  # (width, height)
    num_images: int  # distinct image files
    count: int  # samples per epoch: images x repeats, including balanced reg copies
    batches: int

    def to_dict(self) -> dict[str, Any]:
        return {"width": self.resolution[0], "height": self.resolution[1], "images": self.num_images,
                "count": self.count, "batches": self.batches}


@dataclass
class StepPlan:
    batches_per_epoch: int
    steps_per_epoch: int
    epochs: int
    total_steps: int
    num_train_images: int  # train images x repeats
    num_reg_images: int  # reg image files found
    buckets: list[BucketRow]
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    num_reg_samples: int = 0  # reg samples per epoch after balancing
    num_reg_images_used: int = 0
    mean_ar_error: float = 0.0
    images: list[PlannedImage] = field(default_factory=list, repr=False)
    samples: list[int] = field(default_factory=list, repr=False)  # sample id -> index into images
    bucket_samples: list[list[int]] = field(default_factory=list, repr=False)  # aligned with buckets

    def sample_image(self, sample_id: int) -> PlannedImage:
        return self.images[self.samples[sample_id]]

    def epoch_batches(self, epoch: int, seed: int) -> list[list[int]]:
        return epoch_batches(self, epoch, seed)

    def bucket_table(self) -> list[dict[str, Any]]:
        """JSON-ready rows for the UI and the start event."""
        return [row.to_dict() for row in self.buckets]

    def bucket_info(self) -> dict[str, Any]:
        """ss_bucket_info as sd-scripts writes it."""
        return {"buckets": {i: {"resolution": list(row.resolution), "count": row.count}
                            for i, row in enumerate(self.buckets)},
                "mean_img_ar_error": self.mean_ar_error}


def count_steps(batches_per_epoch: int, gradient_accumulation_steps: int, max_train_epochs: int,
                max_train_steps: int) -> tuple[int, int, int]:
    """(steps_per_epoch, epochs, total_steps)."""
    steps_per_epoch = math.ceil(batches_per_epoch / max(1, gradient_accumulation_steps))
    if steps_per_epoch == 0:
        return 0, 0, 0
    if max_train_steps > 0:
        return steps_per_epoch, math.ceil(max_train_steps / steps_per_epoch), max_train_steps
    return steps_per_epoch, max_train_epochs, max_train_epochs * steps_per_epoch


def balance_reg_repeats(num_train_samples: int, reg_repeats: Sequence[int]) -> list[int]:
    """Repeats of each reg image (0 = unused) so reg samples match the train samples, as sd-scripts does.

    In order, each image first counts with its folder repeats until the total is reached; if all of
    them fall short, one repeat is added to each in turn, from the first, until it is reached.
    """
    balanced = [0] * len(reg_repeats)
    if num_train_samples <= 0 or not reg_repeats:
        return balanced
    n = 0
    for i, r in enumerate(reg_repeats):
        balanced[i] = r
        n += r
        if n >= num_train_samples:
            return balanced
    rounds, extra = divmod(num_train_samples - n, len(reg_repeats))
    return [r + rounds + (1 if i < extra else 0) for i, r in enumerate(balanced)]


def plan_steps(cfg, scan: Optional[DatasetScan] = None) -> StepPlan:
    """The dataset plan and step counts of a config (scans the folders when `scan` is None)."""
    scan = scan if scan is not None else scan_dataset(cfg)
    rules = BucketRules.from_config(cfg)
    images = [_plan_image(rec, s.repeats, False, 1.0, rules) for s in scan.train.subsets for rec in s.images]
    num_train = sum(img.repeats for img in images)
    if scan.reg is not None:
        reg = [(rec, s.repeats) for s in scan.reg.subsets for rec in s.images]
        balanced = balance_reg_repeats(num_train, [r for _, r in reg])
        images += [_plan_image(rec, r, True, cfg.prior_loss_weight, rules)
                   for (rec, _), r in zip(reg, balanced) if r > 0]
    return _finish_plan(cfg, scan, images, num_train)


def _plan_image(rec: ImageRecord, repeats: int, is_reg: bool, loss_weight: float,
                rules: BucketRules) -> PlannedImage:
    choice = assign_bucket(rec.size, rules)
    return PlannedImage(path=rec.path, caption=rec.caption, is_reg=is_reg, loss_weight=loss_weight,
                        image_size=rec.size, bucket=choice.bucket, resized_size=choice.resized_size,
                        repeats=repeats, ar_error=choice.ar_error)


def _finish_plan(cfg, scan: DatasetScan, images: list[PlannedImage], num_train: int) -> StepPlan:
    batch_size = max(1, cfg.train_batch_size) * max(1, cfg.num_processes)  # a step's batch over all processes
    samples: list[int] = []
    by_bucket: dict[Size, list[int]] = {}
    for index, img in enumerate(images):
        for _ in range(img.repeats):
            by_bucket.setdefault(img.bucket, []).append(len(samples))
            samples.append(index)
    resolutions = sorted(by_bucket)
    rows = []
    for reso in resolutions:
        ids = by_bucket[reso]
        rows.append(BucketRow(resolution=reso, num_images=len({samples[i] for i in ids}), count=len(ids),
                              batches=math.ceil(len(ids) / batch_size)))
    batches = sum(row.batches for row in rows)
    steps_per_epoch, epochs, total = count_steps(batches, cfg.gradient_accumulation_steps,
                                                 cfg.max_train_epochs, cfg.max_train_steps)
    reg_images = [img for img in images if img.is_reg]
    return StepPlan(
        batches_per_epoch=batches, steps_per_epoch=steps_per_epoch, epochs=epochs, total_steps=total,
        num_train_images=num_train, num_reg_images=scan.num_reg_images, buckets=rows, batch_size=batch_size,
        gradient_accumulation_steps=max(1, cfg.gradient_accumulation_steps),
        num_reg_samples=sum(img.repeats for img in reg_images), num_reg_images_used=len(reg_images),
        mean_ar_error=(sum(abs(img.ar_error) for img in images) / len(images)) if images else 0.0,
        images=images, samples=samples, bucket_samples=[by_bucket[r] for r in resolutions])


def epoch_batches(plan_or_dataset, epoch: int, seed: int) -> list[list[int]]:
    """The batches of one epoch (0-based), as lists of sample ids; the same for the same inputs.

    Each bucket's samples are shuffled and cut into batches of `batch_size` (the last may be
    smaller), then the order of all batches is shuffled.
    """
    plan: StepPlan = getattr(plan_or_dataset, "plan", plan_or_dataset)
    if epoch < 0:
        raise ValueError(f"epoch is a 0-based index, got {epoch}")
    rng = random.Random(f"lora_gui.batches:{seed}:{epoch}")
    size = plan.batch_size
    batches: list[list[int]] = []
    for ids in plan.bucket_samples:
        order = list(ids)
        rng.shuffle(order)
        batches.extend(order[i:i + size] for i in range(0, len(order), size))
    rng.shuffle(batches)
    return batches
