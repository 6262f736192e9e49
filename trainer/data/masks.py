"""Loss masks (sd-scripts' `--masked_loss`): where an image's loss counts, from a mask image in the
conditioning folder (white = counts, black = ignored) or from the image's own alpha channel
(`--alpha_mask`). A mask goes through the same resize, crop and flip as its image (trainer/data/dataset.py
makes it a tensor); the loss multiplies by it at latent resolution (trainer/training/loss_terms.py).
Torch-free: the page counts the masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from PIL import Image, ImageOps

from trainer.data.image_header import IMAGE_EXTENSIONS


def uses_masks(cfg: Any) -> bool:
    return bool(cfg.masked_loss or cfg.alpha_mask)


def mask_file(image: Path, conditioning_dir: str) -> Optional[Path]:
    """The mask of `image` in the conditioning folder: the same file stem, any image extension, either in
    a sub-folder named like the image's (`<cond>/10_sks dog/x.png`) or directly in it (`<cond>/x.png`)."""
    if not conditioning_dir:
        return None
    root = Path(conditioning_dir).expanduser()
    for folder in (root / image.parent.name, root):
        for ext in IMAGE_EXTENSIONS:
            for candidate in (folder / f"{image.stem}{ext}", folder / f"{image.stem}{ext.upper()}"):
                if candidate.is_file():
                    return candidate
    return None


def has_alpha(image: Path) -> bool:
    try:
        with Image.open(image) as img:
            return "A" in img.getbands() or "transparency" in img.info
    except OSError:
        return False


def has_mask(image: Path, cfg: Any) -> bool:
    """Whether `image` gets a mask under the config's masked-loss settings (else it counts everywhere)."""
    if cfg.alpha_mask:
        return has_alpha(image)
    return cfg.masked_loss and mask_file(image, cfg.conditioning_data_dir) is not None


def load_mask(image: Path, cfg: Any) -> Optional[Image.Image]:
    """The mask of `image` as an 8-bit grey image the size of the (upright) image, or None (no mask)."""
    if cfg.alpha_mask:
        with Image.open(image) as img:
            img = ImageOps.exif_transpose(img)
            if "A" not in img.getbands() and "transparency" not in img.info:
                return None
            return img.convert("RGBA").getchannel("A")
    path = mask_file(image, cfg.conditioning_data_dir) if cfg.masked_loss else None
    if path is None:
        return None
    with Image.open(path) as img:
        return ImageOps.exif_transpose(img).convert("L")


def mask_to_bucket(mask: Image.Image, resized_size: tuple[int, int], crop_left_top: tuple[int, int],
                   bucket: tuple[int, int], *, flip: bool) -> Image.Image:
    """The geometry its image got: resized, cropped at the image's crop, mirrored with it."""
    if mask.size != tuple(resized_size):
        mask = mask.resize(tuple(resized_size), Image.Resampling.BILINEAR)
    left, top = crop_left_top
    mask = mask.crop((left, top, left + bucket[0], top + bucket[1]))
    return ImageOps.mirror(mask) if flip else mask
