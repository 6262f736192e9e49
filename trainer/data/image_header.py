"""What the scan learns from an image file's header (torch-free): its size as loaded, what loading it
converts, or why it cannot be used.

Images are the extensions in IMAGE_EXTENSIONS, in either case. GIF, WebP and APNG animations and
multi-page TIFFs train on their first frame (and say so). Files in another image format are listed as
skipped, with the reason, instead of being passed over in silence.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

from PIL import Image, UnidentifiedImageError

from trainer.data.image_modes import SUPPORTED_MODES, ConversionNote, conversion_notes

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# Image formats Pillow does not register (camera raw, HEIF, JPEG XL, vector): reported as skipped too.
OTHER_IMAGE_EXTENSIONS = (".heic", ".heif", ".jxl", ".svg", ".exr", ".hdr", ".dng", ".cr2", ".nef", ".arw", ".raw")


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


@lru_cache(maxsize=1)
def _unused_image_extensions() -> frozenset[str]:
    Image.init()
    known = set(Image.registered_extensions()) | set(OTHER_IMAGE_EXTENSIONS)
    return frozenset(known - set(IMAGE_EXTENSIONS))


def unused_image_format(name: str) -> Optional[str]:
    """The extension (".psd") of a file in an image format that is not trained on, else None."""
    suffix = Path(name).suffix.lower()
    return suffix if suffix in _unused_image_extensions() else None


def unused_format_reason(extension: str) -> str:
    return (f"{extension} files are not used for training (used: {' '.join(IMAGE_EXTENSIONS)}); "
            "convert it to PNG or JPEG to train on it")


class BadImageError(ValueError):
    def __init__(self, path: Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class ImageInfo:
    size: tuple[int, int]  # (width, height) as loaded, i.e. after EXIF orientation
    mode: str
    notes: tuple[ConversionNote, ...] = ()  # what loading changes on the way to 8-bit RGB

    @property
    def usable(self) -> bool:
        return self.mode in SUPPORTED_MODES

    @property
    def skip_reason(self) -> str:
        return "" if self.usable else f"its image mode {self.mode} cannot be converted to RGB; save it as RGB PNG"


@dataclass(frozen=True)
class ConvertedImage:
    path: Path
    notes: tuple[ConversionNote, ...]


@dataclass(frozen=True)
class SkippedFile:
    path: Path
    reason: str  # "format" (an image format that is not trained on) | "mode" (cannot be made RGB)
    message: str
    detail: str = ""  # the extension (".psd") or the image mode


_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_info_cache: dict[tuple[str, int, int, bool], ImageInfo] = {}
_INFO_CACHE_LIMIT = 100_000


def image_info(path: Path, *, verify: bool = False) -> ImageInfo:
    """Size, mode and conversion notes of an image as it will be loaded (EXIF-transposed).

    Reads the header only unless `verify`, which decodes the whole (first frame of the) image.
    Results are cached by path, modification time and file size, so rescanning an unchanged folder
    is cheap. Raises BadImageError for a file that cannot be read.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise BadImageError(path, f"cannot be read ({exc.strerror or exc})") from None
    key = (str(path), st.st_mtime_ns, st.st_size, verify)
    cached = _info_cache.get(key) or _info_cache.get((str(path), st.st_mtime_ns, st.st_size, True))
    if cached:
        return cached
    if st.st_size == 0:
        raise BadImageError(path, "the file is empty")
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = _orientation(img)
            info = ImageInfo((height, width) if orientation in _TRANSPOSING_ORIENTATIONS else (width, height),
                             img.mode, tuple(conversion_notes(img, orientation)))
            if verify:
                img.seek(0)
                img.load()
    except UnidentifiedImageError:
        raise BadImageError(path, "not a readable image (unknown or damaged format)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise BadImageError(path, f"damaged image ({exc})") from None
    if width <= 0 or height <= 0:
        raise BadImageError(path, f"invalid image size {width}x{height}")
    if len(_info_cache) >= _INFO_CACHE_LIMIT:
        _info_cache.clear()
    _info_cache[key] = info
    return info


def image_size(path: Path, *, verify: bool = False) -> tuple[int, int]:
    """(width, height) of an image as it will be loaded (EXIF-transposed)."""
    return image_info(path, verify=verify).size


def _orientation(img: Image.Image) -> int:
    # PIL's PNG getexif() decodes the whole image when the eXIf chunk is not in the header;
    # such late chunks are rare, and the loader copes with a size that differs from the scan.
    if img.format == "PNG" and "exif" not in img.info:
        return 1
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # a malformed EXIF block must not make the image "corrupt"
        return 1
