"""Command line: `python -m trainer --config run.json` trains a LoRA and writes the event stream."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainer", description="Train a LoRA (kohya-compatible output).")
    ap.add_argument("--config", required=True, type=Path, help="run/preset JSON (flat sd-scripts names)")
    ap.add_argument("--quiet", action="store_true", help="do not print progress lines to stderr")
    args = ap.parse_args(argv)

    from trainer.config import ConfigError
    from trainer.kohya_import import load_any_config

    try:
        data = json.loads(args.config.read_text(encoding="utf-8"))
        cfg, unmapped = load_any_config(data)
    except (OSError, json.JSONDecodeError, ConfigError) as exc:
        print(f"error: cannot read {args.config}: {exc}", file=sys.stderr)
        return 2
    if not cfg.output_dir:
        print("error: output_dir is empty: set the output folder", file=sys.stderr)
        return 2
    # Offline by design: never let a library reach for a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

    from trainer.events import EventWriter, events_path
    from trainer.train import run_training

    with EventWriter(events_path(cfg.output_dir, cfg.output_name), echo=not args.quiet) as events:
        for item in unmapped:
            events.emit("warning", message=f"kohya_ss config: {item}", code="kohya_unmapped", field=None)
        return run_training(cfg, events=events)


if __name__ == "__main__":
    sys.exit(main())
