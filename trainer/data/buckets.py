"""Aspect-ratio bucketing, the sd-scripts algorithm (torch-free).

Sizes are (width, height) throughout.

- Bucket list (`make_bucket_resolutions`): with A = width x height of the training resolution and
  s = bucket_reso_steps, the square bucket floor(sqrt(A) / s) * s, plus for every width w from
  min_bucket_reso to max_bucket_reso in steps of s the bucket (w, h) and (h, w) with
  h = min(max_bucket_reso, floor(A / w / s) * s), when h >= min_bucket_reso. Every bucket's area is <= A.
- Assignment, upscaling allowed: an image whose size is a bucket keeps it; otherwise the bucket with
  the nearest aspect ratio (first in sorted order on ties). The image is scaled so it covers the
  bucket (the limiting side fits exactly) and the overflow is cropped.
- `bucket_no_upscale`: an image larger than A is shrunk to area A keeping its aspect ratio (the side
  rounded to steps is the one giving the smaller aspect error); a smaller image keeps its size. The
  bucket is that size floored to multiples of s, and the rest is cropped. min/max bucket reso are ignored.
- `enable_bucket=False`: a single bucket, the training resolution; every image is scaled to cover it
  and center-cropped.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

Size = tuple[int, int]


def make_bucket_resolutions(max_reso: Size, min_size: int = 256, max_size: int = 1024,
                            divisible: int = 64) -> list[Size]:
    """Every bucket (width, height) for a training resolution, sorted."""
    return list(_bucket_resolutions(tuple(max_reso), min_size, max_size, divisible))


@lru_cache(maxsize=32)
def _bucket_resolutions(max_reso: Size, min_size: int, max_size: int, divisible: int) -> tuple[Size, ...]:
    max_area = max_reso[0] * max_reso[1]
    side = int(math.sqrt(max_area) // divisible) * divisible
    resos = {(side, side)}
    width = min_size
    while width <= max_size:
        height = min(max_size, int((max_area // width) // divisible) * divisible)
        if height >= min_size:
            resos.add((width, height))
            resos.add((height, width))
        width += divisible
    return tuple(sorted(resos))


@dataclass(frozen=True)
class BucketRules:
    """The settings that decide buckets, taken from a TrainConfig."""

    resolution: Size
    enable_bucket: bool = True
    no_upscale: bool = False
    min_reso: int = 256
    max_reso: int = 1024
    steps: int = 64

    @classmethod
    def from_config(cls, cfg) -> "BucketRules":
        return cls(resolution=cfg.resolution_wh(), enable_bucket=cfg.enable_bucket,
                   no_upscale=cfg.bucket_no_upscale, min_reso=cfg.min_bucket_reso,
                   max_reso=cfg.max_bucket_reso, steps=cfg.bucket_reso_steps)

    def predefined(self) -> Optional[list[Size]]:
        """The fixed bucket list, or None when buckets come from the image sizes (no-upscale mode)."""
        if not self.enable_bucket:
            return [self.resolution]
        if self.no_upscale:
            return None
        return make_bucket_resolutions(self.resolution, self.min_reso, self.max_reso, self.steps)


@dataclass(frozen=True)
class BucketChoice:
    bucket: Size  # the training size
    resized_size: Size  # the image is resized to this, then cropped to `bucket`
    ar_error: float  # bucket aspect ratio minus image aspect ratio


def assign_bucket(image_size: Size, rules: BucketRules) -> BucketChoice:
    """The bucket and intermediate size of one image (width, height)."""
    width, height = image_size
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {image_size}")
    aspect = width / height
    predefined = rules.predefined()
    if predefined is None:
        resized = _no_upscale_size(image_size, rules.resolution[0] * rules.resolution[1], rules.steps)
        bucket = (resized[0] - resized[0] % rules.steps, resized[1] - resized[1] % rules.steps)
    else:
        bucket = tuple(image_size) if tuple(image_size) in predefined else _nearest_aspect(predefined, aspect)
        scale = bucket[1] / height if aspect > bucket[0] / bucket[1] else bucket[0] / width
        resized = (int(width * scale + 0.5), int(height * scale + 0.5))
    return BucketChoice(bucket=bucket, resized_size=resized, ar_error=bucket[0] / bucket[1] - aspect)


def _nearest_aspect(resolutions: list[Size], aspect: float) -> Size:
    # min() keeps the first of equal errors, as numpy's argmin does in sd-scripts.
    return min(resolutions, key=lambda r: abs(r[0] / r[1] - aspect))


def _round_to_steps(x: float, steps: int) -> int:
    x = int(x + 0.5)
    return x - x % steps


def _no_upscale_size(image_size: Size, max_area: int, steps: int) -> Size:
    width, height = image_size
    if width * height <= max_area:
        return (width, height)
    aspect = width / height
    resized_w = math.sqrt(max_area * aspect)
    resized_h = max_area / resized_w
    # Round either the width or the height to steps; keep the one with the smaller aspect error.
    w_rounded = _round_to_steps(resized_w, steps)
    ar_w = w_rounded / _round_to_steps(w_rounded / aspect, steps)
    h_rounded = _round_to_steps(resized_h, steps)
    ar_h = _round_to_steps(h_rounded * aspect, steps) / h_rounded
    if abs(ar_w - aspect) < abs(ar_h - aspect):
        return (w_rounded, int(w_rounded / aspect + 0.5))
    return (int(h_rounded * aspect + 0.5), h_rounded)


def crop_offsets(resized_size: Size, bucket: Size, *, random_crop: bool = False,
                 rng: Optional[random.Random] = None) -> tuple[int, int]:
    """(left, top) of the bucket-sized window cut from the resized image: centred, or random."""
    slack_x = resized_size[0] - bucket[0]
    slack_y = resized_size[1] - bucket[1]
    if slack_x < 0 or slack_y < 0:
        raise ValueError(f"resized size {resized_size} does not cover bucket {bucket}")
    if random_crop:
        rng = rng or random.Random()
        return (rng.randint(0, slack_x), rng.randint(0, slack_y))
    return (slack_x // 2, slack_y // 2)


def cover_size(image_size: Size, bucket: Size) -> Size:
    """The smallest scaling of `image_size` that covers `bucket` (used when a file's size changed)."""
    width, height = image_size
    scale = max(bucket[0] / width, bucket[1] / height)
    return (max(bucket[0], int(width * scale + 0.5)), max(bucket[1], int(height * scale + 0.5)))
