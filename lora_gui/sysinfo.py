"""Facts about this machine that the form needs, found without importing torch (trainer.machine's guesses)."""

from __future__ import annotations

from lora_gui.engine import cuda_likely, xformers_installed


def cuda_available() -> bool:
    """A GPU driver is present (the engine decides for real; this only gates the form)."""
    return cuda_likely()


def xformers_usable() -> bool:
    return cuda_likely() and xformers_installed()
