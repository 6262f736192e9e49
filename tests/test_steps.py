"""Step plan: the counts shown before training equal what the dataset yields."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest

from trainer.config import TrainConfig
from trainer.data.steps import count_steps, epoch_batches, plan_steps
from trainer.tiny import make_image_folder


def uneven_dataset(tmp_path: Path) -> tuple[Path, Path]:
    """Train: 3_sks with 64x64, 96x64 and 64x128 images (two buckets), 2_other with 5 squares.
    Reg: 1_disc with 3 images, repeated to match the 19 train samples."""
    img, reg = tmp_path / "img", tmp_path / "reg"
    make_image_folder(img / "3_sks disc", 3, sizes=[(64, 64), (96, 64), (64, 128)], caption="sks disc")
    make_image_folder(img / "2_other", 5, sizes=[(64, 64)])
    make_image_folder(reg / "1_disc", 3, sizes=[(64, 64), (64, 128)])
    return img, reg


def cfg_for(img: Path, reg: Path, **kw) -> TrainConfig:
    base = dict(train_data_dir=str(img), reg_data_dir=str(reg), resolution="64", min_bucket_reso=32,
                max_bucket_reso=128, bucket_reso_steps=32, seed=5, train_batch_size=3,
                gradient_accumulation_steps=2, max_train_epochs=3)
    base.update(kw)
    return TrainConfig(**base)


def brute_force_run(cfg: TrainConfig) -> tuple[int, int, list[int]]:
    """Iterate the torch DataLoader epoch by epoch exactly as a training loop would and count the
    optimizer steps. Returns (epochs started, optimizer steps, batches per epoch)."""
    from trainer.data.dataset import LoraDataset

    ds = LoraDataset(cfg)
    accum, limit = cfg.gradient_accumulation_steps, cfg.max_train_steps
    steps, epochs, batch_counts = 0, 0, []
    max_epochs = 10**6 if limit > 0 else cfg.max_train_epochs
    while epochs < max_epochs and (limit <= 0 or steps < limit):
        loader = ds.loader(epochs)
        n_batches = len(loader)
        seen = 0
        for i, batch in enumerate(loader):
            seen += 1
            assert len({tuple(x.shape) for x in batch["pixel_values"]}) == 1  # never mixes buckets
            if (i + 1) % accum == 0 or i == n_batches - 1:
                steps += 1
                if limit > 0 and steps >= limit:
                    break
        batch_counts.append(seen)
        epochs += 1
    return epochs, steps, batch_counts


def test_count_steps_formulas():
    assert count_steps(10, 1, 4, 0) == (10, 4, 40)
    assert count_steps(11, 2, 4, 0) == (6, 4, 24)  # the remainder batch still steps the optimizer
    assert count_steps(11, 2, 4, 100) == (6, 17, 100)  # max_train_steps wins: ceil(100 / 6) epochs
    assert count_steps(0, 1, 4, 0) == (0, 0, 0)


def test_plan_counts_uneven_buckets_and_reg(tmp_path):
    img, reg = uneven_dataset(tmp_path)
    plan = plan_steps(cfg_for(img, reg))
    assert plan.num_train_images == 19 and plan.num_reg_samples == 19 and plan.num_reg_images == 3
    rows = {row.resolution: row for row in plan.buckets}
    # 64x128 and the reg 64x128 go to 32x96 (nearest aspect 1/3); the rest to 64x64.
    assert set(rows) == {(32, 96), (64, 64)}
    assert sum(r.count for r in rows.values()) == 38
    assert plan.batches_per_epoch == sum(math.ceil(r.count / 3) for r in rows.values())
    assert plan.steps_per_epoch == math.ceil(plan.batches_per_epoch / 2)
    assert plan.total_steps == 3 * plan.steps_per_epoch
    assert plan.bucket_table()[0].keys() == {"width", "height", "images", "count", "batches"}


@pytest.mark.parametrize("overrides", [
    dict(),
    dict(gradient_accumulation_steps=3, train_batch_size=4),
    dict(max_train_steps=17, max_train_epochs=1),
])
def test_plan_equals_brute_force_count_of_dataset_batches(tmp_path, overrides):
    img, reg = uneven_dataset(tmp_path)
    cfg = cfg_for(img, reg, **overrides)
    plan = plan_steps(cfg)
    epochs, steps, batch_counts = brute_force_run(cfg)
    assert (plan.epochs, plan.total_steps) == (epochs, steps)
    full_epochs = batch_counts if cfg.max_train_steps <= 0 else batch_counts[:-1]
    assert all(n == plan.batches_per_epoch for n in full_epochs)


def test_epoch_batches_cover_every_sample_once_and_vary_by_epoch(tmp_path):
    img, reg = uneven_dataset(tmp_path)
    plan = plan_steps(cfg_for(img, reg))
    e0, e0_again, e1 = epoch_batches(plan, 0, 5), epoch_batches(plan, 0, 5), epoch_batches(plan, 1, 5)
    assert e0 == e0_again and e0 != e1 and e0 != epoch_batches(plan, 0, 6)
    for batches in (e0, e1):
        assert sorted(i for b in batches for i in b) == list(range(len(plan.samples)))
        assert all(len({plan.sample_image(i).bucket for i in b}) == 1 for b in batches)
        assert all(1 <= len(b) <= plan.batch_size for b in batches)
    # Each image appears `repeats` times per epoch.
    per_image = Counter(plan.samples[i] for b in e0 for i in b)
    assert all(per_image[k] == img.repeats for k, img in enumerate(plan.images))


def test_plan_of_empty_folder_has_no_steps(tmp_path):
    (tmp_path / "img" / "10_x").mkdir(parents=True)
    plan = plan_steps(cfg_for(tmp_path / "img", tmp_path / "unused", reg_data_dir=""))
    assert (plan.batches_per_epoch, plan.total_steps, plan.buckets) == (0, 0, [])
