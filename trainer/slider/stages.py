"""The stages of a slider run, as its `stage` events announce them (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainer.slider.spec import SliderSpec

SIDES = ("low", "high")  # A, B


@dataclass
class Stage:
    """One step of the wizard, as the `stage` events announce it."""

    name: str  # "train front/low", "svd_merge", "resize", "preview"
    kind: str  # "train" | "merge" | "resize" | "preview"
    steps: int = 0  # optimizer steps (training stages)
    pair: str = ""
    side: str = ""


def plan_stages(spec: "SliderSpec") -> list[Stage]:
    """The stages a run of `spec` goes through, in order (torch-free)."""
    stages: list[Stage] = []
    if spec.method == "copy":
        for name in spec.pair_names():
            for side in SIDES:
                stages.append(Stage(f"train {name}/{side}", "train", spec.max_train_steps, name, side))
        stages.append(Stage("svd_merge", "merge"))
    else:
        stages.append(Stage("train paired", "train", spec.max_train_steps))
    if spec.resize_enabled():
        stages.append(Stage("resize", "resize"))
    if spec.preview:
        stages.append(Stage("preview", "preview"))
    return stages
