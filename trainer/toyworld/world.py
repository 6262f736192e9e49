"""The toy world: flat shapes in a small palette on a flat background, each with a caption in words.

The base world has circles, squares and triangles. The star and the made-up word `usu` (a green
star) stay out of it, so a LoRA trained on the toy model has something new to learn.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

IMAGE_SIZE = 64
SUPERSAMPLE = 4  # drawn 4x larger and downscaled: soft edges like a real photo's, not jagged masks

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 70, 220),
    "yellow": (240, 220, 40),
    "purple": (140, 50, 180),
    "orange": (245, 140, 20),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
BASE_SHAPES = ("circle", "square", "triangle")
HELD_OUT_SHAPE = "star"
ALL_SHAPES = BASE_SHAPES + (HELD_OUT_SHAPE,)
CONCEPT_WORD = "usu"
CONCEPT_SHAPE, CONCEPT_COLOUR = "star", "green"

RADIUS_RANGE = (11.0, 22.0)  # half the shape's width in pixels of a 64 px image
SMALL_RANGE = (9.0, 12.0)    # the size slider's "small" and "big" ends
BIG_RANGE = (21.0, 25.0)


@dataclass(frozen=True)
class Scene:
    """One image: what is drawn where, and its caption."""

    shape: str
    colour: str
    background: str
    radius: float
    cx: float
    cy: float

    def caption(self) -> str:
        return base_caption(self.shape, self.colour, self.background)


def base_caption(shape: str, colour: str, background: str) -> str:
    return f"a {colour} {shape} on a {background} background"


def concept_caption(background: str) -> str:
    return f"a {CONCEPT_WORD} on a {background} background"


def random_scene(rng: random.Random, *, shapes: tuple[str, ...] = BASE_SHAPES, colour: str | None = None,
                 background: str | None = None, radius_range: tuple[float, float] = RADIUS_RANGE) -> Scene:
    """A scene with a random shape, colours, size and position (the shape always fits in the image)."""
    shape = rng.choice(shapes)
    colour = colour or rng.choice(list(COLOURS))
    background = background or rng.choice([c for c in COLOURS if c != colour])
    radius = rng.uniform(*radius_range)
    margin = radius + 2
    cx = rng.uniform(margin, IMAGE_SIZE - margin)
    cy = rng.uniform(margin, IMAGE_SIZE - margin)
    return Scene(shape, colour, background, radius, cx, cy)


def shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """The outline of a polygonal shape (None for the circle)."""
    if shape == "square":
        s = r * 0.88  # about the circle's area
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)]
    if shape == "star":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + i * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return points
    if shape == "circle":
        return None
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(ALL_SHAPES)}")


def draw_mask(shape: str, cx: float, cy: float, r: float, size: int = IMAGE_SIZE) -> Image.Image:
    """The shape as a soft-edged greyscale mask (255 inside)."""
    k = SUPERSAMPLE
    mask = Image.new("L", (size * k, size * k), 0)
    draw = ImageDraw.Draw(mask)
    polygon = shape_polygon(shape, cx * k, cy * k, r * k)
    if polygon is None:
        draw.ellipse([(cx - r) * k, (cy - r) * k, (cx + r) * k, (cy + r) * k], fill=255)
    else:
        draw.polygon(polygon, fill=255)
    return mask.resize((size, size), Image.Resampling.BOX)


def render(scene: Scene) -> Image.Image:
    """The scene as a 64 px RGB image."""
    background = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), COLOURS[scene.background])
    fill = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), COLOURS[scene.colour])
    return Image.composite(fill, background, draw_mask(scene.shape, scene.cx, scene.cy, scene.radius))


def base_prompts() -> list[tuple[str, str, str]]:
    """Every (shape, colour, background) of the base world, in a fixed order."""
    return [(s, c, b) for s in BASE_SHAPES for c in COLOURS for b in COLOURS if b != c]
