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
from trainer.tools.errors import ToolError

PRECISIONS = ("float", "fp16", "bf16")


def _common(p: argparse.ArgumentParser, *, output: bool = True) -> None:
    p.add_argument("--device", default=None, help="device for the math, e.g. cuda (default: cpu)")
    if output:
        p.add_argument("--save_to", required=True, help="output LoRA (.safetensors, or .ckpt/.pt/.pth)")
        p.add_argument("--save_precision", default="float", choices=PRECISIONS, help="dtype of the saved tensors")
        p.add_argument("--overwrite", action="store_true", help="replace --save_to if it exists (never an input)")
        p.add_argument("--json", metavar="FILE", default=None, help="also write the report as JSON to FILE")
        p.add_argument("--progress_lines", action="store_true",
                       help="print 'PROGRESS done/total' lines on stderr (for programs, e.g. the GUI)")


def _ratios(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", required=True, help="LoRA files to merge")
    p.add_argument("--ratios", nargs="+", type=float, required=True, help="one ratio per model (may be negative)")
    p.add_argument("--precision", default=None, help="accepted for sd-scripts compatibility; math is always ≥ fp32")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.tools", description="LoRA toolbox (kohya format)")
    add_debug_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="metadata, ranks, alphas, norms, problems of a LoRA file")
    p.add_argument("--model", required=True)
    p.add_argument("--summary", action="store_true", help="no per-module table")
    p.add_argument("--full_metadata", action="store_true", help="do not shorten long metadata values")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of text")

    p = sub.add_parser("merge", help="exact merge: ΔW = Σ ratio·ΔW (ranks concatenate)")
    _ratios(p)
    p.add_argument("--concat", action="store_true", help="accepted; merges always concatenate (exact)")
    p.add_argument("--shuffle", action="store_true", help="accepted; channel order does not change ΔW")
    p.add_argument("--sd_model", default=None, help="merge into this base model; --save_to is then a checkpoint")
    p.add_argument("--v2", action="store_true", help="with --sd_model: the base is SD2 (detected from the files too)")
    p.add_argument("--v_parameterization", action="store_true", help="with --sd_model: v-prediction base")
    p.add_argument("--save_as", choices=("single_file", "diffusers"), default="single_file",
                   help="with --sd_model: write one .safetensors/.ckpt file, or a diffusers folder at --save_to")
    _common(p)

    p = sub.add_parser("svd_merge", help="merge, then re-factorise to a fixed rank by SVD")
    _ratios(p)
    p.add_argument("--new_rank", type=int, default=4)
    p.add_argument("--new_conv_rank", type=int, default=None, help="rank of 3×3 convs (default: new_rank)")
    p.add_argument("--clamp_quantile", type=float, default=0.99, help="sd-scripts' outlier clamp; 1 disables it")
    p.add_argument("--verbose", action="store_true", help="per-module report")
    _common(p)

    p = sub.add_parser("resize", help="reduce the rank (fixed or dynamic per module)")
    p.add_argument("--model", required=True)
    p.add_argument("--new_rank", type=int, default=4, help="rank (the cap in dynamic modes)")
    p.add_argument("--new_conv_rank", type=int, default=None, help="rank of 3×3 convs (default: new_rank)")
    p.add_argument("--dynamic_method", choices=("sv_ratio", "sv_fro", "sv_cumulative"), default=None)
    p.add_argument("--dynamic_param", type=float, default=None)
    p.add_argument("--verbose", action="store_true", help="per-module report")
    _common(p)

    p = sub.add_parser("extract", help="LoRA from the difference of two models")
    p.add_argument("--model_org", required=True, help="original model: diffusers folder, .safetensors/.ckpt, "
                   "or a module-weights file")
    p.add_argument("--model_tuned", required=True, help="fine-tuned model (same kinds)")
    p.add_argument("--dim", type=int, default=4)
    p.add_argument("--conv_dim", type=int, default=None, help="rank of 3×3 convs (default: convs not extracted)")
    p.add_argument("--clamp_quantile", type=float, default=0.99)
    p.add_argument("--min_diff", type=float, default=0.01, help="text encoder kept only if it changed more")
    p.add_argument("--exact_svd", action="store_true", help="full SVD instead of the randomised top-k one")
    p.add_argument("--v2", action="store_true", help="metadata: SD2 base")
    p.add_argument("--v_parameterization", action="store_true", help="metadata: v-prediction base")
    p.add_argument("--sdxl", action="store_true", help="metadata: SDXL base")
    p.add_argument("--load_precision", default=None, help="accepted for sd-scripts compatibility")
    p.add_argument("--verbose", action="store_true", help="per-module report")
    _common(p)

    for tool_parser in sub.choices.values():
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
