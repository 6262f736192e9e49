"""How well a toy model follows its prompts: the base world's accuracy and the held-out concept's presence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from trainer.toyworld.scorer import Reading, read_image
from trainer.toyworld.world import (
    COLOURS,
    CONCEPT_COLOUR,
    CONCEPT_SHAPE,
    base_caption,
    base_prompts,
    concept_caption,
)

Sampler = Callable[[Sequence[str], int], list[Any]]  # (prompts, seed) -> PIL images


@dataclass(frozen=True)
class BaseScore:
    all_correct: float
    shape: float
    colour: float
    background: float
    samples: int


def score_base(sampler: Sampler, *, repeats: int = 1, stride: int = 1, seed: int = 0) -> BaseScore:
    """Every `stride`-th base-world prompt `repeats` times: the fraction with shape, colour and background
    all right."""
    wanted = base_prompts()[::stride] * repeats
    readings = [read_image(im) for im in sampler([base_caption(*w) for w in wanted], seed)]
    return base_score(wanted, readings)


def base_score(wanted: Sequence[tuple[str, str, str]], readings: Sequence[Reading]) -> BaseScore:
    shape = [r.shape == w[0] for w, r in zip(wanted, readings)]
    colour = [r.colour == w[1] for w, r in zip(wanted, readings)]
    background = [r.background == w[2] for w, r in zip(wanted, readings)]
    every = [a and b and c for a, b, c in zip(shape, colour, background)]
    n = len(readings)
    return BaseScore(sum(every) / n, sum(shape) / n, sum(colour) / n, sum(background) / n, n)


def concept_backgrounds() -> list[str]:
    return [c for c in COLOURS if c != CONCEPT_COLOUR]


def concept_readings(sampler: Sampler, *, repeats: int = 4, seed: int = 1000) -> list[Reading]:
    """`a usu on a <colour> background` for every background but green, `repeats` times, read back."""
    prompts = [concept_caption(b) for b in concept_backgrounds()] * repeats
    return [read_image(im) for im in sampler(prompts, seed)]


def score_concept(sampler: Sampler, *, repeats: int = 4, seed: int = 1000) -> float:
    """The fraction of `a usu on a <colour> background` samples that show a green star."""
    return concept_fraction(concept_readings(sampler, repeats=repeats, seed=seed))


def concept_fraction(readings: Sequence[Reading]) -> float:
    return sum(r.shape == CONCEPT_SHAPE and r.colour == CONCEPT_COLOUR for r in readings) / len(readings)
