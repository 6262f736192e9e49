"""Pre-flight rules of what is trained and how: network rank/alpha, the parts trained, optimizer, scheduler."""

from __future__ import annotations

import difflib
import re
from typing import Iterator, Optional

from trainer.findings import Finding
from trainer.preflight.registry import ERROR, WARNING, Context, issue, rule, trains_text_encoder
from trainer.training.optimizer_args import RESERVED_KEYS, SYNTAX_HINT, optimizer_signature, syntax_problems


@rule("alpha_above_rank", "conv_alpha_above_rank")
def alpha_vs_rank(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    if cfg.network_alpha > cfg.network_dim:
        yield issue("network_alpha", WARNING, "alpha_above_rank",
                    f"Network alpha {cfg.network_alpha:g} is above the rank {cfg.network_dim}: updates are scaled "
                    f"by alpha/rank = {cfg.network_alpha / cfg.network_dim:.3g}, which often makes training unstable. "
                    "Use an alpha no larger than the rank (1 or rank/2 are common).",
                    alpha=cfg.network_alpha, rank=cfg.network_dim)
    if cfg.uses_conv_lora() and cfg.conv_alpha > cfg.conv_dim:
        yield issue("conv_alpha", WARNING, "conv_alpha_above_rank",
                    f"Convolution alpha {cfg.conv_alpha:g} is above the convolution rank {cfg.conv_dim}: updates "
                    f"are scaled by {cfg.conv_alpha / cfg.conv_dim:.3g}. Use a convolution alpha no larger than "
                    "its rank.", alpha=cfg.conv_alpha, rank=cfg.conv_dim)


@rule("train_only_conflict", "nothing_to_train")
def what_is_trained(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    if cfg.network_train_unet_only and cfg.network_train_text_encoder_only:
        yield issue("network_train_unet_only", ERROR, "train_only_conflict",
                    "'Train UNet only' and 'Train text encoder only' are both on, so nothing would be trained. "
                    "Turn one of them off.")
        return
    if cfg.effective_unet_lr() == 0 and not trains_text_encoder(cfg, ctx.family):
        yield issue("unet_lr", ERROR, "nothing_to_train",
                    "Both the UNet and the text-encoder learning rates are 0, so nothing would be trained. "
                    "Set a learning rate above 0 for at least one of them.")


@rule("optimizer_args_syntax", "optimizer_args_reserved_key", "optimizer_args_unknown_key",
       "optimizer_args_unchecked_key")
def optimizer_arguments(ctx: Context) -> Iterator[Finding]:
    """key=value syntax, and keys the optimizer's constructor does not name (types and values: the engine)."""
    cfg, field = ctx.cfg, "optimizer_args"
    problems = syntax_problems(cfg.optimizer_args)
    for item, message in problems:
        yield issue(field, ERROR, "optimizer_args_syntax", f"Optimizer arguments: {message}. {SYNTAX_HINT}.",
                    item=item)
    if problems:
        return
    keys = [item.partition("=")[0] for item in cfg.optimizer_args.split()]
    for key in (k for k in keys if k in RESERVED_KEYS):
        yield issue(field, ERROR, "optimizer_args_reserved_key",
                    f"Optimizer arguments: {key} is set by the learning-rate fields, not here. Remove {key}=... "
                    "and set the learning rate (and the UNet / text-encoder learning rates) instead.", key=key)
    signature = optimizer_signature(cfg.optimizer_type)
    for key in (k for k in keys if signature and k not in signature.keys and k not in RESERVED_KEYS):
        close = difflib.get_close_matches(key, signature.keys, n=1)
        guess = f" Did you mean {close[0]}?" if close else ""
        names = ", ".join(signature.keys)
        if signature.takes_any:
            yield issue(field, WARNING, "optimizer_args_unchecked_key",
                        f"Optimizer arguments: {key} is not one of the arguments {cfg.optimizer_type} names ({names}); "
                        f"it accepts other names without checking them, so a misspelt one is ignored.{guess}",
                        key=key, optimizer=cfg.optimizer_type, keys=names)
        else:
            yield issue(field, ERROR, "optimizer_args_unknown_key",
                        f"Optimizer arguments: {cfg.optimizer_type} has no argument {key}.{guess} Its arguments are: "
                        f"{names}.", key=key, optimizer=cfg.optimizer_type, keys=names)


def _optimizer_flag(args: str, key: str) -> Optional[bool]:
    """The boolean value of `key=...` in the optimizer arguments, None when absent."""
    m = re.search(rf"(?:^|[\s,]){re.escape(key)}\s*=\s*(\S+)", args)
    if not m:
        return None
    return m.group(1).strip(",").lower() in ("true", "1", "yes")


@rule("warmup_with_constant", "scheduler_needs_adafactor", "adafactor_relative_step", "warmup_ignored",
       "warmup_exceeds_total")
def scheduler_and_warmup(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    warmup = cfg.lr_warmup_steps
    if cfg.lr_scheduler == "constant" and warmup > 0:
        yield issue("lr_warmup_steps", ERROR, "warmup_with_constant",
                    "The constant scheduler has no warmup. Choose constant_with_warmup, or set LR warmup steps to 0.",
                    warmup=warmup)
    adafactor = cfg.optimizer_type == "Adafactor"
    if cfg.lr_scheduler == "adafactor" and not adafactor:
        yield issue("lr_scheduler", ERROR, "scheduler_needs_adafactor",
                    f"The adafactor scheduler works only with the Adafactor optimizer, not {cfg.optimizer_type}. "
                    "Choose another scheduler, or the Adafactor optimizer.", optimizer=cfg.optimizer_type)
    if adafactor and _optimizer_flag(cfg.optimizer_args, "relative_step") and cfg.lr_scheduler != "adafactor":
        yield issue("lr_scheduler", ERROR, "adafactor_relative_step",
                    "Adafactor with relative_step=True chooses its own step size, so it needs the adafactor "
                    f"scheduler, not {cfg.lr_scheduler}. Choose the adafactor scheduler, or remove relative_step=True.",
                    scheduler=cfg.lr_scheduler)
    if cfg.lr_scheduler == "adafactor" and adafactor and warmup > 0:
        yield issue("lr_warmup_steps", WARNING, "warmup_ignored",
                    "The adafactor scheduler ignores LR warmup steps. Set them to 0, or use relative_step with "
                    "warmup_init=True in the optimizer arguments.", warmup=warmup)
    plan = ctx.plan
    if plan is not None and plan.total_steps and warmup > 0:
        steps = int(warmup * plan.total_steps) if warmup < 1 else int(warmup)
        if steps >= plan.total_steps:
            yield issue("lr_warmup_steps", WARNING, "warmup_exceeds_total",
                        f"The warmup ({steps} steps) is not shorter than the whole run ({plan.total_steps} steps), "
                        "so the learning rate never reaches its set value. Lower the warmup.",
                        warmup_steps=steps, total_steps=plan.total_steps)
