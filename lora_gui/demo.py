"""The CPU demo: the shipped toy model learns a held-out concept from a few toy-world images.

The images and the run file are written on first start by `python -m trainer.toyworld demo` (a
subprocess, like the engine); the model itself ships with the project (trainer/toyworld/model).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lora_gui import APP_DIR

DEMO_DIR = APP_DIR / "demo"
DEMO_IMAGE_FOLDER = "10_usu"  # trainer.toyworld.demo.DEMO_FOLDER (the web process stays engine-free)
TOY_MODEL = APP_DIR / "trainer" / "toyworld" / "model"
OLD_DEMO_FOLDER = "10_sks disc"  # the random-model demo of earlier versions


def demo_ready(root: Path = DEMO_DIR) -> bool:
    return (root / "img" / DEMO_IMAGE_FOLDER).is_dir() and (root / "run.json").is_file()


def ensure_demo(root: Path = DEMO_DIR, timeout: float = 300) -> tuple[bool, str]:
    """Write the demo images and run file under `root` when missing. Returns (ok, message for the console)."""
    if not (TOY_MODEL / "model_index.json").is_file():
        return False, (f"the toy model is missing from {TOY_MODEL}: restore it with git "
                       "or rebuild it with python -m trainer.toyworld build")
    if demo_ready(root):
        return True, ""
    _retire_old_demo(root)
    cmd = [sys.executable, "-m", "trainer.toyworld", "demo", "--out", str(root)]
    try:
        proc = subprocess.run(cmd, cwd=str(APP_DIR), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"could not create the demo images: {exc}"
    if proc.returncode != 0 or not demo_ready(root):
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-5:])
        return False, f"could not create the demo images (exit code {proc.returncode}):\n{tail}"
    return True, "demo images created in " + str(root)


def _retire_old_demo(root: Path) -> None:
    """The earlier demo's generated images would join the new demo's training: move them aside (kept)."""
    old = root / "img" / OLD_DEMO_FOLDER
    if old.is_dir() and (root / "tiny-sd1").is_dir():
        target = root / "old-demo"
        target.mkdir(exist_ok=True)
        if not (target / OLD_DEMO_FOLDER).exists():
            old.rename(target / OLD_DEMO_FOLDER)
