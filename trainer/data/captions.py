"""Caption files and per-sample caption processing (torch-free).

Rules follow sd-scripts' DreamBooth datasets:
- a caption file is `<image stem><caption_extension>` beside the image; its first line is the caption;
- per sample and epoch, the whole caption is dropped (-> "") with `caption_dropout_rate`, or on every
  N-th epoch (1-based, as sd-scripts counts) with `caption_dropout_every_n_epochs`;
- otherwise, with `shuffle_caption`, the comma-separated tags after the first `keep_tokens` are shuffled.

Every random choice comes from the `random.Random` the caller passes, so a caption is a pure
function of (caption, options, epoch, rng seed).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

TAG_SEPARATOR = ","


class CaptionFileError(ValueError):
    """A caption file that exists but cannot be read as UTF-8 text."""

    def __init__(self, path: Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def read_caption_file(path: Path) -> str:
    """The first line of a caption file, stripped ("" for an empty file).

    A UTF-8 byte-order mark (Windows Notepad writes one) is ignored.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise CaptionFileError(path, "not UTF-8 text; save it again as UTF-8") from None
    except OSError as exc:
        raise CaptionFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    lines = text.splitlines()
    return lines[0].strip() if lines else ""


def split_tags(caption: str) -> list[str]:
    """Comma-separated tags, stripped, empty ones dropped."""
    return [t.strip() for t in caption.split(TAG_SEPARATOR) if t.strip()]


def count_tags(captions: Iterable[str]) -> dict[str, int]:
    """How many captions hold each (lower-cased) tag, as sd-scripts' ss_tag_frequency counts them."""
    counts: dict[str, int] = {}
    for caption in captions:
        for tag in split_tags(caption):
            tag = tag.lower()
            counts[tag] = counts.get(tag, 0) + 1
    return counts


@dataclass(frozen=True)
class CaptionOptions:
    shuffle: bool = False
    keep_tokens: int = 0
    dropout_rate: float = 0.0
    dropout_every_n_epochs: int = 0

    @classmethod
    def from_config(cls, cfg) -> "CaptionOptions":
        return cls(shuffle=cfg.shuffle_caption, keep_tokens=cfg.keep_tokens,
                   dropout_rate=cfg.caption_dropout_rate,
                   dropout_every_n_epochs=cfg.caption_dropout_every_n_epochs)


def process_caption(caption: str, options: CaptionOptions, *, epoch: int, rng: random.Random) -> str:
    """The caption one sample trains with in `epoch` (0-based epoch index, as the dataset uses).

    Random draws happen in a fixed order (dropout, then shuffle) so the result depends only on
    the RNG's seed, not on which options are on.
    """
    dropped = options.dropout_rate > 0 and rng.random() < options.dropout_rate
    every_n = options.dropout_every_n_epochs
    if dropped or (every_n > 0 and (epoch + 1) % every_n == 0):
        return ""
    if not options.shuffle:
        return caption
    tags = split_tags(caption)
    fixed, flexible = tags[: options.keep_tokens], tags[options.keep_tokens:]
    rng.shuffle(flexible)
    return ", ".join(fixed + flexible)
