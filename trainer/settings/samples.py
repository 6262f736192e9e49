"""Samples tab: cadence, sampler and prompts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional  # noqa: F401  (annotations name it)

from trainer.params import param
from trainer.settings.choices import *  # noqa: F401,F403  (the choices and checks the declarations name)


@dataclass
class SampleSettings:
    sample_every_n_steps: int = param(0, "Generate sample images every N steps (0 = off).", tab="samples",
                                      label="Sample every n steps", min=0, max=10_000_000)
    sample_every_n_epochs: int = param(0, "Generate sample images every N epochs (0 = off).", tab="samples",
                                       label="Sample every n epochs", min=0, max=10000)
    sample_at_first: bool = param(False, "Also generate samples before training starts.", tab="samples",
                                  label="Sample before training")
    sample_sampler: str = param("euler_a", "Sampler used for sample images.", tab="samples", label="Sample sampler",
                                choices=SAMPLERS)
    sample_prompts: str = param(
        "", "One prompt per line; options: --n negative, --w width, --h height, --s steps, --l CFG scale, --d seed.",
        tab="samples", label="Sample prompts", widget="textarea", sd_scripts="file")
