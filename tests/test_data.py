"""trainer/data: buckets, captions, folder scan, reg balancing, the torch dataset and the latent cache."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.config import TrainConfig
from trainer.data.buckets import BucketRules, assign_bucket, crop_offsets, make_bucket_resolutions
from trainer.data.captions import CaptionOptions, process_caption, read_caption_file
from trainer.data.scan import DatasetError, scan_dataset
from trainer.data.steps import balance_reg_repeats, plan_steps
from trainer.tiny import make_image_folder

REPO = Path(__file__).resolve().parent.parent


def small_cfg(train: Path, reg: Path | None = None, **kw) -> TrainConfig:
    """64 px with 32 px bucket steps: buckets 32x96, 32x128, 64x64, 96x32, 128x32."""
    base = dict(train_data_dir=str(train), reg_data_dir=str(reg or ""), resolution="64", min_bucket_reso=32,
                max_bucket_reso=128, bucket_reso_steps=32, seed=3)
    base.update(kw)
    return TrainConfig(**base)


# ---- buckets -------------------------------------------------------------------------------

def test_bucket_list_512_steps_64_matches_reference():
    resos = make_bucket_resolutions((512, 512), 256, 1024, 64)
    # Reference section 6: 512x512, 448x576, 384x640, 320x768, 256x1024 and their transposes ...
    for w, h in [(512, 512), (448, 576), (384, 640), (320, 768), (256, 1024)]:
        assert (w, h) in resos and (h, w) in resos
    # ... plus the narrow widths the same loop yields (e.g. w=704 -> h=floor(262144/704/64)*64=320).
    assert resos == [(256, 832), (256, 896), (256, 960), (256, 1024), (320, 704), (320, 768), (384, 640),
                     (448, 576), (512, 512), (576, 448), (640, 384), (704, 320), (768, 320), (832, 256),
                     (896, 256), (960, 256), (1024, 256)]
    assert all(w * h <= 512 * 512 and w % 64 == 0 and h % 64 == 0 for w, h in resos)


def test_assign_exact_size_keeps_its_bucket():
    rules = BucketRules(resolution=(512, 512))
    choice = assign_bucket((448, 576), rules)
    assert choice.bucket == (448, 576) and choice.resized_size == (448, 576)


def test_assign_nearest_aspect_ratio_and_cover_resize():
    rules = BucketRules(resolution=(512, 512))
    choice = assign_bucket((1000, 500), rules)  # aspect 2.0: 704x320 (2.2) beats 640x384 (1.67)
    assert choice.bucket == (704, 320)
    assert choice.resized_size == (704, 352)  # width fits exactly, height is cropped
    assert crop_offsets(choice.resized_size, choice.bucket) == (0, 16)
    assert choice.ar_error == pytest.approx(0.2)


def test_assign_no_upscale_keeps_small_images_and_floors_to_steps():
    rules = BucketRules(resolution=(512, 512), no_upscale=True)
    small = assign_bucket((300, 200), rules)
    assert small.resized_size == (300, 200) and small.bucket == (256, 192)
    large = assign_bucket((2000, 1000), rules)  # shrunk to area 512^2; height rounding gives aspect 2.0 exactly
    assert large.resized_size == (640, 320) and large.bucket == (640, 320)


def test_assign_without_buckets_resizes_and_center_crops_to_resolution():
    rules = BucketRules(resolution=(512, 512), enable_bucket=False)
    choice = assign_bucket((1000, 500), rules)
    assert choice.bucket == (512, 512) and choice.resized_size == (1024, 512)
    assert crop_offsets(choice.resized_size, choice.bucket) == (256, 0)


# ---- captions ------------------------------------------------------------------------------

def test_caption_file_first_line_utf8_with_bom(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes("\ufeffsks woman, smiling\nsecond line\n".encode("utf-8"))
    assert read_caption_file(p) == "sks woman, smiling"


def test_shuffle_caption_keeps_first_tokens_and_is_deterministic():
    opts = CaptionOptions(shuffle=True, keep_tokens=2)
    caption = "sks, woman, a, b, c, d, e"
    outs = {process_caption(caption, opts, epoch=0, rng=random.Random(i)) for i in range(20)}
    assert len(outs) > 1
    for out in outs:
        tags = out.split(", ")
        assert tags[:2] == ["sks", "woman"] and sorted(tags[2:]) == ["a", "b", "c", "d", "e"]
    assert (process_caption(caption, opts, epoch=0, rng=random.Random(7))
            == process_caption(caption, opts, epoch=0, rng=random.Random(7)))


def test_caption_unchanged_without_shuffle():
    assert process_caption("b, a", CaptionOptions(), epoch=0, rng=random.Random(0)) == "b, a"


def test_caption_dropout_rate_and_every_n_epochs():
    always = CaptionOptions(dropout_rate=1.0)
    assert process_caption("sks", always, epoch=0, rng=random.Random(0)) == ""
    half = CaptionOptions(dropout_rate=0.5)
    dropped = sum(process_caption("sks", half, epoch=0, rng=random.Random(i)) == "" for i in range(400))
    assert 140 < dropped < 260
    every2 = CaptionOptions(dropout_every_n_epochs=2)  # epochs 2, 4, ... (1-based) = indices 1, 3, ...
    assert [process_caption("sks", every2, epoch=e, rng=random.Random(0)) for e in range(4)] == ["sks", "", "sks", ""]


def test_color_aug_shifts_hue_or_gamma_deterministically():
    from trainer.data.images import color_augment

    img = Image.new("RGB", (8, 8), (200, 30, 40))
    outs = [np.asarray(color_augment(img, random.Random(i))) for i in range(40)]
    changed = sum(not np.array_equal(o, np.asarray(img)) for o in outs)
    assert 4 <= changed <= 28  # applied with probability 0.33
    assert all(o.shape == (8, 8, 3) for o in outs)
    assert np.array_equal(np.asarray(color_augment(img, random.Random(3))), outs[3])


# ---- scan ----------------------------------------------------------------------------------

def test_scan_subsets_captions_sizes_and_ignored_folders(tmp_path):
    root = tmp_path / "img"
    sub = root / "10_sks woman"
    make_image_folder(sub, 3, sizes=[(64, 48)])
    (sub / "img_000.txt").write_text("sks woman, red dress\n", encoding="utf-8")
    (sub / "img_001.txt").write_text("", encoding="utf-8")
    Image.new("RGB", (40, 30)).save(sub / "UPPER.JPG")
    Image.new("RGB", (20, 10)).save(sub / "x.bmp")
    Image.new("RGB", (20, 10)).save(sub / "y.webp")
    make_image_folder(root / "sks man", 1)
    make_image_folder(root / "0_zero", 1)
    make_image_folder(sub / "nested", 1)
    scan = scan_dataset(small_cfg(root))

    (subset,) = scan.train.subsets
    assert (subset.repeats, subset.class_tokens, subset.image_count) == (10, "sks woman", 6)
    assert subset.captioned_count == 1
    by_name = {img.path.name: img for img in subset.images}
    assert set(by_name) == {"img_000.png", "img_001.png", "img_002.png", "UPPER.JPG", "x.bmp", "y.webp"}
    assert (by_name["img_000.png"].caption, by_name["img_000.png"].caption_source) == ("sks woman, red dress", "file")
    assert (by_name["img_001.png"].caption, by_name["img_001.png"].caption_source) == ("sks woman", "empty_file")
    assert (by_name["img_002.png"].caption, by_name["img_002.png"].caption_source) == ("sks woman", "folder")
    assert by_name["img_000.png"].size == (64, 48) and by_name["UPPER.JPG"].size == (40, 30)
    assert {(f.path.name, f.reason) for f in scan.train.ignored} == {("sks man", "no_repeats"), ("0_zero", "zero_repeats")}
    assert [p.name for p in subset.nested_image_folders] == ["nested"]
    assert scan.num_train_images == 60
    assert scan.dataset_dirs() == {"10_sks woman": {"n_repeats": 10, "img_count": 6}}
    assert scan.tag_frequency()["10_sks woman"] == {"sks woman": 6, "red dress": 1}
    assert subset.num_samples == 60


def test_scan_size_follows_exif_orientation(tmp_path):
    sub = tmp_path / "img" / "1_x"
    sub.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: loaded upright as 30x40
    Image.new("RGB", (40, 30)).save(sub / "photo.jpg", exif=exif)
    (img,) = scan_dataset(small_cfg(tmp_path / "img")).train.subsets[0].images
    assert img.size == (30, 40)


def test_corrupt_image_is_listed_and_named_when_building_the_dataset(tmp_path):
    root = tmp_path / "img"
    make_image_folder(root / "5_sks", 2)
    (root / "5_sks" / "broken.png").write_bytes(b"not an image at all")
    good = root / "5_sks" / "img_000.png"
    truncated = root / "5_sks" / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:-40])
    cfg = small_cfg(root)

    fast = scan_dataset(cfg)
    assert [b.path.name for b in fast.corrupt] == ["broken.png"]
    assert fast.train.subsets[0].image_count == 3  # the truncated file has a valid header
    deep = scan_dataset(cfg, verify=True)
    assert sorted(b.path.name for b in deep.corrupt) == ["broken.png", "truncated.png"]

    from trainer.data.dataset import LoraDataset

    with pytest.raises(DatasetError) as exc:
        LoraDataset(cfg, deep)
    assert "broken.png" in str(exc.value) and "truncated.png" in str(exc.value)
    assert exc.value.field == "train_data_dir"


# ---- reg balancing ----------------------------------------------------------------------------

def _sd_scripts_balance(num_train: int, reg_repeats: list[int]) -> list[int]:
    """sd-scripts' loop, transcribed step by step, as the oracle."""
    out = [0] * len(reg_repeats)
    n, first_loop = 0, True
    while n < num_train:
        for i, r in enumerate(reg_repeats):
            if first_loop:
                out[i] = r
                n += r
            else:
                out[i] += 1
                n += 1
            if n >= num_train:
                break
        first_loop = False
    return out


@pytest.mark.parametrize("num_train", [0, 1, 5, 7, 30, 101])
@pytest.mark.parametrize("reg", [[1], [1, 1, 1], [3, 3], [2, 1, 5], [1] * 12])
def test_balance_reg_repeats_matches_sd_scripts(num_train, reg):
    assert balance_reg_repeats(num_train, reg) == _sd_scripts_balance(num_train, reg)


def test_reg_images_repeated_or_cut_to_train_count_with_prior_loss_weight(tmp_path):
    make_image_folder(tmp_path / "img" / "5_sks dog", 3)  # 15 train samples
    make_image_folder(tmp_path / "reg" / "1_dog", 4)
    plan = plan_steps(small_cfg(tmp_path / "img", tmp_path / "reg", prior_loss_weight=0.5))
    reg = [img for img in plan.images if img.is_reg]
    assert [img.repeats for img in reg] == [4, 4, 4, 3]
    assert plan.num_reg_samples == plan.num_train_images == 15
    assert {img.loss_weight for img in reg} == {0.5}

    make_image_folder(tmp_path / "reg2" / "1_dog", 20)
    plan = plan_steps(small_cfg(tmp_path / "img", tmp_path / "reg2"))
    assert (plan.num_reg_images, plan.num_reg_images_used, plan.num_reg_samples) == (20, 15, 15)


# ---- torch dataset ----------------------------------------------------------------------------

def test_batch_has_tensors_sizes_and_weights(tmp_path):
    from trainer.data.dataset import LoraDataset

    make_image_folder(tmp_path / "img" / "2_sks", 2, sizes=[(96, 64)], caption="sks, red")
    make_image_folder(tmp_path / "reg" / "1_disc", 1, sizes=[(96, 64)])
    ds = LoraDataset(small_cfg(tmp_path / "img", tmp_path / "reg", train_batch_size=8, prior_loss_weight=0.25))
    (batch_ids,) = ds.batches(0)
    batch = ds.load_batch(batch_ids, 0)
    pv = batch["pixel_values"]
    assert pv.shape == (8, 3, 64, 64) and pv.dtype.is_floating_point
    assert float(pv.min()) >= -1.0 and float(pv.max()) <= 1.0 and float(pv.max()) > 0.5
    assert sorted(batch["loss_weights"].tolist()) == [0.25] * 4 + [1.0] * 4
    assert batch["original_sizes"].tolist() == [[64, 96]] * 8  # (height, width)
    assert batch["target_sizes"].tolist() == [[64, 64]] * 8
    assert batch["crop_top_lefts"].tolist() == [[0, 16]] * 8  # 96x64 cropped to 64x64 in the middle
    assert sorted(batch["captions"]) == ["disc"] * 4 + ["sks, red"] * 4


def test_dataset_is_reproducible_given_seed(tmp_path):
    from trainer.data.dataset import LoraDataset

    make_image_folder(tmp_path / "img" / "4_sks", 3, sizes=[(96, 64)], caption="a, b, c, d, e")
    kw = dict(flip_aug=True, random_crop=True, color_aug=True, shuffle_caption=True, train_batch_size=4)
    one = LoraDataset(small_cfg(tmp_path / "img", **kw))
    two = LoraDataset(small_cfg(tmp_path / "img", **kw))
    other = LoraDataset(small_cfg(tmp_path / "img", **{**kw, "seed": 99}))
    ids = one.batches(1)[0]
    a, b = one.load_batch(ids, 1), two.load_batch(ids, 1)
    assert a["captions"] == b["captions"]
    assert a["crop_top_lefts"].tolist() == b["crop_top_lefts"].tolist()
    assert (a["pixel_values"] == b["pixel_values"]).all()
    c = other.load_batch(ids, 1)
    assert (c["pixel_values"] != a["pixel_values"]).any() or c["captions"] != a["captions"]


def test_flip_mirrors_pixels_and_reports_the_crop_in_the_flipped_image(tmp_path):
    from trainer.data.dataset import LoraDataset

    folder = tmp_path / "img" / "16_sks"
    folder.mkdir(parents=True)
    ramp = np.tile((np.arange(96) * 2).astype(np.uint8), (64, 1))  # column x has value 2x
    Image.fromarray(np.stack([ramp] * 3, axis=-1)).save(folder / "ramp.png")
    ds = LoraDataset(small_cfg(tmp_path / "img", random_crop=True, flip_aug=True))
    flips = set()
    for sid in range(16):
        batch = ds.load_batch([sid], 0)
        top, left = batch["crop_top_lefts"][0].tolist()
        row = (batch["pixel_values"][0, 0, 0].numpy() + 1) * 127.5
        flipped = bool(row[0] > row[-1])
        flips.add(flipped)
        # In the mirrored 96 px image, column `left` is original column 95 - left.
        expected_first = 2 * (95 - left) if flipped else 2 * left
        assert top == 0 and 0 <= left <= 32 and abs(row[0] - expected_first) < 1
    assert flips == {True, False}


# ---- latent cache ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_vae_encode():
    import torch
    from diffusers import AutoencoderKL

    from trainer.tiny import tiny_vae_config

    torch.manual_seed(0)
    vae = AutoencoderKL(**tiny_vae_config()).eval()
    calls = {"images": 0}

    @torch.no_grad()
    def encode(pixels):
        calls["images"] += pixels.shape[0]
        return vae.encode(pixels).latent_dist.mean * 0.18215

    encode.calls = calls
    return encode


def test_latent_cache_disk_reuse_and_invalidation(tmp_path, tiny_vae_encode):
    from trainer.data.dataset import LoraDataset

    folder = tmp_path / "img" / "2_sks"
    paths = make_image_folder(folder, 3, sizes=[(64, 64), (96, 64)])
    cfg = small_cfg(tmp_path / "img", cache_latents=True, cache_latents_to_disk=True, flip_aug=True)
    calls = tiny_vae_encode.calls

    first = LoraDataset(cfg)
    calls["images"] = 0
    assert first.cache_latents(tiny_vae_encode, batch_size=2) == 3
    assert calls["images"] == 6  # each image plus its mirror
    assert first.cache_report.written_to_disk == 3
    npz = folder / "img_000_0064x0064_sd.npz"
    assert npz.is_file()
    with np.load(npz) as data:
        assert data["latents"].shape == (4, 8, 8) and data["latents_flipped"].shape == (4, 8, 8)

    second = LoraDataset(cfg)
    calls["images"] = 0
    second.cache_latents(tiny_vae_encode)
    assert calls["images"] == 0 and second.cache_report.reused_from_disk == 3
    ids = second.batches(0)[0]
    batch, ref = second.load_batch(ids, 0), first.load_batch(ids, 0)
    assert "latents" in batch and "pixel_values" not in batch
    assert batch["latents"].shape[1:] == (4, 8, 8)
    assert np.allclose(batch["latents"].numpy(), ref["latents"].numpy())

    # Change one image: only that one is encoded again.
    Image.new("RGB", (64, 64), (0, 0, 255)).save(paths[0])
    os.utime(paths[0], ns=(paths[0].stat().st_atime_ns, paths[0].stat().st_mtime_ns + 10**9))
    third = LoraDataset(cfg)
    calls["images"] = 0
    third.cache_latents(tiny_vae_encode)
    assert third.cache_report.reused_from_disk == 2 and third.cache_report.encoded == 1
    assert calls["images"] == 2

    # Another encoder (e.g. another VAE) does not reuse the files.
    fourth = LoraDataset(cfg)
    fourth.cache_latents(tiny_vae_encode, encoder_id="another-vae")
    assert fourth.cache_report.reused_from_disk == 0


def test_latent_cache_refused_with_color_aug(tmp_path, tiny_vae_encode):
    from trainer.data.dataset import LoraDataset

    make_image_folder(tmp_path / "img" / "1_sks", 1)
    ds = LoraDataset(small_cfg(tmp_path / "img", cache_latents=True, color_aug=True))
    assert not ds.can_cache_latents
    assert ds.cache_latents(tiny_vae_encode) == 0
    assert "color_aug" in ds.cache_report.skipped_reason
    assert "pixel_values" in ds.load_batch(ds.batches(0)[0], 0)


# ---- torch-free modules --------------------------------------------------------------------

def test_gui_side_modules_do_not_import_torch(tmp_path):
    make_image_folder(tmp_path / "img" / "10_sks", 2)
    code = ("import sys, trainer.data, trainer.data.scan, trainer.data.buckets, trainer.data.steps, "
            "trainer.data.captions, trainer.data.latent_cache, trainer.validation\n"
            "from trainer.config import TrainConfig\n"
            f"cfg = TrainConfig(train_data_dir={str(tmp_path / 'img')!r}, output_dir={str(tmp_path)!r}, "
            f"pretrained_model_name_or_path={str(tmp_path)!r})\n"
            "trainer.validation.validate(cfg); trainer.data.plan_steps(cfg)\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
