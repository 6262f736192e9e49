"""Pre-flight rules of the shapes and ranges trained: timesteps, resolution, buckets, batch size."""

from __future__ import annotations

from typing import Iterator

from trainer.config import parse_resolution
from trainer.families.traits import SD1
from trainer.findings import Finding
from trainer.preflight.registry import ERROR, WARNING, Context, issue, rule


@rule("timestep_range_empty")
def timesteps(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    if cfg.max_timestep <= cfg.min_timestep:
        yield issue("max_timestep", ERROR, "timestep_range_empty",
                    f"Max timestep ({cfg.max_timestep}) must be above min timestep ({cfg.min_timestep}). "
                    "The defaults are 0 and 1000.", min_timestep=cfg.min_timestep, max_timestep=cfg.max_timestep)


@rule("resolution_invalid", "resolution_not_multiple_of_8", "bucket_steps_not_multiple_of_8",
       "bucket_steps_not_64", "bucket_reso_order", "max_bucket_below_resolution")
def resolution_and_buckets(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    try:
        width, height = parse_resolution(cfg.resolution)
    except ValueError as exc:
        yield issue("resolution", ERROR, "resolution_invalid",
                    f"The resolution {cfg.resolution!r} is not valid ({exc}). Write one size such as 512, or "
                    "width,height such as 512,768.", value=cfg.resolution)
        return
    if not cfg.enable_bucket:
        if width % 8 or height % 8:
            yield issue("resolution", ERROR, "resolution_not_multiple_of_8",
                        f"Without buckets every image is trained at {width}x{height}, which must be a multiple of 8 "
                        "on both sides. Use e.g. 512 or 512,768.", width=width, height=height)
        return
    steps, family = cfg.bucket_reso_steps, ctx.traits or SD1  # an unknown family is checked as SD 1.x/2.x
    if steps % 8:
        yield issue("bucket_reso_steps", ERROR, "bucket_steps_not_multiple_of_8",
                    f"Bucket resolution steps {steps} is not a multiple of 8, but the VAE needs sides that are. "
                    "Use 64 (or 32, 16, 8).", steps=steps)
    elif steps % family.bucket_reso_steps and not steps % family.bucket_step_multiple:  # else family_issues' error
        yield issue("bucket_reso_steps", WARNING, "bucket_steps_not_64",
                    f"Bucket resolution steps {steps} is not a multiple of 64. SD 1.x/2.x work best with sides that "
                    "are multiples of 64 (sd-scripts requires it); 64 is the usual value.", steps=steps)
    if cfg.bucket_no_upscale:
        return
    if cfg.min_bucket_reso > cfg.max_bucket_reso:
        yield issue("min_bucket_reso", ERROR, "bucket_reso_order",
                    f"Minimum bucket resolution {cfg.min_bucket_reso} is above the maximum {cfg.max_bucket_reso}. "
                    "Swap or correct them.", min_reso=cfg.min_bucket_reso, max_reso=cfg.max_bucket_reso)
    elif cfg.max_bucket_reso < max(width, height):
        yield issue("max_bucket_reso", ERROR, "max_bucket_below_resolution",
                    f"Maximum bucket resolution {cfg.max_bucket_reso} is below the training resolution "
                    f"{width}x{height}. Set it to at least {max(width, height)}.",
                    max_reso=cfg.max_bucket_reso, resolution=max(width, height))


@rule("batch_larger_than_bucket")
def batch_vs_buckets(ctx: Context) -> Iterator[Finding]:
    plan, batch = ctx.plan, ctx.cfg.train_batch_size
    small = [row for row in (plan.buckets if plan else []) if row.count < batch]
    if not small:
        return
    names = ", ".join(f"{r.resolution[0]}x{r.resolution[1]} ({r.count})" for r in small)
    yield issue("train_batch_size", WARNING, "batch_larger_than_bucket",
                f"The batch size {batch} is larger than the number of images (x repeats) in bucket(s) {names}; "
                "a batch never mixes buckets, so those batches are smaller. Lower the batch size, or add images "
                "of those shapes.", batch_size=batch,
                buckets=[{"width": r.resolution[0], "height": r.resolution[1], "count": r.count} for r in small])
