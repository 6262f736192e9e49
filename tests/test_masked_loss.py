"""Masked loss (sd-scripts' --masked_loss with a mask folder, and --alpha_mask): masks follow their image's
resize, crop and flip, the loss counts only where the mask does, the summary and the pre-flight say which
images have masks, and a real run with masks learns differently."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import make_run_config
from trainer.config import TrainConfig
from trainer.data.dataset import LoraDataset
from trainer.training.loss_terms import LossTerms
from trainer.training.noise import NoiseSchedule


def _images(root: Path, count: int = 2, *, alpha: bool = False) -> Path:
    folder = root / "2_sks disc"
    folder.mkdir(parents=True)
    for i in range(count):
        img = Image.new("RGBA" if alpha else "RGB", (64, 64), (200, 40, 40, 255) if alpha else (200, 40, 40))
        if alpha:  # the right half transparent
            img.paste((0, 0, 0, 0), (32, 0, 64, 64))
        img.save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text("sks disc")
    return root


def _left_half_mask(path: Path) -> None:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    path.parent.mkdir(parents=True, exist_ok=True)
    mask.save(path)


def test_the_loss_counts_only_where_the_mask_does():
    terms = LossTerms(TrainConfig(), NoiseSchedule("epsilon"))
    pred, target = torch.zeros(2, 4, 8, 8), torch.ones(2, 4, 8, 8)
    t = torch.tensor([10, 20])
    full = terms.per_sample(pred, target, t)
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, :, :, :32] = 1.0  # the left half, at pixel size
    half = terms.per_sample(pred, target, t, mask=mask)
    torch.testing.assert_close(half, full / 2)  # area-averaged to 8x8: the left 4 columns count
    pred[:, :, :, 4:] = 100.0  # errors where the mask is 0 do not count at all
    torch.testing.assert_close(terms.per_sample(pred, target, t, mask=mask), half)


def test_masks_follow_crop_and_flip_and_fall_back_to_ones(tmp_path, tiny_sd1):
    root = _images(tmp_path / "img", 2)
    _left_half_mask(tmp_path / "masks" / "2_sks disc" / "img0.png")  # img1 has none
    cfg = make_run_config(tmp_path, tiny_sd1, root, masked_loss=True, conditioning_data_dir=str(tmp_path / "masks"),
                          flip_aug=True, cache_latents=False)
    dataset = LoraDataset(cfg)
    seen = {}
    for epoch in range(6):
        for batch in dataset.batches(epoch):
            data = dataset.load_batch(batch, epoch)
            for path, mask in zip(data["image_paths"], data["masks"]):
                seen.setdefault(Path(path).name, set()).add((float(mask[0, :, :32].mean()), float(mask[0, :, 32:].mean())))
    assert seen["img1.png"] == {(1.0, 1.0)}  # no mask: every pixel counts
    assert seen["img0.png"] == {(1.0, 0.0), (0.0, 1.0)}  # the left half, mirrored when the image is flipped


def test_summary_and_preflight_name_the_mask_source(tmp_path, tiny_sd1):
    from lora_gui.engine import dataset_summary
    from trainer.validation import validate

    root = _images(tmp_path / "img", 2)
    _left_half_mask(tmp_path / "masks" / "img0.png")  # directly in the mask folder
    cfg = make_run_config(tmp_path, tiny_sd1, root)
    assert dataset_summary(cfg).subsets[0].masks is None  # masked loss off: no column
    masked = cfg.replace(masked_loss=True, conditioning_data_dir=str(tmp_path / "masks"))
    assert dataset_summary(masked).subsets[0].masks == 1
    codes = {i.code: i for i in validate(masked)}
    assert codes["images_without_mask"].params["count"] == 1 and codes["images_without_mask"].level == "warning"
    assert "masked_loss_no_source" in {i.code for i in validate(masked.replace(conditioning_data_dir=""))}
    assert "conditioning_dir_missing" in {i.code for i in validate(masked.replace(conditioning_data_dir="/no/such"))}
    alpha = _images(tmp_path / "alpha", 1, alpha=True)
    assert dataset_summary(cfg.replace(train_data_dir=str(alpha), alpha_mask=True)).subsets[0].masks == 1


def test_a_run_with_alpha_masks_records_them_and_learns_differently(tmp_path, tiny_sd1):
    from test_engine import train
    from trainer.network.kohya_format import read_lora_file

    root = _images(tmp_path / "img", 2, alpha=True)
    base = dict(max_train_epochs=1, save_every_n_epochs=0)
    code, plain = train(make_run_config(tmp_path / "a", tiny_sd1, root, **base))
    cfg = make_run_config(tmp_path / "b", tiny_sd1, root, alpha_mask=True, **base)
    code_b, masked = train(cfg)
    assert code == code_b == 0
    plain_losses = [e["loss"] for e in plain if e["type"] == "step"]
    masked_losses = [e["loss"] for e in masked if e["type"] == "step"]
    assert all(math.isfinite(x) for x in masked_losses)
    # half of every image is transparent: about half the loss (the same noise and timesteps)
    for a, b in zip(plain_losses, masked_losses):
        assert b == pytest.approx(a / 2, rel=0.35)
    meta = read_lora_file(Path(cfg.output_dir) / "tiny.safetensors").metadata
    assert meta["ss_alpha_mask"] == "True" and meta["ss_masked_loss"] == "False"
