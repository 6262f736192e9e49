"""CLI of the slider wizard: python -m trainer.tools slider ... (same as python -m trainer.slider ...).

    python -m trainer.tools slider --method copy --pair small_eyes big_eyes --model sd15.safetensors \\
        --prompt "a photo of a woman" --output_dir out --output_name eyes

Flags override the values of --spec FILE, which override the defaults (presets/sd15_slider_pair.json's).
Exit status: 0 completed or stopped, 1 failed (an `error` line on stderr and in the event stream),
2 bad usage or an unreadable spec.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from trainer.cli import CommandLineError, add_debug_flag, describe_os_error, read_json_object, run_guarded
from trainer.params import add_arguments
from trainer.slider.spec import RESIZE_METHODS, SliderPair, SliderSpec, SliderSpecError

PROG = "python -m trainer.tools slider"


# Spec fields with flags of their own (added by hand below); every other field is `--<field>`.
CUSTOM_FLAGS = ("pairs", "train_args", "resize", "resize_method", "resize_param", "preview_prompts")
SECTION_TITLES = {"data": None, "training": "training (defaults: presets/sd15_slider_pair.json)",
                  "merge": "merge, resize, save", "paired": "paired method", "preview": "preview grid"}
SIMPLE_FLAGS = tuple(f.name for f in dataclasses.fields(SliderSpec) if f.name not in CUSTOM_FLAGS)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The flags of every spec field (generated from SliderSpec), grouped by section, and the custom ones."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", type=Path, help="slider spec JSON (flags given here override it)")
    sections = {f.name: f.metadata["section"] for f in dataclasses.fields(SliderSpec)}
    for section, title in SECTION_TITLES.items():
        group = p if title is None else p.add_argument_group(title)
        add_arguments(group, SliderSpec, [n for n in SIMPLE_FLAGS if sections[n] == section], given_only=True)
        CUSTOM_ARGUMENTS.get(section, lambda _: None)(group)
    p.add_argument("--dry_run", action="store_true", help="check the spec, print it and its stages, train nothing")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    add_debug_flag(p)
    return p


def _pair_arguments(group: Any) -> None:
    group.add_argument("--pair", nargs=2, action="append", metavar=("LOW_DIR", "HIGH_DIR"),
                       help="a folder of low (A, slider -1) and one of high (B, slider +1) images; repeatable")
    group.add_argument("--pair_name", action="append", metavar="NAME",
                       help="names of the --pair folders in order (e.g. front 45deg side); default pair1, pair2, ...")


def _train_arg_argument(group: Any) -> None:
    group.add_argument("--train_arg", action="append", metavar="KEY=JSON",
                       help="any other TrainConfig parameter, e.g. mixed_precision=bf16 or cache_latents=false; "
                            "repeatable")


def _resize_argument(group: Any) -> None:
    group.add_argument("--resize", metavar="off|fixed|METHOD:PARAM",
                       help=f"resize at the end: off, fixed (to --resize_rank) or a dynamic method "
                            f"({', '.join(RESIZE_METHODS)}) with its parameter (default: sv_fro:0.75 for copy, off "
                            f"for paired)")


def _preview_prompt_argument(group: Any) -> None:
    group.add_argument("--preview_prompt", action="append", metavar="PROMPT",
                       help="a row prompt (kohya --n/--d options work); repeatable; default: --prompt")


CUSTOM_ARGUMENTS = {"data": _pair_arguments, "training": _train_arg_argument, "merge": _resize_argument,
                    "preview": _preview_prompt_argument}


def spec_from_args(args: argparse.Namespace) -> SliderSpec:
    """The spec file (if any) with the flags given on top. Raises SliderSpecError or ValueError."""
    spec = SliderSpec.load(args.spec) if args.spec else SliderSpec()
    values: dict[str, Any] = {k: getattr(args, k) for k in SIMPLE_FLAGS if getattr(args, k) is not None}
    if args.pair:
        names = args.pair_name or []
        if len(names) > len(args.pair):
            raise ValueError(f"{len(names)} --pair_name values for {len(args.pair)} --pair folders")
        values["pairs"] = [SliderPair(low, high, names[i] if i < len(names) else "")
                           for i, (low, high) in enumerate(args.pair)]
    elif args.pair_name:
        raise ValueError("--pair_name needs --pair")
    if args.preview_prompt:
        values["preview_prompts"] = args.preview_prompt
    if args.train_arg:
        values["train_args"] = {**spec.train_args, **parse_train_args(args.train_arg)}
    if args.resize is not None:
        values.update(parse_resize(args.resize))
    return spec.update(values)


def parse_train_args(items: Sequence[str]) -> dict[str, Any]:
    """KEY=VALUE with VALUE as JSON (true, 0.5, "bf16"); a VALUE that is not JSON is taken as text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--train_arg {item!r} is not KEY=VALUE")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def parse_resize(text: str) -> dict[str, Any]:
    """off | fixed | METHOD:PARAM -> the spec's resize fields."""
    text = text.strip().lower()
    if text in ("off", "none", "no", "false"):
        return {"resize": False}
    if text == "fixed":
        return {"resize": True, "resize_method": None, "resize_param": None}
    if text in ("on", "yes", "true"):
        return {"resize": True}
    method, sep, param = text.partition(":")
    if method not in RESIZE_METHODS or not sep:
        raise ValueError(f"--resize {text!r}: give off, fixed, or METHOD:PARAM with METHOD one of "
                         f"{', '.join(RESIZE_METHODS)} (e.g. sv_fro:0.75)")
    try:
        value = float(param)
    except ValueError:
        raise ValueError(f"--resize {text!r}: {param!r} is not a number") from None
    return {"resize": True, "resize_method": method, "resize_param": value}


def main(argv: Optional[Sequence[str]] = None, *, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    return run_guarded(lambda: _run(args), debug=args.debug)


def _run(args: argparse.Namespace) -> int:
    if args.spec:
        read_json_object(args.spec, what="slider spec")  # an unreadable file is named, whatever is wrong with it
    try:
        spec = spec_from_args(args)
    except (SliderSpecError, ValueError) as exc:
        raise CommandLineError(str(exc), 2) from None
    if args.dry_run:
        return dry_run(spec)
    if not spec.output_dir:
        raise CommandLineError("--output_dir is required", 2)
    _check_output_path(spec)
    # Offline by design, as the engine: never let a library reach for a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

    from trainer.events import EventWriter
    from trainer.slider.run import run_slider

    files = spec.files()
    try:
        writer = EventWriter(files.events, echo=not args.quiet, echo_errors=True)
    except OSError as exc:
        raise CommandLineError(f"cannot write the event file {describe_os_error(exc, str(files.events))}", 2) from None
    with writer as events:
        result = run_slider(spec, events=events)
    if result.status == "failed":
        print(f"error: {result.message}", file=sys.stderr)
    else:
        print(f"{result.status}: {result.message}")
    return result.exit_code


def _check_output_path(spec: SliderSpec) -> None:
    """Nothing is written before the output folder and name are known to be safe (the engine's own rules)."""
    from trainer.config import TrainConfig
    from trainer.validation import output_path_issues

    issues = output_path_issues(TrainConfig(output_dir=spec.output_dir, output_name=spec.output_name))
    if issues:
        raise CommandLineError("\n  ".join(f"[{i.code}] {i.field}: {i.message}" for i in issues), 2)


def dry_run(spec: SliderSpec) -> int:
    from trainer.slider.checks import errors_of, validate_spec
    from trainer.slider.stages import plan_stages

    issues = validate_spec(spec)
    print(spec.to_json())
    for i, stage in enumerate(plan_stages(spec), start=1):
        print(f"stage {i}: {stage.name}" + (f" ({stage.steps} steps)" if stage.steps else ""))
    for issue in issues:
        hint = f" (hint: {issue.hint})" if issue.hint else ""
        print(f"{issue.level}: [{issue.field}] {issue.message}{hint}", file=sys.stderr)
    return 1 if errors_of(issues) else 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m trainer.slider"))
