"""Reads a toy-world image back: shape, shape colour, background colour and size. Torch-free (numpy, PIL).

Colours are snapped to the palette; the background is the most common colour along the border, the shape
is every pixel of another colour, and a small classifier trained on synthetic masks names its outline.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

from trainer.toyworld.world import ALL_SHAPES, COLOURS, IMAGE_SIZE, RADIUS_RANGE, draw_mask

PALETTE_NAMES = list(COLOURS)
PALETTE = np.array([COLOURS[name] for name in PALETTE_NAMES], dtype=np.float32)
MASK_GRID = 16  # the shape's bounding box is resampled to 16 x 16 for the classifier
MIN_SHAPE_PIXELS = 24


@dataclass(frozen=True)
class Reading:
    """What the scorer sees in one image (shape None: no shape found)."""

    shape: str | None
    colour: str | None
    background: str
    area: float  # fraction of the image the shape covers


def read_image(image: Image.Image) -> Reading:
    """Shape, colours and size of a 64 px toy-world image."""
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    snapped = snap_to_palette(np.asarray(image.convert("RGB"), dtype=np.float32))
    border = np.concatenate([snapped[:2].ravel(), snapped[-2:].ravel(), snapped[:, :2].ravel(), snapped[:, -2:].ravel()])
    background = int(np.bincount(border, minlength=len(PALETTE)).argmax())
    mask = _majority_filter(snapped != background)
    area = float(mask.mean())
    if mask.sum() < MIN_SHAPE_PIXELS:
        return Reading(None, None, PALETTE_NAMES[background], area)
    interior = _erode(mask)
    colour_pixels = snapped[interior] if interior.sum() >= 4 else snapped[mask]
    colour = int(np.bincount(colour_pixels, minlength=len(PALETTE)).argmax())
    return Reading(classify_mask(mask), PALETTE_NAMES[colour], PALETTE_NAMES[background], area)


def snap_to_palette(pixels: np.ndarray) -> np.ndarray:
    """The index of the nearest palette colour of every pixel of an (h, w, 3) array."""
    distances = ((pixels[..., None, :] - PALETTE) ** 2).sum(axis=-1)
    return distances.argmin(axis=-1)


def classify_mask(mask: np.ndarray) -> str:
    weights, bias = _classifier()
    scores = mask_features(mask) @ weights + bias
    return ALL_SHAPES[int(scores.argmax())]


def mask_features(mask: np.ndarray) -> np.ndarray:
    """The mask's bounding box resampled to a 16 x 16 grid, flattened, plus its fill ratio."""
    rows, cols = np.nonzero(mask)
    crop = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1].astype(np.uint8) * 255
    grid = Image.fromarray(crop).resize((MASK_GRID, MASK_GRID), Image.Resampling.BILINEAR)
    grid = np.asarray(grid, dtype=np.float32).ravel() / 255.0
    return np.append(grid, grid.mean())


@lru_cache(maxsize=1)
def _classifier(samples_per_shape: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Softmax regression on synthetic masks with ragged edges, trained in a second on first use."""
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    features, labels = [], []
    for label, shape in enumerate(ALL_SHAPES):
        for _ in range(samples_per_shape):
            r = rng.uniform(RADIUS_RANGE[0] - 4, RADIUS_RANGE[1] + 4)
            cx = cy = IMAGE_SIZE / 2 + rng.uniform(-4, 4)
            # blurred like a small VAE's output, ragged, thinner or fatter
            blurred = draw_mask(shape, cx, cy, r).filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 2.5)))
            soft = np.asarray(blurred, dtype=np.float32) / 255.0
            mask = soft + noise.normal(0, 0.15, soft.shape) > rng.uniform(0.35, 0.65)
            if mask.sum() >= MIN_SHAPE_PIXELS:
                features.append(mask_features(_majority_filter(mask)))
                labels.append(label)
    x, y = np.stack(features), np.array(labels)
    weights = np.zeros((x.shape[1], len(ALL_SHAPES)), dtype=np.float32)
    bias = np.zeros(len(ALL_SHAPES), dtype=np.float32)
    onehot = np.eye(len(ALL_SHAPES), dtype=np.float32)[y]
    for _ in range(600):
        logits = x @ weights + bias
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        grad = (p - onehot) / len(x)
        weights -= 2.0 * (x.T @ grad + 1e-4 * weights)
        bias -= 2.0 * grad.sum(axis=0)
    return weights, bias


def _neighbour_counts(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask.astype(np.int32), 1)
    h, w = mask.shape
    return sum(padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))


def _majority_filter(mask: np.ndarray) -> np.ndarray:
    return _neighbour_counts(mask) >= 5


def _erode(mask: np.ndarray) -> np.ndarray:
    return _neighbour_counts(mask) == 9
