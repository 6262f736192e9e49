"""'Prepare folders': build the kohya folder layout from a plain folder of images.

    <dest>/img/<repeats>_<token> <class>/   the training images (+ captions), COPIED
    <dest>/reg/<repeats>_<class>/           regularisation images, COPIED (optional)
    <dest>/log/  <dest>/model/

The user's files are only ever copied, never moved or changed.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lora_gui.engine import IMAGE_EXTENSIONS  # the images training uses, defined once


class PrepareError(Exception):
    def __init__(self, key: str, **params: object):
        super().__init__(key)
        self.key = key
        self.params = params


@dataclass
class PreparedFolders:
    train_data_dir: Path
    reg_data_dir: Optional[Path]
    output_dir: Path
    logging_dir: Path
    copied_images: int
    copied_reg_images: int
    copied_captions: int


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _copy_images(src: Path, dest: Path) -> tuple[int, int]:
    """Copy images and their caption files; never overwrite a file that is already there."""
    dest.mkdir(parents=True, exist_ok=True)
    images = captions = 0
    for image in _images(src):
        target = dest / image.name
        if not target.exists():
            shutil.copy2(image, target)
        images += 1
        for ext in (".txt", ".caption"):
            side = image.with_suffix(ext)
            if side.is_file():
                if not (dest / side.name).exists():
                    shutil.copy2(side, dest / side.name)
                captions += 1
    return images, captions


def prepare_folders(*, instance_token: str, class_token: str, repeats: int, images_dir: str, dest_dir: str,
                    reg_images_dir: str = "", reg_repeats: int = 1) -> PreparedFolders:
    token = " ".join(instance_token.split())
    klass = " ".join(class_token.split())
    if not token:
        raise PrepareError("prepare.need_token")
    if not klass:
        raise PrepareError("prepare.need_class")
    if any(c in token + klass for c in '/\\:*?"<>|'):
        raise PrepareError("prepare.bad_chars")
    if int(repeats) < 1 or int(reg_repeats) < 1:
        raise PrepareError("prepare.bad_repeats")
    src = Path(images_dir.strip()).expanduser()
    if not images_dir.strip() or not src.is_dir():
        raise PrepareError("prepare.no_images_dir", path=images_dir)
    if not _images(src):
        raise PrepareError("prepare.no_images", path=str(src))
    if not dest_dir.strip():
        raise PrepareError("prepare.need_dest")
    dest = Path(dest_dir.strip()).expanduser().resolve()
    if dest == src.resolve() or src.resolve() in dest.parents:
        raise PrepareError("prepare.dest_inside_source")
    reg_src: Optional[Path] = None
    if reg_images_dir.strip():
        reg_src = Path(reg_images_dir.strip()).expanduser()
        if not reg_src.is_dir() or not _images(reg_src):
            raise PrepareError("prepare.no_reg_images", path=reg_images_dir)

    train_root = dest / "img"
    images, captions = _copy_images(src, train_root / f"{int(repeats)}_{token} {klass}")
    reg_root: Optional[Path] = None
    reg_images = 0
    if reg_src is not None:
        reg_root = dest / "reg"
        reg_images, _ = _copy_images(reg_src, reg_root / f"{int(reg_repeats)}_{klass}")
    (dest / "log").mkdir(parents=True, exist_ok=True)
    (dest / "model").mkdir(parents=True, exist_ok=True)
    return PreparedFolders(train_data_dir=train_root, reg_data_dir=reg_root, output_dir=dest / "model",
                           logging_dir=dest / "log", copied_images=images, copied_reg_images=reg_images,
                           copied_captions=captions)
