"""What the training uses of the machine, for the resource line beside the progress (in each step event).

psutil (a dependency of accelerate) reads the process's memory and CPU time, torch.cuda the GPU memory;
the GPU's utilisation comes through torch from NVML where pynvml is installed, and is left out elsewhere.
"""

from __future__ import annotations

from typing import Any

import psutil
import torch

GIB = 2**30


class ResourceMeter:
    def __init__(self, device: torch.device):
        self.device = device
        self.process = psutil.Process()
        self.process.cpu_percent(None)  # the first reading starts the interval the next one measures

    def read(self) -> dict[str, Any]:
        """RAM (resident, GiB, with data-loader workers), CPU (% of one core since the last reading) and on
        CUDA the memory allocated / reserved by torch and the card's total, and its utilisation."""
        ram = self.process.memory_info().rss + sum(_rss(child) for child in self.process.children(recursive=True))
        usage: dict[str, Any] = {"ram_gib": round(ram / GIB, 2), "cpu_percent": round(self.process.cpu_percent(None))}
        if self.device.type == "cuda":
            _free, total = torch.cuda.mem_get_info(self.device)
            usage.update(vram_allocated_gib=round(torch.cuda.memory_allocated(self.device) / GIB, 2),
                         vram_reserved_gib=round(torch.cuda.memory_reserved(self.device) / GIB, 2),
                         vram_total_gib=round(total / GIB, 1))
            try:
                usage["gpu_percent"] = torch.cuda.utilization(self.device)
            except Exception:  # noqa: BLE001 - pynvml missing or NVML unavailable: no utilisation figure
                pass
        return usage


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.Error:  # a worker that just ended
        return 0
