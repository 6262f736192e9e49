"""Scan kohya DreamBooth-style image folders (torch-free: the GUI shows a live summary from it).

    train_data_dir/               <- the folder the user picks: the PARENT
      10_sks woman/               <- "<repeats>_<instance token> <class>"
        a.png  a.txt              <- optional caption file `<stem><caption_extension>`
    reg_data_dir/
      1_woman/                    <- "<repeats>_<class>"

A subfolder name `<repeats>_<text>` gives the repeats and the folder text, which is the caption of
images without a caption file. Images are the IMAGE_EXTENSIONS of `image_header` in either case, taken
from the subfolder itself (not from nested folders). Sizes come from the file headers (PIL opens lazily)
and account for the EXIF orientation, because images are loaded EXIF-transposed.

Images that loading converts (see `image_modes`) are listed in `FolderScan.converted` with what is done;
files in another image format, or in a mode that cannot be made RGB, in `FolderScan.skipped` with why.

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
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from trainer.data.captions import CaptionFileError, count_tags, read_caption_file
from trainer.data.image_header import (IMAGE_EXTENSIONS, BadImageError, ConvertedImage, ImageInfo, SkippedFile,
                                       image_info, is_image_file, unused_format_reason, unused_image_format)
from trainer.errors import TrainingError

CAPTION_EXTENSIONS = (".txt", ".caption", ".cap")
SUBSET_NAME = re.compile(r"^(\d+)_(.*)$", re.DOTALL)

# Caption sources
FROM_FILE = "file"
FROM_FOLDER = "folder"
FROM_EMPTY_FILE = "empty_file"  # the caption file is empty, so the folder text is used


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
    converted: list[ConvertedImage] = field(default_factory=list)  # trained on after a conversion
    skipped: list[SkippedFile] = field(default_factory=list)  # not trained on, with the reason
    read_error: str = ""  # why the folder itself cannot be listed (e.g. "Permission denied")
    unreadable_subfolders: list[tuple[Path, str]] = field(default_factory=list)  # (folder, why)

    @property
    def usable(self) -> bool:
        return self.exists and self.is_dir and not self.read_error

    def unreadable_folders(self) -> list[tuple[Path, str]]:
        """(folder, why) for the root and each <repeats>_ subfolder that cannot be listed."""
        return ([(self.root, self.read_error)] if self.read_error else []) + self.unreadable_subfolders

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
    def converted(self) -> list[ConvertedImage]:
        return [c for folder in (self.train, self.reg) if folder for c in folder.converted]

    @property
    def skipped(self) -> list[SkippedFile]:
        return [k for folder in (self.train, self.reg) if folder for k in folder.skipped]

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

    def raise_for_problems(self) -> None:
        """Raise DatasetError when training cannot start: unreadable folders or files, or no images at all."""
        for folder in (self.train, self.reg):
            unreadable = folder.unreadable_folders() if folder else []
            if unreadable:
                path, why = unreadable[0]
                raise DatasetError("dir_unreadable", f"The folder {path} cannot be read ({why}).",
                                   field="reg_data_dir" if folder.is_reg else "train_data_dir",
                                   hint="Give your user account read access to it, or choose another folder.",
                                   params={"path": str(path), "reason": why})
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
    try:
        scan.is_dir = stat.S_ISDIR(root.stat().st_mode)
        scan.exists = True
    except (FileNotFoundError, NotADirectoryError):
        return scan
    except OSError as exc:  # e.g. a parent folder this user may not enter
        scan.exists, scan.read_error = True, read_error_text(exc)
        return scan
    if not scan.is_dir:
        return scan
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        scan.read_error = read_error_text(exc)
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


def read_error_text(exc: OSError) -> str:
    """Why a folder cannot be read, for messages: the system's reason, plus what it means for a permission."""
    reason = exc.strerror or str(exc)
    if isinstance(exc, PermissionError):
        return f"{reason}: this user account is not allowed to read it"
    return reason


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
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        scan.unreadable_subfolders.append((folder, read_error_text(exc)))
        return
    subset = Subset(folder=folder, repeats=repeats, class_tokens=text.strip(), is_reg=scan.is_reg)
    scan.subsets.append(subset)
    names = {e.name for e in entries if e.is_file()}
    stems_seen: set[str] = set()
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if _holds_images(Path(entry.path)):
                subset.nested_image_folders.append(Path(entry.path))
            continue
        path = Path(entry.path)
        if not is_image_file(entry.name):
            extension = unused_image_format(entry.name)
            if extension:
                scan.skipped.append(SkippedFile(path, "format", unused_format_reason(extension), extension))
            continue
        if path.stem in stems_seen:
            scan.duplicate_stems.append(path)
        stems_seen.add(path.stem)
        for ext in caption_counts:
            if path.stem + ext in names:
                caption_counts[ext] += 1
        _scan_image(scan, subset, path, names, caption_extension, verify)


def _scan_image(scan: FolderScan, subset: Subset, path: Path, names: set[str], caption_extension: str,
                verify: bool) -> None:
    """Add one image file to `subset`, or record why it is not trained on."""
    try:
        info: ImageInfo = image_info(path, verify=verify)
    except BadImageError as exc:
        scan.corrupt.append(BadFile(path, "image", exc.reason))
        return
    if not info.usable:
        scan.skipped.append(SkippedFile(path, "mode", info.skip_reason, info.mode))
        return
    try:
        record = _caption_record(path, info.size, subset.class_tokens, caption_extension, names)
    except CaptionFileError as exc:
        scan.corrupt.append(BadFile(exc.path, "caption", exc.reason))
        return
    subset.images.append(record)
    if info.notes:
        scan.converted.append(ConvertedImage(path, info.notes))


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
