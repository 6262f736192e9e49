"""Slider wizard: LoRAs whose weight moves one attribute (docs/SLIDER.md).

    from trainer.slider import SliderSpec, SliderPair, validate_spec, run_slider
    spec = SliderSpec(pairs=[SliderPair("small_eyes", "big_eyes", "front")], model="sd15.safetensors",
                      prompt="a photo of a woman", output_dir="out", output_name="eyes")
    issues = validate_spec(spec)          # torch-free pre-flight checks
    result = run_slider(spec)             # events in out/eyes.events.jsonl; result.lora, result.preview

CLI: python -m trainer.tools slider --help (or python -m trainer.slider). The spec, checks and event
helpers import without torch (the web process uses them); the rest is imported lazily.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from trainer.slider.checks import validate_spec
from trainer.slider.spec import (
    FORMAT_VERSION,
    METHODS,
    SliderFiles,
    SliderIssue,
    SliderPair,
    SliderSpec,
    SliderSpecError,
    Stage,
    match_images,
    plan_stages,
)

_LAZY = {
    "run_slider": "trainer.slider.run",
    "SliderResult": "trainer.slider.run",
    "render_preview": "trainer.slider.preview",
    "GridLayout": "trainer.slider.preview",
    "LoraPatch": "trainer.slider.preview",
    "measure_slider": "trainer.slider.measure",
    "SliderShift": "trainer.slider.measure",
}

__all__ = ["FORMAT_VERSION", "METHODS", "SliderFiles", "SliderIssue", "SliderPair", "SliderSpec", "SliderSpecError",
           "Stage", "match_images", "plan_stages", "validate_spec", "slider_command", *_LAZY]


def slider_command(spec_path: str) -> list[str]:
    """The command line that runs a saved spec in a subprocess (what the GUI starts)."""
    import sys

    return [sys.executable, "-m", "trainer.slider", "--spec", str(spec_path)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trainer.slider' has no attribute {name!r}")
