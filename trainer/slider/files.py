"""Every path a slider run writes, from its spec (torch-free)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from trainer.events import control_path, events_path

if TYPE_CHECKING:
    from trainer.slider.spec import SliderSpec


class SliderFiles:
    """Every path a slider run writes. The work folder holds copies and intermediates only."""

    def __init__(self, spec: "SliderSpec"):
        self.output_dir = Path(spec.output_dir)
        self.name = spec.output_name
        self.work_dir = Path(spec.work_dir) if spec.work_dir else self.output_dir / f"{self.name}-work"
        self.pair_names = spec.pair_names()

    @property
    def lora(self) -> Path:
        return self.output_dir / f"{self.name}.safetensors"

    @property
    def stopped_lora(self) -> Path:
        return self.output_dir / f"{self.name}-stopped.safetensors"

    @property
    def preview(self) -> Path:
        return self.output_dir / f"{self.name}-preview.png"

    @property
    def events(self) -> Path:
        return events_path(self.output_dir, self.name)

    @property
    def stop(self) -> Path:
        return control_path(self.output_dir, self.name, "stop")

    @property
    def spec_json(self) -> Path:
        return self.output_dir / f"{self.name}.slider.json"

    @property
    def merged(self) -> Path:
        """copy with resize: the SVD merge before the resize (float)."""
        return self.work_dir / f"{self.name}-merged.safetensors"

    def data_dir(self, pair: str, side: str) -> Path:
        """The kohya train_data_dir of one folder (it holds one `1_<side>` subset)."""
        return self.work_dir / "data" / pair / side

    def intermediate_name(self, pair: str, side: str) -> str:
        return f"{pair}-{side}"

    @property
    def intermediate_dir(self) -> Path:
        return self.work_dir / "loras"

    def intermediate(self, pair: str, side: str) -> Path:
        return self.intermediate_dir / f"{self.intermediate_name(pair, side)}.safetensors"

    def outputs(self) -> list[Path]:
        """Files that must not exist before a run (nothing is ever overwritten)."""
        return [self.lora, self.preview]
