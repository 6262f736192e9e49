"""Known harmless library lines: kept in the run's log file, left out of the page's Log panel.

The engine's stdout/stderr go to `<output_dir>/<name>.log` untouched. Libraries print notes there
that do not concern the training (an optional CPU kernel that could not be fetched offline, a
fallback to the PIL image processor because torchvision is absent); in the page they read like
problems. Each pattern finds one such line (a logger prefix before it does not matter); add new
ones here, nowhere else.
"""

from __future__ import annotations

import re
from typing import Iterable

HARMLESS_LIBRARY_LINES: tuple[re.Pattern[str], ...] = tuple(re.compile(p) for p in (
    # bitsandbytes on a CPU tries to fetch an optional 4-bit kernel through `kernels` (offline: it cannot)
    r"Skipping publisher trust check for 'kernels-community/",
    r"Failed to load CPU gemm_4bit_forward from kernels-community",
    r"The installed version of bitsandbytes was compiled without GPU support",
    # transformers 5 without torchvision: image processors fall back to their PIL versions
    r"\[transformers\] `\w+` requires torchvision \(not installed\); falling back to `\w+`",
    r"`\w+ImageProcessor` requires torchvision \(not installed\); falling back to",
))


def is_library_noise(line: str) -> bool:
    return any(pattern.search(line) for pattern in HARMLESS_LIBRARY_LINES)


def without_library_noise(lines: Iterable[str]) -> list[str]:
    return [line for line in lines if not is_library_noise(line)]
