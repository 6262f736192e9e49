"""Merge LoRAs into a base checkpoint (sd-scripts' merge_lora.py with --sd_model).

For every LoRA module that names a target layer of the model: W ← W + ratio · scale · ΔW (in fp32;
3×3 convs as ΔW[o,i,:,:] = Σ_r up[o,r]·down[r,i,:,:]). A LoRA module whose shape does not fit its
layer is an error (wrong base model); modules that name no layer are reported.
"""

from __future__ import annotations

import os
import time
from typing import Optional, Sequence

import torch

from trainer.network.kohya_format import LoraFile
from trainer.tools import metadata as md
from trainer.tools.errors import ToolError
from trainer.tools.files import check_output_folder, check_output_path, normalize_precision, read_lora
from trainer.tools.models import LoadedModel, load_base_model, lora_layers, save_model, save_model_folder
from trainer.tools.report import ToolReport


def merge_into_model(
    model: LoadedModel,
    loras: Sequence[LoraFile],
    ratios: Sequence[float],
    *,
    titles: Optional[Sequence[str]] = None,
) -> ToolReport:
    """Add Σ ratio_m · ΔW_m into the model's layers in place; returns what was applied."""
    if len(loras) != len(ratios) or not loras:
        raise ToolError(f"{len(loras)} models but {len(ratios)} ratios", hint="give one --ratios value per model")
    titles = list(titles) if titles else [f"model{i + 1}" for i in range(len(loras))]
    layers = lora_layers(model, conv=True)
    report = ToolReport(command="merge", settings={"sd_model": model.path, "models": titles, "ratios": list(ratios)})
    for lora, ratio, title in zip(loras, ratios, titles):
        applied, unmatched = 0, []
        for name, module in lora.modules.items():
            layer = layers.get(name)
            if layer is None:
                unmatched.append(name)
                continue
            weight = layer.weight
            delta = module.delta_weight(float(ratio))
            if delta.shape != weight.shape:
                # A Linear layer in one model is a 1×1 conv in another (SD1 vs SD2 proj_in): same numbers.
                if delta.numel() != weight.numel():
                    raise ToolError(
                        f"{title}: {name} has ΔW {tuple(delta.shape)} but the model's layer is {tuple(weight.shape)}",
                        hint="the LoRA was trained on a different base model family",
                    )
                delta = delta.reshape(weight.shape)
            with torch.no_grad():
                weight.add_(delta.to(weight.device, weight.dtype))
            applied += 1
        if applied == 0:
            raise ToolError(f"{title}: none of its {len(lora.modules)} modules matches a layer of {model.path}")
        report.info.append(f"{title} × {ratio:g}: {applied} modules merged into the model")
        if unmatched:
            report.warnings.append(
                f"{title}: {len(unmatched)} modules name no layer of this model and were ignored (e.g. {unmatched[0]})"
            )
    return report


def merge_into_model_file(
    sd_model: str | os.PathLike,
    models: Sequence[str | os.PathLike],
    ratios: Sequence[float],
    save_to: str | os.PathLike,
    *,
    v2: bool = False,
    v_parameterization: bool = False,
    save_precision: str = "float",
    overwrite: bool = False,
    save_as: str = "single_file",
) -> ToolReport:
    """Load `sd_model`, merge the LoRA files into it, write a single-file checkpoint (or, with
    save_as="diffusers", a diffusers folder) to `save_to`."""
    t0 = time.perf_counter()
    precision = normalize_precision(save_precision)
    if save_as == "diffusers":
        out = check_output_folder(save_to, [sd_model, *models])
    else:
        out = check_output_path(save_to, [sd_model, *models], overwrite=overwrite)
        if out.suffix.lower() not in (".safetensors", ".ckpt"):
            raise ToolError(f"--save_to {out}: a merged checkpoint is written as .safetensors or .ckpt")
    loras = [read_lora(p) for p in models]
    titles = [md.title_of(p, lf.metadata) for p, lf in zip(models, loras)]
    model = load_base_model(sd_model, v2=v2, v_parameterization=v_parameterization)
    report = merge_into_model(model, loras, ratios, titles=titles)
    if save_as == "diffusers":
        save_model_folder(model, out, save_precision=precision)
    else:
        save_model(model, out, save_precision=precision)
    report.output, report.elapsed_s = str(out), time.perf_counter() - t0
    report.settings["save_precision"] = precision
    return report

