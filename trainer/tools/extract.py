"""Extract a LoRA from the difference of two models' layer weights.

The core (`extract_lora`) takes two dicts {kohya module name (no suffix): weight tensor}. Turning a
real checkpoint into such a dict (which layers are LoRA targets, their kohya names) is the
model-loading code's job (trainer/families + trainer/network/targets, wrapped by tools/models.py);
`extract_files` accepts full models or "module-weights" files that already hold such a dict
(safetensors, keys "<kohya module name>.weight").

Per module (sd-scripts' algorithm): ΔW = W_tuned − W_org as an [out, in·kh·kw] matrix, rank
k = min(dim, out, in·kh·kw) (conv_dim for convs larger than 1×1; those are skipped without
conv_dim), lora_up = P_k Σ_k, lora_down = Q_kᵀ, the quantile clamp, alpha = k (scale 1). Text-encoder
modules are dropped when no text-encoder weight changed by more than min_diff. Layers that did not
change at all are left out (sd-scripts writes them as all-zero modules).

Speed: same-shape modules are decomposed in one batched call; when k ≪ min(out, n) the top-k
triplets come from a randomised range finder with power iterations (exact for ΔW of rank ≤ k,
near-optimal otherwise), else from a full thin SVD. `exact_svd=True` forces the full SVD.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Mapping, Optional

import torch
from torch import Tensor

from trainer.network.kohya_format import LoraFile
from trainer.tools import metadata as md
from trainer.tools.errors import ToolError
from trainer.tools.factors import ModuleShape, dense_matrix, make_module, shape_of_weight
from trainer.tools.files import check_output_path, save_lora
from trainer.tools.lowrank import (
    batches,
    clamp_to_quantile,
    dense_topk_svd,
    group_by,
    resolve_device,
    spectrum_stats,
)
from trainer.tools.merge import DEFAULT_CLAMP_QUANTILE
from trainer.tools.report import ModuleChange, ToolReport

Progress = Callable[[int, int], None]
TEXT_ENCODER_PREFIX = "lora_te"


def extract_lora(
    org: Mapping[str, Tensor],
    tuned: Mapping[str, Tensor],
    dim: int,
    *,
    conv_dim: Optional[int] = None,
    clamp_quantile: Optional[float] = DEFAULT_CLAMP_QUANTILE,
    min_diff: float = 0.01,
    device: Optional[str] = None,
    exact_svd: bool = False,
    metadata: Optional[Mapping[str, str]] = None,
    progress: Optional[Progress] = None,
) -> tuple[LoraFile, ToolReport]:
    """LoRA approximating `tuned − org` module by module. Keys are kohya module names."""
    t0 = time.perf_counter()
    if dim < 1 or (conv_dim is not None and conv_dim < 1):
        raise ToolError("--dim and --conv_dim must be at least 1")
    if clamp_quantile is not None and not 0.0 < clamp_quantile <= 1.0:
        raise ToolError(f"--clamp_quantile must be in (0, 1], got {clamp_quantile}")
    dev = resolve_device(device)
    report = ToolReport(
        command="extract",
        settings={
            "dim": dim,
            "conv_dim": conv_dim,
            "clamp_quantile": clamp_quantile,
            "min_diff": min_diff,
            "exact_svd": exact_svd,
            "device": str(dev),
        },
    )

    # 1. Pair the layers and decide which ones become modules.
    jobs: list[tuple[str, ModuleShape, int]] = []
    max_te_diff = None
    for name, w_org in org.items():
        if name not in tuned:
            report.skipped.append(f"{name}: not in the tuned model")
            continue
        w_tuned = tuned[name]
        if tuple(w_org.shape) != tuple(w_tuned.shape):
            raise ToolError(f"{name}: shape {tuple(w_org.shape)} in the original, {tuple(w_tuned.shape)} in the tuned model")
        shape = shape_of_weight(name, w_org)
        if shape is None:
            report.skipped.append(f"{name}: not a Linear or Conv2d weight {tuple(w_org.shape)}")
            continue
        if shape.is_spatial and conv_dim is None:
            report.skipped.append(f"{name}: {shape.kind} conv (give --conv_dim to extract convs)")
            continue
        if name.startswith(TEXT_ENCODER_PREFIX):
            diff = float((w_tuned.float() - w_org.float()).abs().max())
            max_te_diff = diff if max_te_diff is None else max(max_te_diff, diff)
        k = min(conv_dim if shape.is_spatial else dim, shape.max_rank)
        jobs.append((name, shape, k))
    report.skipped.extend(f"{name}: only in the tuned model" for name in tuned if name not in org)
    if max_te_diff is not None and max_te_diff <= min_diff:
        dropped = [j for j in jobs if j[0].startswith(TEXT_ENCODER_PREFIX)]
        jobs = [j for j in jobs if not j[0].startswith(TEXT_ENCODER_PREFIX)]
        report.warnings.append(
            f"text encoder is the same (largest change {max_te_diff:.3g} ≤ min_diff {min_diff}): "
            f"extracting U-Net only, {len(dropped)} text-encoder modules left out"
        )
    if not jobs:
        raise ToolError("no modules to extract (no common Linear/Conv2d weights)")

    # 2. Decompose, batched per (shape, rank).
    results: dict[str, tuple[object, ModuleChange]] = {}
    done = 0
    for (m, n, k), group in group_by(jobs, lambda j: (j[1].out_features, j[1].flat_in, j[2])).items():
        for chunk in batches(group, m * n * 3):  # ΔW plus the decomposition's workspace
            W = torch.stack([dense_matrix(tuned[name]) - dense_matrix(org[name]) for name, _, _ in chunk]).to(dev)
            P, S, Qh = dense_topk_svd(W, k, exact=exact_svd)
            totals = torch.linalg.matrix_norm(W).cpu().tolist()
            S_list = S.cpu().tolist()
            for i, (name, shape, _) in enumerate(chunk):
                results[name] = _extract_one(name, shape, W[i], P[i], S[i], S_list[i], Qh[i], totals[i], clamp_quantile)
            done += len(chunk)
            if progress:
                progress(done, len(jobs))

    unchanged = [name for name, _, _ in jobs if results[name] is None]
    report.skipped.extend(f"{name}: unchanged" for name in unchanged)
    jobs = [j for j in jobs if results[j[0]] is not None]
    if not jobs:
        raise ToolError("the two models are identical in every LoRA target layer; nothing to extract")
    modules = {name: results[name][0] for name, _, _ in jobs}
    report.modules = [results[name][1] for name, _, _ in jobs]
    out_meta = dict(metadata or {})
    out_meta.setdefault("ss_network_module", md.NETWORK_MODULE)
    shapes = {name: shape for name, shape, _ in jobs}
    md.apply_network_shape(out_meta, md.network_shape_metadata((shapes[c.name], c.rank, c.alpha) for c in report.modules))
    conv = f", conv_dim {conv_dim}" if conv_dim else ""
    md.prefix_comment(out_meta, f"extracted at dim {dim}{conv} (clamp quantile {clamp_quantile})")
    report.elapsed_s = time.perf_counter() - t0
    return LoraFile(modules, out_meta), report


def _extract_one(name, shape, W, P, S, s, Qh, total, clamp_quantile):
    if total == 0.0:  # the layer did not change
        return None
    k = P.shape[-1]
    U, D = P * S, Qh
    U, D = clamp_to_quantile(U, D, clamp_quantile)
    error = float(torch.linalg.matrix_norm(W - U @ D)) / total if total > 0 else 0.0
    # Retained fractions relative to the whole ΔW (its norm is known exactly even when only the
    # top k singular values were computed).
    kept_sq = sum(v * v for v in s[:k])
    fro = min(1.0, (kept_sq**0.5) / total) if total > 0 else 1.0
    _, _, ratio = spectrum_stats(s, k)
    nuclear_kept = sum(s[:k])
    change = ModuleChange(
        name=name,
        kind=shape.kind,
        rank_in=shape.max_rank,
        rank=k,
        alpha=float(k),
        fro_retained=fro,
        sum_s_retained=float("nan") if len(s) < shape.max_rank else nuclear_kept / max(sum(s), 1e-300),
        max_ratio=ratio,
        rel_error=error,
        singular_values=list(s),
    )
    return make_module(name, shape, U, D, float(k)), change


def is_module_weights_file(path: str | os.PathLike) -> bool:
    """True for a safetensors file whose keys all read "<kohya module name>.weight"."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file() or p.suffix.lower() != ".safetensors":
        return False
    try:
        with safe_open(str(p), framework="pt") as fh:
            keys = list(fh.keys())
    except Exception:
        return False
    return bool(keys) and all(k.startswith("lora_") and k.endswith(".weight") for k in keys)


def load_module_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a module-weights file: safetensors with keys "<kohya module name>.weight"."""
    from safetensors import safe_open

    if not is_module_weights_file(path):
        raise ToolError(f"{path} is not a module-weights file", hint="keys must read '<kohya module name>.weight'")
    with safe_open(str(path), framework="pt") as fh:
        return {key[: -len(".weight")]: fh.get_tensor(key) for key in fh.keys()}


def flag_metadata(*, v2: bool = False, v_parameterization: bool = False, sdxl: bool = False) -> dict[str, str]:
    """Base-model metadata from sd-scripts' --v2 / --v_parameterization / --sdxl flags."""
    if sdxl:
        return {"ss_v2": "False", "ss_base_model_version": "sdxl_base_v1-0"}
    if v2:
        return {"ss_v2": "True", "ss_base_model_version": "sd_v2_v" if v_parameterization else "sd_v2"}
    return {"ss_v2": "False", "ss_base_model_version": "sd_v1"}


def load_weights_for_extract(
    path: str | os.PathLike, *, conv: bool, v2: bool = False, v_parameterization: bool = False
) -> tuple[dict[str, Tensor], Optional[dict[str, str]]]:
    """({kohya module name: weight}, base-model metadata or None) from a module-weights file or from a
    full model (diffusers folder or single-file checkpoint), whose LoRA targets follow sd-scripts."""
    if is_module_weights_file(path):
        return load_module_weights(path), None
    from trainer.tools.models import load_base_model, module_weights

    model = load_base_model(path, v2=v2, v_parameterization=v_parameterization)
    return module_weights(model, conv=conv), model.base_metadata()


def extract_files(
    model_org: str | os.PathLike,
    model_tuned: str | os.PathLike,
    save_to: str | os.PathLike,
    dim: int,
    *,
    conv_dim: Optional[int] = None,
    clamp_quantile: Optional[float] = DEFAULT_CLAMP_QUANTILE,
    min_diff: float = 0.01,
    save_precision: str = "float",
    device: Optional[str] = None,
    exact_svd: bool = False,
    v2: bool = False,
    v_parameterization: bool = False,
    sdxl: bool = False,
    overwrite: bool = False,
    progress: Optional[Progress] = None,
) -> ToolReport:
    """Extract from two models (full checkpoints/folders, or module-weights files), write the LoRA.
    Base-model metadata comes from the loaded original model, else from the v2/... flags."""
    t0 = time.perf_counter()
    out = check_output_path(save_to, [model_org, model_tuned], overwrite=overwrite)
    conv = conv_dim is not None
    org, org_meta = load_weights_for_extract(model_org, conv=conv, v2=v2, v_parameterization=v_parameterization)
    tuned, _ = load_weights_for_extract(model_tuned, conv=conv, v2=v2, v_parameterization=v_parameterization)
    metadata = org_meta or flag_metadata(v2=v2, v_parameterization=v_parameterization, sdxl=sdxl)
    metadata["modelspec.title"] = out.stem
    lora, report = extract_lora(
        org,
        tuned,
        dim,
        conv_dim=conv_dim,
        clamp_quantile=clamp_quantile,
        min_diff=min_diff,
        device=device,
        exact_svd=exact_svd,
        metadata=metadata,
        progress=progress,
    )
    save_lora(out, lora, save_precision=save_precision, overwrite=overwrite)
    report.output, report.elapsed_s = str(out), time.perf_counter() - t0
    report.settings["save_precision"] = save_precision
    return report
