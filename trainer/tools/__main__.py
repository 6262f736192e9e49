"""CLI: python -m trainer.tools <inspect|merge|svd_merge|resize|extract|slider> [options]

Flag names follow sd-scripts (networks/resize_lora.py, svd_merge_lora.py, merge_lora.py,
extract_lora_from_models.py, check_lora_weights.py) so kohya users can reuse their commands.
Exit status: 0 done, 1 a problem with the inputs/outputs (message on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from trainer.cli import CommandLineError, add_debug_flag, run_guarded
from trainer.fileio import OutputExistsError
from trainer.params import add_arguments
from trainer.tools.errors import ToolError
from trainer.tools.options import TOOL_HELP, TOOL_OPTIONS

def build_parser() -> argparse.ArgumentParser:
    """One sub-command per tool, its flags generated from trainer.tools.options."""
    parser = argparse.ArgumentParser(prog="python -m trainer.tools", description="LoRA toolbox (kohya format)")
    add_debug_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    for tool, groups in TOOL_OPTIONS.items():
        tool_parser = sub.add_parser(tool, help=TOOL_HELP[tool])
        for group in groups:
            add_arguments(tool_parser, group)
        add_debug_flag(tool_parser, in_subcommand=True)
    # Delegated to trainer.slider before parsing (see main); listed here for --help.
    sub.add_parser("slider", help="slider LoRA wizard: train, merge, resize, preview (slider --help)", add_help=False)
    return parser


_PROGRESS_LINES = False  # --progress_lines: one machine-readable line per update instead of a TTY counter


def _print_progress(done: int, total: int) -> None:
    if _PROGRESS_LINES:
        print(f"PROGRESS {done}/{total}", file=sys.stderr, flush=True)
    elif sys.stderr.isatty():
        print(f"\r{done}/{total} modules", end="" if done < total else "\n", file=sys.stderr, flush=True)


def _finish(report, args) -> None:
    print(report.format_text(verbose=getattr(args, "verbose", False)))
    if args.json:
        from trainer.fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps(report.to_dict(), indent=1))


def run(args: argparse.Namespace) -> None:
    global _PROGRESS_LINES
    _PROGRESS_LINES = bool(getattr(args, "progress_lines", False))
    # Imported here so `--help` stays fast and usage errors need no torch.
    if args.command == "inspect":
        from trainer.tools.inspect_lora import inspect_file

        report = inspect_file(args.model)
        if args.json:
            print(json.dumps(report.to_dict(), indent=1))
        else:
            print(report.format_text(modules=not args.summary, full_metadata=args.full_metadata))
    elif args.command == "merge":
        if args.sd_model:
            from trainer.tools.merge_checkpoint import merge_into_model_file

            _finish(merge_into_model_file(args.sd_model, args.models, args.ratios, args.save_to, v2=args.v2,
                                          v_parameterization=args.v_parameterization,
                                          save_precision=args.save_precision, overwrite=args.overwrite,
                                          save_as=args.save_as), args)
            return
        from trainer.tools.merge import merge_files

        _finish(merge_files(args.models, args.ratios, args.save_to, save_precision=args.save_precision,
                            overwrite=args.overwrite), args)
    elif args.command == "svd_merge":
        from trainer.tools.merge import svd_merge_files

        _finish(svd_merge_files(args.models, args.ratios, args.save_to, args.new_rank,
                                new_conv_rank=args.new_conv_rank, clamp_quantile=args.clamp_quantile,
                                save_precision=args.save_precision, device=args.device,
                                overwrite=args.overwrite, progress=_print_progress), args)
    elif args.command == "resize":
        from trainer.tools.resize import resize_file

        _finish(resize_file(args.model, args.save_to, args.new_rank, new_conv_rank=args.new_conv_rank,
                            dynamic_method=args.dynamic_method, dynamic_param=args.dynamic_param,
                            save_precision=args.save_precision, device=args.device,
                            overwrite=args.overwrite, progress=_print_progress), args)
    elif args.command == "extract":
        from trainer.tools.extract import extract_files

        _finish(extract_files(args.model_org, args.model_tuned, args.save_to, args.dim, conv_dim=args.conv_dim,
                              clamp_quantile=args.clamp_quantile, min_diff=args.min_diff,
                              save_precision=args.save_precision, device=args.device, exact_svd=args.exact_svd,
                              v2=args.v2, v_parameterization=args.v_parameterization, sdxl=args.sdxl,
                              overwrite=args.overwrite,
                              progress=_print_progress), args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["slider"]:
        from trainer.slider.__main__ import main as slider_main

        return slider_main(argv[1:])
    args = build_parser().parse_args(argv)
    from trainer.families import stay_offline

    stay_offline()
    return run_guarded(lambda: _run_reporting_problems(args), debug=args.debug)


def _run_reporting_problems(args: argparse.Namespace) -> int:
    if getattr(args, "save_to", None):
        from trainer.fileio import remove_stale_temp_files

        removed = remove_stale_temp_files(Path(args.save_to).expanduser().absolute().parent)
        if removed:
            print(f"removed {len(removed)} temporary file(s) an interrupted run left: "
                  f"{', '.join(p.name for p in removed)}", file=sys.stderr)
    try:
        run(args)
    except (ToolError, OutputExistsError) as exc:
        raise CommandLineError(str(exc), 1) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
