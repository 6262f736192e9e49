"""TensorBoard logs of a run, when `logging_dir` is set: accelerate's TensorBoard tracker (the tensorboard
package's SummaryWriter, main process only) under `<logging_dir>/<output_name>_<YYYYmmddHHMMSS>/`, as
sd-scripts lays them out. Scalars per optimizer step (sd-scripts' tags where it has them): `loss/current`,
`loss/average`, `lr/<group>` for each parameter group, `time/sec_per_step`; sample images as
`samples/<NN>` at their step."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from accelerate import Accelerator

from trainer.config import TrainConfig


def tracker_options(cfg: TrainConfig) -> dict[str, Any]:
    """The Accelerator keywords that turn the tracker on (none without a logging folder)."""
    return {"log_with": "tensorboard", "project_dir": cfg.logging_dir.strip()} if cfg.logging_dir.strip() else {}


class TensorBoardLog:
    def __init__(self, accelerator: Accelerator, cfg: TrainConfig):
        self.accelerator = accelerator
        self.on = bool(cfg.logging_dir.strip())
        self.run_name = f"{cfg.output_name}_{time.strftime('%Y%m%d%H%M%S')}"
        self.folder = Path(cfg.logging_dir.strip(), self.run_name)
        if self.on:
            accelerator.init_trackers(self.run_name)

    def step(self, step: int, *, loss: float, avg_loss: float, param_groups: list[dict], seconds: float) -> None:
        if not self.on:
            return
        values = {"loss/current": loss, "loss/average": avg_loss, "time/sec_per_step": seconds}
        values |= {f"lr/{group.get('name') or f'group{i}'}": float(group["lr"] or 0.0)
                   for i, group in enumerate(param_groups)}
        self.accelerator.log(values, step=step)

    def samples(self, step: int, paths: list[Any]) -> None:
        if not self.on or not self.accelerator.is_main_process:
            return
        from PIL import Image

        tracker = self.accelerator.get_tracker("tensorboard", unwrap=True)
        for i, path in enumerate(paths):
            with Image.open(path) as image:
                tracker.add_image(f"samples/{i:02d}", np.asarray(image.convert("RGB")), step, dataformats="HWC")

    def close(self) -> None:
        if self.on:
            self.accelerator.end_training()

