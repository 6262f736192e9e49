"""What this machine offers the engine, guessed without importing torch (the web process must not).

The form and the pre-flight use these same guesses, so the page never enables a setting that
validation refuses; the engine decides for real with torch once it runs.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import sys
from pathlib import Path

# "1" or "0" overrides the CUDA guess (a machine the guess gets wrong, or a test).
ASSUME_CUDA_ENV = "LORA_GUI_ASSUME_CUDA"


@functools.lru_cache(maxsize=1)
def cuda_likely() -> bool:
    """Whether torch will probably see a CUDA (or ROCm) GPU: a GPU driver is present and not hidden."""
    forced = os.environ.get(ASSUME_CUDA_ENV)
    if forced in ("0", "1"):
        return forced == "1"
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):  # every GPU hidden from this process
        return False
    if Path("/proc/driver/nvidia/version").exists() or Path("/dev/kfd").exists():  # Linux NVIDIA / ROCm driver
        return True
    if sys.platform == "win32":
        system_root = Path(os.environ.get("SystemRoot", r"C:\Windows"))
        if (system_root / "System32" / "nvcuda.dll").exists():
            return True
    return shutil.which("nvidia-smi") is not None


@functools.lru_cache(maxsize=1)
def xformers_installed() -> bool:
    return importlib.util.find_spec("xformers") is not None
