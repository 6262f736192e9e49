"""Pre-flight rules of precision and attention, which depend on the GPU found."""

from __future__ import annotations

from typing import Iterator

from trainer.findings import Finding
from trainer.machine import xformers_installed
from trainer.preflight.registry import ERROR, WARNING, Context, issue, rule


@rule("full_fp16_and_bf16", "full_fp16_needs_fp16", "full_bf16_needs_bf16", "precision_cpu")
def precision(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    if cfg.full_fp16 and cfg.full_bf16:
        yield issue("full_fp16", ERROR, "full_fp16_and_bf16",
                    "Full fp16 and full bf16 training are both on. Turn one of them off.")
    else:
        if cfg.full_fp16 and cfg.mixed_precision != "fp16":
            yield issue("full_fp16", ERROR, "full_fp16_needs_fp16",
                        f"Full fp16 training needs mixed precision fp16 (it is {cfg.mixed_precision}). "
                        "Set mixed precision to fp16, or turn full fp16 off.", mixed_precision=cfg.mixed_precision)
        if cfg.full_bf16 and cfg.mixed_precision != "bf16":
            yield issue("full_bf16", ERROR, "full_bf16_needs_bf16",
                        f"Full bf16 training needs mixed precision bf16 (it is {cfg.mixed_precision}). "
                        "Set mixed precision to bf16, or turn full bf16 off.", mixed_precision=cfg.mixed_precision)
    if cfg.mixed_precision != "no" and not ctx.cuda:
        yield issue("mixed_precision", WARNING, "precision_cpu",
                    f"Mixed precision {cfg.mixed_precision} needs a CUDA GPU, and none was found: training runs in "
                    "fp32 on the CPU. Set mixed precision to 'no' to silence this.", mixed_precision=cfg.mixed_precision)


@rule("xformers_without_cuda", "xformers_missing")
def attention(ctx: Context) -> Iterator[Finding]:
    if not ctx.cfg.xformers:
        return
    if not ctx.cuda:
        yield issue("xformers", ERROR, "xformers_without_cuda",
                    "xformers attention needs a CUDA GPU, and none was found. Turn xformers off "
                    "(SDPA attention works everywhere).")
    elif not xformers_installed():
        yield issue("xformers", ERROR, "xformers_missing",
                    "xformers attention is on, but the xformers package is not installed. Install it, or turn "
                    "xformers off (SDPA attention works without it).")


@rule("fp8_base_without_checkpointing")
def fp8_memory(ctx: Context) -> Iterator[Finding]:
    if ctx.cfg.fp8_base and not ctx.cfg.gradient_checkpointing:
        yield issue("fp8_base", WARNING, "fp8_base_without_checkpointing",
                    "fp8 base saves memory only with gradient checkpointing: without it every layer's up-cast "
                    "copy is kept for the backward pass, which needs more memory than no fp8 at all. Turn on "
                    "gradient checkpointing, or fp8 base off.")
