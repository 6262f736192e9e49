"""Scan kohya DreamBooth-style image folders (torch-free: the GUI shows a live summary from it).

    train_data_dir/               <- the folder the user picks: the PARENT
      10_sks woman/               <- "<repeats>_<instance token> <class>"
        a.png  a.txt              <- optional caption file `<stem><caption_extension>`
    reg_data_dir/
      1_woman/                    <- "<repeats>_<class>"

A subfolder name `<repeats>_<text>` gives the repeats and the folder text, which is the caption of
images without a caption file. Images are .png .jpg .jpeg .webp .bmp in either case, taken from the
subfolder itself (not from nested folders). Sizes come from the file headers (PIL opens lazily) and
account for the EXIF orientation, because images are loaded EXIF-transposed.

Corrupt-image policy: a file with an image extension that cannot be read is listed in
`DatasetScan.corrupt` and is never silently dropped. Validation reports each one as an error, naming the
file, and the dataset refuses to build while any is listed, because a quietly smaller dataset would
change the step counts the user was shown. `scan_dataset(cfg)` checks headers only (fast enough for the
GUI); `scan_dataset(cfg, verify=True)` also decodes every image, which also catches truncated files.
The engine should use verify=True before training. Unreadable caption files are handled the same way.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from PIL import Image, UnidentifiedImageError

from trainer.data.captions import CaptionFileError, count_tags, read_caption_file
from trainer.errors import TrainingError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CAPTION_EXTENSIONS = (".txt", ".caption", ".cap")
SUBSET_NAME = re.compile(r"^(\d+)_(.*)$", re.DOTALL)

# Caption sources
FROM_FILE = "file"
FROM_FOLDER = "folder"
FROM_EMPTY_FILE = "empty_file"  # the caption file is empty, so the folder text is used


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    size: tuple[int, int]  # (width, height) as loaded, i.e. after EXIF orientation
    caption: str
    caption_source: str  # FROM_FILE | FROM_FOLDER | FROM_EMPTY_FILE
    caption_path: Optional[Path] = None  # the caption file that was read, if any


@dataclass
class Subset:
    """One `<repeats>_<text>` folder."""

    folder: Path
    repeats: int
    class_tokens: str
    is_reg: bool
    images: list[ImageRecord] = field(default_factory=list)
    nested_image_folders: list[Path] = field(default_factory=list)  # subfolders with images (not used)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def image_count(self) -> int:
        return len(self.images)

    @property
    def captioned_count(self) -> int:
        """Images with a non-empty caption file (the caption coverage)."""
        return sum(1 for img in self.images if img.caption_source == FROM_FILE)

    @property
    def num_samples(self) -> int:
        return self.repeats * len(self.images)


@dataclass(frozen=True)
class IgnoredFolder:
    path: Path
    reason: str  # "no_repeats" | "zero_repeats"
    message: str


@dataclass(frozen=True)
class BadFile:
    path: Path
    kind: str  # "image" | "caption"
    reason: str


@dataclass
class FolderScan:
    """The scan of one root folder (train_data_dir or reg_data_dir)."""

    root: Path
    is_reg: bool
    given: bool = True  # False when the path field is empty
    exists: bool = False
    is_dir: bool = False
    subsets: list[Subset] = field(default_factory=list)
    ignored: list[IgnoredFolder] = field(default_factory=list)
    loose_images: list[Path] = field(default_factory=list)  # images directly in the root (not used)
    subfolder_names: list[str] = field(default_factory=list)  # every visible subfolder, for messages
    corrupt: list[BadFile] = field(default_factory=list)
    # images that have a caption file with each of CAPTION_EXTENSIONS (+ the configured one)
    caption_file_counts: dict[str, int] = field(default_factory=dict)
    duplicate_stems: list[Path] = field(default_factory=list)  # a.png + a.jpg share caption and cache names

    @property
    def usable(self) -> bool:
        return self.exists and self.is_dir

    @property
    def image_count(self) -> int:
        return sum(s.image_count for s in self.subsets)

    @property
    def num_samples(self) -> int:
        return sum(s.num_samples for s in self.subsets)


@dataclass
class DatasetScan:
    train: FolderScan
    reg: Optional[FolderScan]
    caption_extension: str

    @property
    def subsets(self) -> list[Subset]:
        return self.train.subsets + (self.reg.subsets if self.reg else [])

    @property
    def corrupt(self) -> list[BadFile]:
        return self.train.corrupt + (self.reg.corrupt if self.reg else [])

    @property
    def num_train_images(self) -> int:
        """Train images x repeats (sd-scripts' num_train_images)."""
        return self.train.num_samples

    @property
    def num_reg_images(self) -> int:
        """Regularisation image files found (before balancing)."""
        return self.reg.image_count if self.reg else 0

    def dataset_dirs(self) -> dict[str, dict[str, int]]:
        """ss_dataset_dirs: {folder name: {"n_repeats", "img_count"}}."""
        return _dirs(self.train)

    def reg_dataset_dirs(self) -> dict[str, dict[str, int]]:
        return _dirs(self.reg) if self.reg else {}

    def tag_frequency(self) -> dict[str, dict[str, int]]:
        """ss_tag_frequency: {folder name: {tag: number of images}} over train and reg folders."""
        freq: dict[str, dict[str, int]] = {}
        for subset in self.subsets:
            counts = freq.setdefault(subset.name, {})
            for tag, n in count_tags(img.caption for img in subset.images).items():
                counts[tag] = counts.get(tag, 0) + n
        return freq

    def summary(self) -> dict[str, Any]:
        """A JSON-ready overview for the UI (per-image details stay on the Subset objects)."""
        return {
            "train": _folder_summary(self.train),
            "reg": _folder_summary(self.reg) if self.reg else None,
            "caption_extension": self.caption_extension,
            "num_train_images": self.num_train_images,
            "num_reg_images": self.num_reg_images,
            "corrupt": [{"path": str(b.path), "kind": b.kind, "reason": b.reason} for b in self.corrupt],
            "tag_frequency": self.tag_frequency(),
        }

    def raise_for_problems(self) -> None:
        """Raise DatasetError when training cannot start: corrupt files, or no images at all."""
        if self.corrupt:
            field = "train_data_dir" if self.train.corrupt else "reg_data_dir"
            raise DatasetError("corrupt_image", corrupt_files_message(self.corrupt), field=field,
                               hint="Replace or remove these files, then start again.")
        if not self.train.image_count:
            raise DatasetError("no_images", f"No training images found in {self.train.root}.",
                               field="train_data_dir",
                               hint="Pick the parent of folders named <repeats>_<token> <class>, e.g. 10_sks woman.")


class DatasetError(TrainingError):
    """The dataset cannot be trained on; the message names what is wrong."""


def corrupt_files_message(bad: list[BadFile]) -> str:
    lines = [f"{len(bad)} file(s) cannot be read:"]
    lines += [f"  {b.path}: {b.reason}" for b in bad]
    return "\n".join(lines)


def _dirs(folder: FolderScan) -> dict[str, dict[str, int]]:
    return {s.name: {"n_repeats": s.repeats, "img_count": s.image_count} for s in folder.subsets}


def _folder_summary(folder: FolderScan) -> dict[str, Any]:
    return {
        "root": str(folder.root) if folder.given else "",
        "exists": folder.exists,
        "is_dir": folder.is_dir,
        "subsets": [{"folder": str(s.folder), "name": s.name, "repeats": s.repeats, "class_tokens": s.class_tokens,
                     "images": s.image_count, "captioned": s.captioned_count, "samples": s.num_samples}
                    for s in folder.subsets],
        "ignored": [{"path": str(i.path), "reason": i.reason, "message": i.message} for i in folder.ignored],
        "loose_images": len(folder.loose_images),
        "caption_file_counts": dict(folder.caption_file_counts),
    }


# ---- scanning ---------------------------------------------------------------------------

def scan_dataset(cfg, *, verify: bool = False) -> DatasetScan:
    """Scan cfg.train_data_dir and cfg.reg_data_dir (when set)."""
    ext = cfg.caption_extension
    train = scan_folder(cfg.train_data_dir, is_reg=False, caption_extension=ext, verify=verify)
    reg = None
    if cfg.reg_data_dir.strip():
        reg = scan_folder(cfg.reg_data_dir, is_reg=True, caption_extension=ext, verify=verify)
    return DatasetScan(train=train, reg=reg, caption_extension=ext)


def scan_folder(root, *, is_reg: bool = False, caption_extension: str = ".txt",
                verify: bool = False) -> FolderScan:
    """Scan one root folder; problems are recorded on the result, never raised."""
    text = str(root).strip()
    root = Path(text).expanduser()
    scan = FolderScan(root=root, is_reg=is_reg, given=bool(text))
    if not text:
        return scan
    scan.exists = root.exists()
    scan.is_dir = root.is_dir()
    if not scan.is_dir:
        return scan
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        scan.is_dir = False
        return scan
    counts = {e: 0 for e in (*CAPTION_EXTENSIONS, caption_extension) if e}
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            scan.subfolder_names.append(entry.name)
            _scan_subfolder(scan, Path(entry.path), caption_extension, verify, counts)
        elif is_image_file(entry.name):
            scan.loose_images.append(Path(entry.path))
    scan.caption_file_counts = counts
    return scan


def parse_subset_name(name: str) -> Optional[tuple[int, str]]:
    """'10_sks woman' -> (10, 'sks woman'); None when the name has no `<repeats>_` prefix."""
    m = SUBSET_NAME.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


def _scan_subfolder(scan: FolderScan, folder: Path, caption_extension: str, verify: bool,
                    caption_counts: dict[str, int]) -> None:
    parsed = parse_subset_name(folder.name)
    if parsed is None:
        scan.ignored.append(IgnoredFolder(folder, "no_repeats",
                                          f"the name does not start with <repeats>_ (e.g. 10_{folder.name})"))
        return
    repeats, text = parsed
    if repeats < 1:
        scan.ignored.append(IgnoredFolder(folder, "zero_repeats", "repeats is 0, so it adds no images"))
        return
    subset = Subset(folder=folder, repeats=repeats, class_tokens=text.strip(), is_reg=scan.is_reg)
    scan.subsets.append(subset)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    names = {e.name for e in entries if e.is_file()}
    stems_seen: set[str] = set()
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if _holds_images(Path(entry.path)):
                subset.nested_image_folders.append(Path(entry.path))
            continue
        if not is_image_file(entry.name):
            continue
        path = Path(entry.path)
        stem = path.stem
        if stem in stems_seen:
            scan.duplicate_stems.append(path)
        stems_seen.add(stem)
        for ext in caption_counts:
            if stem + ext in names:
                caption_counts[ext] += 1
        try:
            size = image_size(path, verify=verify)
        except BadImageError as exc:
            scan.corrupt.append(BadFile(path, "image", exc.reason))
            continue
        try:
            record = _caption_record(path, size, subset.class_tokens, caption_extension, names)
        except CaptionFileError as exc:
            scan.corrupt.append(BadFile(exc.path, "caption", exc.reason))
            continue
        subset.images.append(record)


def _caption_record(path: Path, size: tuple[int, int], folder_text: str, ext: str,
                    names: set[str]) -> ImageRecord:
    if ext and path.stem + ext in names:
        caption_path = path.with_name(path.stem + ext)
        text = read_caption_file(caption_path)
        if text:
            return ImageRecord(path, size, text, FROM_FILE, caption_path)
        return ImageRecord(path, size, folder_text, FROM_EMPTY_FILE, caption_path)
    return ImageRecord(path, size, folder_text, FROM_FOLDER, None)


def _holds_images(folder: Path) -> bool:
    try:
        return any(e.is_file() and is_image_file(e.name) for e in os.scandir(folder))
    except OSError:
        return False


# ---- image headers ------------------------------------------------------------------------

class BadImageError(ValueError):
    def __init__(self, path: Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_size_cache: dict[tuple[str, int, int, bool], tuple[int, int]] = {}
_SIZE_CACHE_LIMIT = 100_000


def image_size(path: Path, *, verify: bool = False) -> tuple[int, int]:
    """(width, height) of an image as it will be loaded (EXIF-transposed).

    Reads the header only unless `verify`, which decodes the whole image. Results are cached by
    path, modification time and file size, so rescanning an unchanged folder is cheap.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise BadImageError(path, f"cannot be read ({exc.strerror or exc})") from None
    key = (str(path), st.st_mtime_ns, st.st_size, verify)
    cached = _size_cache.get(key) or _size_cache.get((str(path), st.st_mtime_ns, st.st_size, True))
    if cached:
        return cached
    if st.st_size == 0:
        raise BadImageError(path, "the file is empty")
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = _orientation(img)
            if verify:
                img.load()
    except UnidentifiedImageError:
        raise BadImageError(path, "not a readable image (unknown or damaged format)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadImageError(path, f"damaged image ({exc})") from None
    if width <= 0 or height <= 0:
        raise BadImageError(path, f"invalid image size {width}x{height}")
    size = (height, width) if orientation in _TRANSPOSING_ORIENTATIONS else (width, height)
    if len(_size_cache) >= _SIZE_CACHE_LIMIT:
        _size_cache.clear()
    _size_cache[key] = size
    return size


def _orientation(img: Image.Image) -> int:
    # PIL's PNG getexif() decodes the whole image when the eXIf chunk is not in the header;
    # such late chunks are rare, and the loader copes with a size that differs from the scan.
    if img.format == "PNG" and "exif" not in img.info:
        return 1
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # a malformed EXIF block must not make the image "corrupt"
        return 1
