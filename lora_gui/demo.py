"""The CPU demo: a tiny model and a few images, created on first start (by the engine, in a subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lora_gui import APP_DIR

DEMO_DIR = APP_DIR / "demo"


def demo_ready(root: Path = DEMO_DIR) -> bool:
    return (root / "tiny-sd1" / "model_index.json").is_file() and (root / "img").is_dir()


def ensure_demo(root: Path = DEMO_DIR, timeout: float = 900) -> tuple[bool, str]:
    """Create demo/tiny-sd1 and demo/img when missing. Returns (ok, message for the console)."""
    if demo_ready(root):
        return True, ""
    cmd = [sys.executable, "-m", "trainer.tiny", "--demo", str(root)]
    try:
        proc = subprocess.run(cmd, cwd=str(APP_DIR), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"could not create the demo model: {exc}"
    if proc.returncode != 0 or not demo_ready(root):
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-5:])
        return False, f"could not create the demo model (exit code {proc.returncode}):\n{tail}"
    return True, "demo model and images created in " + str(root)
