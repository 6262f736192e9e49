"""Text-encoder outputs computed once before training (sd-scripts' `cache_text_encoder_outputs`).

With frozen text encoders and captions that never change (no shuffling, no dropout; validation refuses
the rest), every image's conditioning is fixed: it is computed once per distinct caption, and the text
encoders can leave the GPU. With `to_disk`, `<image stem>_te_outputs.npz` beside each image (sd-scripts'
file name) stores the family's conditioning tensors (float32) plus, as JSON under `lora_gui_key`,
everything they depend on: the caption, the model, the family and the tokenizer settings. A file is
reused only when all of that matches; anything else is encoded again and the file rewritten.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional

import numpy as np
import torch

from trainer.fileio import atomic_path

SUFFIX = "_te_outputs.npz"
KEY_FIELD = "lora_gui_key"
CACHE_FORMAT = 1

EncodeFn = Callable[[list[str]], Mapping[str, torch.Tensor]]
Conditioning = dict[str, torch.Tensor]  # family conditioning of ONE caption, each tensor with batch size 1


@dataclass
class TextCacheReport:
    captions: int = 0  # distinct captions now cached
    encoded: int = 0
    reused_from_disk: int = 0  # image files whose outputs were read
    written_to_disk: int = 0
    disk_errors: int = 0  # files that could not be written (the memory cache still holds them)

    def summary(self) -> str:
        text = f"cached text-encoder outputs of {self.captions} caption(s) ({self.encoded} encoded"
        if self.reused_from_disk or self.written_to_disk or self.disk_errors:
            text += f", {self.reused_from_disk} file(s) reused, {self.written_to_disk} written"
            if self.disk_errors:
                text += f", {self.disk_errors} could not be written"
        return text + ")"


def cache_path(image_path: Path) -> Path:
    image_path = Path(image_path)
    return image_path.with_name(image_path.stem + SUFFIX)


def cache_key(caption: str, encoder_id: str) -> str:
    return json.dumps({"format": CACHE_FORMAT, "caption": caption, "encoder": encoder_id}, sort_keys=True)


def load_outputs(path: Path, key: str) -> Optional[Conditioning]:
    """The conditioning stored in `path` when it was written for exactly `key`, else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if KEY_FIELD not in npz.files or str(npz[KEY_FIELD]) != key:
                return None
            return {name: torch.from_numpy(np.array(npz[name], dtype=np.float32)) for name in npz.files
                    if name != KEY_FIELD}
    except (OSError, ValueError, KeyError, EOFError):
        return None  # unreadable or partial: encode again


def save_outputs(path: Path, key: str, cond: Conditioning) -> None:
    arrays = {name: t.detach().float().cpu().numpy() for name, t in cond.items()}
    arrays[KEY_FIELD] = np.array(key)
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as fh:  # a file object, so numpy does not append ".npz" to the temp name
            np.savez(fh, **arrays)


def cache_text_encoder_outputs(items: Iterable[tuple[Path, str]], encode: EncodeFn, *, encoder_id: str,
                               to_disk: bool = False) -> tuple[dict[str, Conditioning], TextCacheReport]:
    """Conditioning for every caption of `items` ((image path, caption) pairs), on the CPU in float32.

    `encode(captions)` returns the family's conditioning dict for a batch of captions. Captions are
    encoded one at a time, as the training loop would encode a batch of one, so the cached values are
    bit-identical to live ones.
    """
    items = list(items)
    report = TextCacheReport()
    cache: dict[str, Conditioning] = {}
    pending: dict[str, list[Path]] = {}
    for image_path, caption in items:
        stored = load_outputs(cache_path(image_path), cache_key(caption, encoder_id)) if to_disk else None
        if stored is not None:
            cache.setdefault(caption, stored)
            report.reused_from_disk += 1
        else:
            pending.setdefault(caption, []).append(Path(image_path))
    for caption, paths in pending.items():
        if caption not in cache:
            with torch.no_grad():
                out = encode([caption])
            cache[caption] = {name: t.detach().float().cpu() for name, t in out.items()}
            report.encoded += 1
        if not to_disk:
            continue
        for image_path in paths:
            try:
                save_outputs(cache_path(image_path), cache_key(caption, encoder_id), cache[caption])
                report.written_to_disk += 1
            except OSError:
                report.disk_errors += 1  # e.g. a read-only dataset folder
    report.captions = len(cache)
    return cache, report
