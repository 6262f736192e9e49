"""Latent cache files on disk (numpy only; the dataset does the encoding).

`<image stem>_<WWWW>x<HHHH>_sd.npz` beside the image (W x H = the bucket), as sd-scripts names them.
Besides sd-scripts' own keys (`latents`, `latents_flipped`, `original_size`, `crop_ltrb`) each file
stores, as JSON in `lora_gui_key`, everything the latents depend on: the image file's name, byte size,
modification time and pixel size, the bucket, the resize and crop, whether the flipped latents are
present, the encoder identity and the latent scale. A later run reuses a file only when all of it
matches; anything else (an edited image, other bucket settings, another VAE) re-encodes and rewrites it.
A file that matches but cannot be trusted (damaged, wrong shape or dtype, NaN or infinite values) is
named in a warning and rebuilt, so a bad cache never reaches the first training step.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from trainer.fileio import atomic_path

CACHE_FORMAT = 1
KEY_FIELD = "lora_gui_key"
# Settings that change the image every epoch, so its latents cannot be cached.
CACHE_BLOCKING_AUGMENTATIONS = ("color_aug", "random_crop")


def caching_blockers(cfg) -> list[str]:
    """The CACHE_BLOCKING_AUGMENTATIONS turned on in `cfg` (empty when latents can be cached)."""
    return [name for name in CACHE_BLOCKING_AUGMENTATIONS if getattr(cfg, name)]


def cache_path(image_path: Path, bucket: tuple[int, int], suffix: str = "sd") -> Path:
    image_path = Path(image_path)
    return image_path.with_name(f"{image_path.stem}_{bucket[0]:04d}x{bucket[1]:04d}_{suffix}.npz")


@dataclass(frozen=True)
class CacheKey:
    image_name: str
    file_size: int
    mtime_ns: int
    image_size: tuple[int, int]  # (width, height) as loaded
    bucket: tuple[int, int]
    resized_size: tuple[int, int]
    crop_left_top: tuple[int, int]
    flipped: bool  # the file also holds the horizontally flipped latents
    encoder_id: str = ""
    latent_scale: float = 1.0
    format: int = CACHE_FORMAT

    @classmethod
    def for_image(cls, image_path: Path, *, image_size, bucket, resized_size, crop_left_top, flipped: bool,
                  encoder_id: str = "", latent_scale: float = 1.0) -> "CacheKey":
        st = Path(image_path).stat()
        return cls(image_name=Path(image_path).name, file_size=st.st_size, mtime_ns=st.st_mtime_ns,
                   image_size=tuple(image_size), bucket=tuple(bucket), resized_size=tuple(resized_size),
                   crop_left_top=tuple(crop_left_top), flipped=flipped, encoder_id=encoder_id,
                   latent_scale=float(latent_scale))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class CachedLatents:
    latents: np.ndarray  # (C, H/8, W/8)
    flipped: Optional[np.ndarray] = None


class BadCacheFile(ValueError):
    """A cache file written for this image and these settings that cannot be used; the dataset warns and rebuilds."""

    def __init__(self, path: Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def load_latents(path: Path, key: CacheKey, *, channels: Optional[int] = None) -> Optional[CachedLatents]:
    """The cached latents when the file exists and was written for exactly `key`, else None.

    A file for another key (an edited image, other settings, another encoder) is stale: None. A file
    for this key that is damaged, has the wrong shape or dtype (`channels`: the encoder's latent
    channels, when known) or holds NaN or infinite values raises BadCacheFile.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if KEY_FIELD not in npz.files or str(npz[KEY_FIELD]) != key.to_json():
                return None
            latents = npz["latents"]
            flipped = npz["latents_flipped"] if key.flipped else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise BadCacheFile(path, f"cannot be read ({exc})") from None
    expected = ((channels,) if channels else ()) + (key.bucket[1] // 8, key.bucket[0] // 8)
    for name, array in (("latents", latents), ("latents_flipped", flipped)):
        if array is not None:
            _check_array(path, name, array, expected)
    return CachedLatents(latents, flipped)


def _check_array(path: Path, name: str, array: np.ndarray, expected: tuple[int, ...]) -> None:
    if array.dtype != np.float32:
        raise BadCacheFile(path, f"{name} are {array.dtype}, not float32")
    if array.ndim != 3 or array.shape[-len(expected):] != expected:
        want = ("C, " if len(expected) == 2 else "") + ", ".join(map(str, expected))
        raise BadCacheFile(path, f"{name} have the shape {tuple(array.shape)}, not ({want})")
    if not np.isfinite(array).all():
        bad = int(array.size - np.isfinite(array).sum())
        raise BadCacheFile(path, f"{name} hold {bad} NaN or infinite value(s)")


def save_latents(path: Path, key: CacheKey, cached: CachedLatents) -> None:
    """Write atomically, so an interrupted run never leaves a half-written cache under the final name."""
    if key.flipped != (cached.flipped is not None):
        raise ValueError("the key's `flipped` must say whether flipped latents are stored")
    left, top = key.crop_left_top
    arrays = {
        "latents": np.ascontiguousarray(cached.latents, dtype=np.float32),
        "original_size": np.array(key.image_size, dtype=np.int64),
        "crop_ltrb": np.array([left, top, left + key.bucket[0], top + key.bucket[1]], dtype=np.int64),
        KEY_FIELD: np.array(key.to_json()),
    }
    if cached.flipped is not None:
        arrays["latents_flipped"] = np.ascontiguousarray(cached.flipped, dtype=np.float32)
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as fh:  # a file object, so numpy does not append ".npz" to the temp name
            np.savez(fh, **arrays)
