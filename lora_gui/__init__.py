"""lora_gui: the web front end of the LoRA trainer (Gradio, no torch).

The web process only reads and writes configs, starts the engine as a subprocess
(`python -m trainer --config run.json`) and renders the engine's event stream.
"""

from __future__ import annotations

from pathlib import Path

APP_DIR = Path(__file__).resolve().parent.parent
__version__ = "0.1.0"
