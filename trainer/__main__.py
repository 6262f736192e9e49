"""Command line: `python -m trainer --config run.json` trains a LoRA and writes the event stream.

Exit status: 0 completed or stopped, 1 failed (an `error` event says why), 2 a config file or an output
folder/name that cannot be used (the message is on stderr; nothing has been written).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from trainer.cli import CommandLineError, add_debug_flag, describe_os_error, read_json_object, run_guarded


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainer", description="Train a LoRA (kohya-compatible output).")
    ap.add_argument("--config", required=True, type=Path, help="run/preset JSON (flat sd-scripts names)")
    ap.add_argument("--quiet", action="store_true", help="do not print progress lines to stderr")
    add_debug_flag(ap)
    args = ap.parse_args(argv)
    return run_guarded(lambda: _train(args), debug=args.debug)


def _train(args: argparse.Namespace) -> int:
    from trainer.config import ConfigError
    from trainer.kohya_import import load_any_config

    data = read_json_object(args.config, what="config")
    try:
        cfg, unmapped = load_any_config(data)
    except ConfigError as exc:
        raise CommandLineError(f"cannot use {args.config}: {exc}", 2) from None
    _check_output_path(cfg)
    # Offline by design: never let a library reach for a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

    from trainer.distributed import needs_launcher, run_launcher

    if needs_launcher(cfg):  # one engine process per GPU (or CPU process), started by accelerate
        return run_launcher(cfg, args.config, ("--quiet",) if args.quiet else ())

    from trainer.events import EventWriter, events_path
    from trainer.train import run_training

    # Of several processes only the main one (rank 0) writes the stream; the others echo their errors.
    main = os.environ.get("RANK", "0") == "0"
    path = events_path(cfg.output_dir, cfg.output_name)
    try:
        events = EventWriter(path if main else None, echo=not args.quiet and main, echo_errors=True)
    except OSError as exc:
        raise CommandLineError(f"cannot write the event file {describe_os_error(exc, str(path))}", 2) from None
    with events:
        for item in unmapped:
            events.emit("warning", message=f"kohya_ss config: {item}", code="kohya_unmapped", field=None)
        return run_training(cfg, events=events)


def _check_output_path(cfg) -> None:
    """Nothing is written (not even the event file) before the output folder and name are known to be
    safe: a name like '../../x' would otherwise put files outside the output folder."""
    from trainer.validation import output_path_issues

    issues = output_path_issues(cfg)
    if issues:
        lines = [f"[{i.code}] {i.field}: {i.message}" for i in issues]
        raise CommandLineError("\n  ".join(lines), 2)


if __name__ == "__main__":
    sys.exit(main())
