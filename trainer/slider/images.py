"""The images of a slider folder pair: listing, captions and matching A_i/B_i (torch-free)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union


def list_images(folder: Union[str, Path]) -> list[Path]:
    """The images directly in `folder`, sorted by name."""
    from trainer.data.scan import is_image_file

    folder = Path(folder)
    return sorted((p for p in folder.iterdir() if p.is_file() and is_image_file(p.name)), key=lambda p: p.name)


def caption_of(image: Path, caption_extension: str) -> Optional[str]:
    """The image's caption file text (first line), or None when it has none or it is empty."""
    from trainer.data.captions import read_caption_file

    path = image.with_suffix(caption_extension)
    if not path.is_file():
        return None
    text = read_caption_file(path).strip()
    return text or None


def match_images(low: list[Path], high: list[Path], how: str = "auto") -> tuple[list[tuple[Path, Path]], str]:
    """Pairs (A_i, B_i) for the paired method, and the rule used ("name" or "order").

    name: images with the same file stem; order: the i-th image of each sorted folder (counts must agree);
    auto: name when both folders hold exactly the same stems, else order. Raises ValueError."""
    low_stems = {p.stem: p for p in low}
    high_stems = {p.stem: p for p in high}
    if how == "auto":
        how = "name" if set(low_stems) == set(high_stems) else "order"
    if how == "name":
        common = sorted(set(low_stems) & set(high_stems))
        if not common:
            raise ValueError("no image of the low folder has a namesake in the high folder")
        return [(low_stems[s], high_stems[s]) for s in common], "name"
    if len(low) != len(high):
        raise ValueError(f"the low folder has {len(low)} images and the high folder {len(high)}: "
                         "pairing by order needs the same count")
    return list(zip(low, high)), "order"
