"""Pre-flight rules of the source model: its family's settings, its path, and the optional files."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

from trainer.config import TrainConfig
from trainer.families.traits import known_traits
from trainer.findings import Finding
from trainer.preflight.registry import ERROR, WARNING, Context, issue, rule


def family_issues(cfg: TrainConfig, family: Optional[str], *, cuda: bool = True) -> list[Finding]:
    """The rules that depend on the model family. The engine runs them again once a .ckpt is loaded,
    since validation cannot tell a pickled checkpoint's family."""
    traits = known_traits(family)
    if traits is None:
        return []
    found, name = [], traits.label
    if "clip_skip" in traits.ignored_fields and cfg.clip_skip != 1:
        found.append(issue("clip_skip", WARNING, "clip_skip_ignored",
                           f"Clip skip {cfg.clip_skip} is ignored for {name}: {name} always uses the penultimate "
                           "layers of both text encoders. Set clip skip to 1 to silence this.",
                           clip_skip=cfg.clip_skip))
    steps, multiple = cfg.bucket_reso_steps, traits.bucket_step_multiple
    if cfg.enable_bucket and steps % multiple and not steps % 8:  # not a multiple of 8: resolution rules say so
        found.append(issue("bucket_reso_steps", ERROR, "bucket_steps_not_32",
                           f"Bucket resolution steps {steps} is not a multiple of {multiple}, which the {name} UNet "
                           f"needs (sd-scripts refuses it too). Use {multiple} or {2 * multiple}.", steps=steps))
    if traits.vae_overflows_in_fp16 and cuda and cfg.mixed_precision == "fp16" and not cfg.no_half_vae:
        found.append(issue("no_half_vae", WARNING, "sdxl_vae_fp32",
                           f"The {name} VAE produces NaN (black images) in fp16, so it runs in fp32 although "
                           "'No half VAE' is off. Turn 'No half VAE' on to silence this.",
                           mixed_precision=cfg.mixed_precision))
    return found


@rule("clip_skip_ignored", "bucket_steps_not_32", "sdxl_vae_fp32")
def model_family(ctx: Context) -> Iterator[Finding]:
    yield from family_issues(ctx.cfg, ctx.family, cuda=ctx.cuda)


@rule("model_path_empty", "model_path_invalid")
def model_path(ctx: Context) -> Iterator[Finding]:
    field, path = "pretrained_model_name_or_path", ctx.cfg.pretrained_model_name_or_path.strip()
    if not path:
        yield issue(field, ERROR, "model_path_empty",
                    "No base model chosen. Choose a diffusers folder or a .safetensors/.ckpt file.")
        return
    problem = check_model_path(path)
    if problem:
        yield issue(field, ERROR, "model_path_invalid", problem, path=path)


def check_model_path(path: str) -> Optional[str]:
    """A message when the base model cannot be used, else None (trainer.families.detect knows the families)."""
    from trainer.families.detect import ModelPathError, detect_model

    try:
        detect_model(path)
    except ModelPathError as exc:
        return f"{exc.message} {exc.hint}" if exc.hint else exc.message
    except Exception as exc:  # detection must never crash the form
        return f"Cannot read the model at {path}: {exc}. Check that the file is complete."
    return None


@rule("vae_missing", "network_weights_missing", "resume_missing", "resume_not_folder")
def optional_paths(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    for field, label, code in (("vae", "VAE", "vae_missing"),
                               ("network_weights", "Network weights file", "network_weights_missing"),
                               ("resume", "Saved training state", "resume_missing")):
        value = getattr(cfg, field).strip()
        if value and not Path(value).expanduser().exists():
            yield issue(field, ERROR, code, f"{label} not found: {value}. Check the path, or clear the field.",
                        path=value)
    resume = cfg.resume.strip()
    if resume and Path(resume).expanduser().is_file():
        yield issue("resume", ERROR, "resume_not_folder",
                    f"Saved training state must be a folder (<name>-state), but {resume} is a file.", path=resume)
