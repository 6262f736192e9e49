"""Facts about this machine that the form needs, found without importing torch."""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import sys
from pathlib import Path


@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    """An NVIDIA driver is present (the engine decides for real; this only gates the form)."""
    if os.environ.get("LORA_GUI_ASSUME_CUDA") in ("0", "1"):
        return os.environ["LORA_GUI_ASSUME_CUDA"] == "1"
    if sys.platform.startswith("linux") and Path("/proc/driver/nvidia/version").exists():
        return True
    if sys.platform == "win32":
        system_root = Path(os.environ.get("SystemRoot", r"C:\Windows"))
        if (system_root / "System32" / "nvcuda.dll").exists():
            return True
    return shutil.which("nvidia-smi") is not None


@functools.lru_cache(maxsize=1)
def xformers_installed() -> bool:
    return importlib.util.find_spec("xformers") is not None


def xformers_usable() -> bool:
    return cuda_available() and xformers_installed()
