"""Image loading and augmentation with PIL + numpy; torch only for the final tensor.

Resizing follows sd-scripts: area averaging (PIL's BOX filter) when shrinking, Lanczos when enlarging.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from trainer.data.buckets import Size, cover_size, crop_offsets
from trainer.data.image_modes import to_rgb


class ImageLoadError(RuntimeError):
    """An image that cannot be decoded; the message names the file."""

    def __init__(self, path: Path, reason: str):
        self.path = Path(path)
        super().__init__(f"cannot load image {path}: {reason}. Replace or remove the file and start again.")


def load_image(path: Path) -> Image.Image:
    """The image's first frame as 8-bit RGB, turned upright by its EXIF orientation (see image_modes)."""
    try:
        with Image.open(path) as img:
            return to_rgb(ImageOps.exif_transpose(img))
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageLoadError(path, str(exc)) from None


def resize(img: Image.Image, size: Size) -> Image.Image:
    if img.size == tuple(size):
        return img
    shrinking = size[0] <= img.width and size[1] <= img.height
    return img.resize(size, Image.Resampling.BOX if shrinking else Image.Resampling.LANCZOS)


def fit_to_bucket(img: Image.Image, planned_size: Size, resized_size: Size, bucket: Size, *,
                  random_crop: bool = False, rng: random.Random | None = None) -> tuple[Image.Image, Size, tuple[int, int]]:
    """Resize and crop to the bucket. Returns (image, resized size used, (left, top) of the crop).

    If the file's size is not the one planned (edited since the scan), it is scaled to cover the
    bucket instead, so the batch shape stays right.
    """
    if img.size != tuple(planned_size):
        resized_size = cover_size(img.size, bucket)
    img = resize(img, resized_size)
    left, top = crop_offsets(resized_size, bucket, random_crop=random_crop, rng=rng)
    if (left, top, *bucket) != (0, 0, *img.size):
        img = img.crop((left, top, left + bucket[0], top + bucket[1]))
    return img, tuple(resized_size), (left, top)


HUE_SHIFT_LIMIT = 8 / 180  # sd-scripts: +-8 on OpenCV's 0-180 hue scale


def color_augment(img: Image.Image, rng: random.Random) -> Image.Image:
    """sd-scripts' color_aug: with probability 0.33, either a hue shift of up to +-16 degrees or a
    gamma change in [0.95, 1.05] (half each).

    The gamma is applied to values normalised to [0, 1]; sd-scripts raises the raw 0-255 values to
    the power, which mostly brightens or darkens the whole image instead.
    """
    if rng.random() > 0.33:
        return img
    if rng.random() > 0.5:
        shift = rng.uniform(-HUE_SHIFT_LIMIT, HUE_SHIFT_LIMIT)
        hue, saturation, value = img.convert("HSV").split()
        shifted = np.mod(np.asarray(hue, dtype=np.int32) + int(round(shift * 256)), 256).astype(np.uint8)
        return Image.merge("HSV", (Image.fromarray(shifted), saturation, value)).convert("RGB")
    gamma = rng.uniform(0.95, 1.05)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return Image.fromarray(np.clip(np.round(arr ** gamma * 255.0), 0, 255).astype(np.uint8))


def flip_horizontal(img: Image.Image) -> Image.Image:
    return ImageOps.mirror(img)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB image -> float32 (3, H, W) tensor in [-1, 1]."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous().div_(127.5).sub_(1.0)
