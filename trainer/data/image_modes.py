"""Every image mode Pillow opens, turned into 8-bit RGB (torch-free: the scan describes, the loader converts).

Pillow's own `convert("RGB")` is wrong for several modes: 16-bit greyscale is clipped at 255 (an almost
white image), float images become black, LAB is treated as if it were RGB, and an alpha channel is
simply dropped (whatever colour lies under transparent pixels shows). Here:

- 16-bit and 32-bit integer greyscale ("I;16*", "I") are scaled from 0-65535 to 0-255;
- floating-point greyscale ("F") is read as 0.0-1.0;
- transparency (an alpha channel, or a transparent palette / grey / colour entry) is composited on a
  white background;
- CMYK uses the file's ICC profile when it has one, LAB goes through a colour-managed transform;
- palette, 1-bit, greyscale, YCbCr and HSV use Pillow's conversion, which is right for them.

`conversion_notes` says, from the header alone, what `to_rgb` will do to a file, so the dataset summary
can list converted files without decoding them. Modes outside SUPPORTED_MODES are skipped by the scan.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

BACKGROUND = (255, 255, 255)
BACKGROUND_NAME = "white"

ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa")
HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # read as 0-65535 (what Pillow gives 16-bit files)
PLAIN_MODES = ("RGB", "RGBX", "L", "1", "P", "YCbCr", "HSV", "CMYK", "LAB", "F")
SUPPORTED_MODES = frozenset((*ALPHA_MODES, *HIGH_BIT_MODES, *PLAIN_MODES))

NOTE_TEMPLATES = {
    "greyscale": "greyscale, copied to red, green and blue",
    "high_bit_depth": "{mode} values (0 to 65535) scaled to 8 bits",
    "float": "floating-point values (0 to 1) scaled to 8 bits",
    "transparency": "transparency composited on a {background} background",
    "palette": "palette colours expanded to RGB",
    "cmyk": "CMYK converted to RGB",
    "color_space": "{mode} converted to RGB",
    "exif_orientation": "turned upright by its EXIF orientation ({orientation})",
    "first_frame": "only the first of its {frames} frames is used",
}


@dataclass(frozen=True)
class ConversionNote:
    code: str  # a key of NOTE_TEMPLATES (the GUI translates it)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def message(self) -> str:
        return NOTE_TEMPLATES[self.code].format(**self.params)

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "params": dict(self.params), "message": self.message}


def has_transparency(img: Image.Image) -> bool:
    return img.mode in ALPHA_MODES or "transparency" in img.info


def conversion_notes(img: Image.Image, orientation: int = 1) -> list[ConversionNote]:
    """What loading `img` (opened, not necessarily decoded) changes on the way to 8-bit RGB."""
    mode, notes = img.mode, []
    if mode in HIGH_BIT_MODES:
        notes.append(ConversionNote("high_bit_depth", {"mode": mode}))
    elif mode == "F":
        notes.append(ConversionNote("float"))
    elif mode in ("P", "PA"):
        notes.append(ConversionNote("palette"))
    elif mode == "CMYK":
        notes.append(ConversionNote("cmyk"))
    elif mode in ("YCbCr", "HSV", "LAB"):
        notes.append(ConversionNote("color_space", {"mode": mode}))
    if mode in ("L", "LA", "1", *HIGH_BIT_MODES, "F"):
        notes.append(ConversionNote("greyscale"))
    if has_transparency(img):
        notes.append(ConversionNote("transparency", {"background": BACKGROUND_NAME}))
    if orientation not in (0, 1):
        notes.append(ConversionNote("exif_orientation", {"orientation": orientation}))
    frames = frame_count(img)
    if frames > 1:
        notes.append(ConversionNote("first_frame", {"frames": frames}))
    return notes


def frame_count(img: Image.Image) -> int:
    """Frames (GIF, WebP, APNG) or pages (TIFF); `is_animated` is checked first because it is cheap."""
    if not getattr(img, "is_animated", False):
        return 1
    try:
        return int(getattr(img, "n_frames", 1))
    except (OSError, ValueError, EOFError):
        return 2  # at least two: is_animated said so


def to_rgb(img: Image.Image) -> Image.Image:
    """The first frame of `img` as 8-bit RGB (see the module docstring for each mode)."""
    mode = img.mode
    if mode not in SUPPORTED_MODES:
        raise ValueError(f"image mode {mode} cannot be converted to RGB")
    if mode == "RGB" and "transparency" not in img.info:
        return img.copy()
    if mode in HIGH_BIT_MODES or mode == "F":
        img = _greyscale_to_8bit(img)  # transparency of such images is not supported by Pillow either
    elif has_transparency(img):
        return _composite(img.convert("RGBA"))
    elif mode == "CMYK":
        return _cmyk_to_rgb(img)
    elif mode == "LAB":
        return _lab_to_rgb(img)
    return img.convert("RGB")


def _greyscale_to_8bit(img: Image.Image) -> Image.Image:
    values = np.asarray(img).astype(np.float64)
    scaled = values * 255.0 if img.mode == "F" else values / 257.0  # 65535 / 257 = 255
    return Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8), mode="L")


def _composite(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _cmyk_to_rgb(img: Image.Image) -> Image.Image:
    icc = img.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(img, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception:  # noqa: BLE001 - a broken or unsupported profile: fall back to the plain formula
            pass
    return img.convert("RGB")


def _lab_to_rgb(img: Image.Image) -> Image.Image:
    from PIL import ImageCms

    transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"),
                                        "LAB", "RGB")
    return ImageCms.applyTransform(img, transform)
