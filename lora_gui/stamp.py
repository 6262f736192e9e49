"""Install stamp for the launch scripts: skip `pip install` when requirements.txt has not changed.

    python -m lora_gui.stamp check   # exit 0: installed packages match requirements.txt (+ TORCH_INDEX_URL)
    python -m lora_gui.stamp write   # remember the current requirements after a successful install

Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAMP = ROOT / ".venv" / ".requirements.sha256"


def requirements_hash() -> str:
    data = (ROOT / "requirements.txt").read_bytes() + os.environ.get("TORCH_INDEX_URL", "").encode()
    return hashlib.sha256(data).hexdigest()


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "check"
    if command == "check":
        try:
            return 0 if STAMP.read_text(encoding="utf-8").strip() == requirements_hash() else 1
        except OSError:
            return 1
    if command == "write":
        STAMP.parent.mkdir(parents=True, exist_ok=True)
        STAMP.write_text(requirements_hash() + "\n", encoding="utf-8")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
