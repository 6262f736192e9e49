"""Inspect a LoRA file: metadata, per-module rank/alpha/dtype/norms, and problems
(all-zero lora_up = an untrained module; NaN or inf values). Like sd-scripts' check_lora_weights.py,
with the numbers a user actually needs to judge a file."""

from __future__ import annotations

import math
import os

import torch

from trainer.network.kohya_format import LoraFile
from trainer.tools.factors import factor_matrices, product_norm, scale_of, shape_of_factors
from trainer.tools.files import read_lora
from trainer.tools.report import InspectReport, ModuleInfo


def inspect_lora(lora: LoraFile, *, path: str | None = None) -> InspectReport:
    modules: list[ModuleInfo] = []
    problems: list[str] = []
    for name, module in lora.modules.items():
        shape = shape_of_factors(name, module.down, module.up)
        down, up = module.down, module.up
        nonfinite = not (bool(torch.isfinite(down).all()) and bool(torch.isfinite(up).all()))
        scale = scale_of(module)
        if not math.isfinite(scale):
            nonfinite = True
        zero_up = not bool(up.any())
        U, D = factor_matrices(down, up, torch.float64)
        delta = float(product_norm(U, D)) * abs(scale) if not nonfinite else math.nan
        rank = int(down.shape[0])
        modules.append(
            ModuleInfo(
                name=name,
                kind=shape.kind,
                out_features=shape.out_features,
                in_features=shape.in_features,
                kernel=list(shape.kernel) if shape.kernel else None,
                rank=rank,
                alpha=scale * rank,
                scale=scale,
                dtype=str(down.dtype).replace("torch.", ""),
                up_norm=float(U.norm()),
                down_norm=float(D.norm()),
                delta_norm=delta,
                up_abs_mean=float(U.abs().mean()),
                down_abs_mean=float(D.abs().mean()),
                zero_up=zero_up,
                nonfinite=nonfinite,
            )
        )
        if nonfinite:
            problems.append(f"{name}: NaN or inf values")
        elif zero_up:
            problems.append(f"{name}: lora_up is all zeros (module was never trained; it changes nothing)")
    if not modules:
        problems.append("the file holds no LoRA modules")
    unknown = list(getattr(lora, "unrecognized_keys", []) or [])
    if unknown:
        problems.append(
            f"{len(unknown)} keys are not kohya LoRA tensors (LoHa/LoKr/DoRA/...?) and are ignored by these tools, "
            f"e.g. {unknown[0]}"
        )
    return InspectReport(path=path, metadata=dict(lora.metadata), modules=modules, problems=problems)


def inspect_file(model: str | os.PathLike) -> InspectReport:
    return inspect_lora(read_lora(model), path=str(model))
