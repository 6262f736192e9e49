"""Merging LoRAs with each other.

Both merges start from the same exact representation of the weighted sum: for every module,

    ΔW_total = Σ_m ratio_m · scale_m · U_m D_m = [c_1 U_1, c_2 U_2, ...] @ [d_1 D_1; d_2 D_2; ...]

with c_m = sign(ratio_m·scale_m)·sqrt(|ratio_m·scale_m|) and d_m = sqrt(|ratio_m·scale_m|): the factors
are concatenated along the rank axis. Splitting the coefficient as a square root over both factors
keeps their magnitudes balanced, which matters when the result is saved in fp16 (a scale of 1/32
folded into lora_up alone pushes typical values into fp16's subnormal range).

- `merge_loras` writes that concatenation as it is (alpha = rank, so scale 1): exact, negative ratios
  work, output rank = sum of the input ranks. sd-scripts' default merge instead adds the factors
  (D = Σ c·D_m, U = Σ |c|·U_m), which creates cross terms U_i D_j and applies a lone model's ratio
  twice; its --concat mode concatenates but keeps the first model's alpha, which is only exact when
  all scales agree.
- `svd_merge_loras` re-factorises ΔW_total at a chosen rank: exact thin SVD of the product (no
  dense ΔW), k = min(new_rank, rank of ΔW_total), lora_up = P_k Σ_k, lora_down = Q_kᵀ, alpha = k,
  then sd-scripts' optional quantile clamp.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from trainer.network.kohya_format import LoraFile
from trainer.tools import metadata as md
from trainer.tools.errors import ToolError
from trainer.tools.factors import (
    ModuleShape,
    factor_matrices,
    make_module,
    product_distance,
    scale_of,
    shape_of_factors,
)
from trainer.tools.files import check_output_path, dropped_keys_warning, read_lora, save_lora
from trainer.tools.lowrank import (
    batches,
    clamp_to_quantile,
    compute_dtype,
    factored_svd,
    group_by,
    is_negligible,
    resolve_device,
    small_matrix_threads,
    spectrum_stats,
)
from trainer.tools.report import ModuleChange, ToolReport

Progress = Callable[[int, int], None]
DEFAULT_CLAMP_QUANTILE = 0.99  # sd-scripts' value for svd_merge_lora.py and extract_lora_from_models.py


@dataclass
class _Weighted:
    """One module's inputs: (lora_down, lora_up, ratio·scale) per model that has it. The weighted,
    rank-concatenated factors are built on demand, so only one batch of them is in memory at a time."""

    name: str
    shape: ModuleShape
    parts: list[tuple[Tensor, Tensor, float]] = field(default_factory=list)

    @property
    def rank(self) -> int:
        return sum(down.shape[0] for down, _, _ in self.parts)

    def factors(self, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
        Us, Ds = [], []
        for down, up, coef in self.parts:
            root = math.sqrt(abs(coef))
            U, D = factor_matrices(down, up, dtype)
            Us.append(U * math.copysign(root, coef))
            Ds.append(D * root)
        return torch.cat(Us, dim=1), torch.cat(Ds, dim=0)


def _check_inputs(loras: Sequence[LoraFile], ratios: Sequence[float]) -> None:
    if not loras:
        raise ToolError("no models to merge")
    if len(ratios) != len(loras):
        raise ToolError(f"{len(loras)} models but {len(ratios)} ratios", hint="give one --ratios value per model")
    for r in ratios:
        if not math.isfinite(r):
            raise ToolError(f"ratio {r} is not a finite number")


def weighted_factors(loras: Sequence[LoraFile], ratios: Sequence[float]) -> list[_Weighted]:
    """Every module name of any input, with its weighted inputs (see the module docstring).
    Modules missing from an input contribute nothing; a ratio of 0 drops that input."""
    _check_inputs(loras, ratios)
    merged: dict[str, _Weighted] = {}
    for index, (lora, ratio) in enumerate(zip(loras, ratios)):
        for name, module in lora.modules.items():
            shape = shape_of_factors(name, module.down, module.up)
            entry = merged.setdefault(name, _Weighted(name, shape))
            if entry.shape != shape:
                raise ToolError(
                    f"{name}: model {index + 1} has layer shape {shape.weight_shape()}, "
                    f"an earlier model {entry.shape.weight_shape()}; these LoRAs are for different base models"
                )
            coef = float(ratio) * scale_of(module)
            if coef != 0.0:
                entry.parts.append((module.down, module.up, coef))
    return [w for w in merged.values() if w.parts]


def merge_loras(
    loras: Sequence[LoraFile],
    ratios: Sequence[float],
    *,
    titles: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
) -> tuple[LoraFile, ToolReport]:
    """Exact merge: ΔW_merged = Σ ratio_m · ΔW_m for every module (ranks add up)."""
    t0 = time.perf_counter()
    weighted = weighted_factors(loras, ratios)
    if not weighted:
        raise ToolError("nothing to merge (no modules, or every ratio is 0)")
    modules, changes = {}, []
    with small_matrix_threads(torch.device("cpu")):
        for w in weighted:
            U, D = w.factors()
            modules[w.name] = make_module(w.name, w.shape, U, D, float(w.rank))
            changes.append(ModuleChange(w.name, w.shape.kind, w.rank, w.rank, float(w.rank), 1.0, 1.0, math.nan, 0.0))
    titles = list(titles) if titles else [f"model{i + 1}" for i in range(len(loras))]
    note = "exact merge (rank concatenation) of " + ", ".join(f"{t} × {r:g}" for t, r in zip(titles, ratios))
    metadata, warnings = md.merged_metadata([lf.metadata for lf in loras], titles, note=note, title=title)
    for lf, t in zip(loras, titles):
        warnings.extend(dropped_keys_warning(lf, t))
    md.apply_network_shape(metadata, md.network_shape_metadata((w.shape, w.rank, float(w.rank)) for w in weighted))
    report = ToolReport(
        command="merge",
        settings={"ratios": list(ratios), "models": titles},
        modules=changes,
        warnings=warnings,
        elapsed_s=time.perf_counter() - t0,
    )
    return LoraFile(modules, metadata), report


def svd_merge_loras(
    loras: Sequence[LoraFile],
    ratios: Sequence[float],
    new_rank: int,
    *,
    new_conv_rank: Optional[int] = None,
    clamp_quantile: Optional[float] = DEFAULT_CLAMP_QUANTILE,
    device: Optional[str] = None,
    titles: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    progress: Optional[Progress] = None,
) -> tuple[LoraFile, ToolReport]:
    """Merge at a fixed rank: best rank-k approximation of Σ ratio_m · ΔW_m per module (then the clamp).

    new_rank applies to linear and 1×1-conv modules, new_conv_rank (default new_rank) to larger convs.
    clamp_quantile None or ≥ 1 disables sd-scripts' outlier clamp."""
    t0 = time.perf_counter()
    new_conv_rank = new_rank if new_conv_rank is None else new_conv_rank
    if new_rank < 1 or new_conv_rank < 1:
        raise ToolError("--new_rank and --new_conv_rank must be at least 1")
    if clamp_quantile is not None and not 0.0 < clamp_quantile <= 1.0:
        raise ToolError(f"--clamp_quantile must be in (0, 1], got {clamp_quantile}")
    dev = resolve_device(device)
    dtype = compute_dtype(dev)
    weighted = weighted_factors(loras, ratios)
    if not weighted:
        raise ToolError("nothing to merge (no modules, or every ratio is 0)")

    results: dict[str, tuple[object, ModuleChange]] = {}
    done = 0
    with small_matrix_threads(dev):
        groups = group_by(weighted, lambda w: (w.shape.out_features, w.shape.flat_in, w.rank))
        for (m, n, r), group in groups.items():
            for chunk in batches(group, (m + n) * r):
                pairs = [w.factors(dtype) for w in chunk]
                U = torch.stack([p[0] for p in pairs]).to(dev)
                D = torch.stack([p[1] for p in pairs]).to(dev)
                P, S, Qh = factored_svd(U, D)
                S_list = S.cpu().tolist()
                for i, w in enumerate(chunk):
                    cap = new_conv_rank if w.shape.is_spatial else new_rank
                    results[w.name] = _refactor_one(w, U[i], D[i], P[i], S[i], S_list[i], Qh[i], cap, clamp_quantile)
                done += len(chunk)
                if progress:
                    progress(done, len(weighted))

    modules = {w.name: results[w.name][0] for w in weighted}
    changes = [results[w.name][1] for w in weighted]
    titles = list(titles) if titles else [f"model{i + 1}" for i in range(len(loras))]
    conv = "" if new_conv_rank == new_rank else f", conv rank {new_conv_rank}"
    note = (
        f"SVD merge at rank {new_rank}{conv} (clamp quantile {clamp_quantile}) of "
        + ", ".join(f"{t} × {r:g}" for t, r in zip(titles, ratios))
    )
    metadata, warnings = md.merged_metadata([lf.metadata for lf in loras], titles, note=note, title=title)
    for lf, t in zip(loras, titles):
        warnings.extend(dropped_keys_warning(lf, t))
    shapes = {w.name: w.shape for w in weighted}
    md.apply_network_shape(metadata, md.network_shape_metadata((shapes[c.name], c.rank, c.alpha) for c in changes))
    report = ToolReport(
        command="svd_merge",
        settings={
            "ratios": list(ratios),
            "models": titles,
            "new_rank": new_rank,
            "new_conv_rank": new_conv_rank,
            "clamp_quantile": clamp_quantile,
            "device": str(dev),
        },
        modules=changes,
        warnings=warnings,
        elapsed_s=time.perf_counter() - t0,
    )
    return LoraFile(modules, metadata), report


def _refactor_one(w: _Weighted, U: Tensor, D: Tensor, P: Tensor, S: Tensor, s: list[float], Qh: Tensor,
                  cap: int, clamp_quantile: Optional[float]):
    """Best rank-k factors of the module's merged ΔW = U @ D (thin SVD P, S, Qh given), then the clamp."""
    k = max(1, min(cap, len(s)))
    note = ""
    reference = float(torch.linalg.matrix_norm(U) * torch.linalg.matrix_norm(D))
    if is_negligible(s[0] if s else 0.0, reference):
        k, note = 1, "zero ΔW (the inputs cancel)"
        new_U = torch.zeros_like(P[:, :1])
    else:
        new_U = P[:, :k] * S[:k]
    new_D = Qh[:k]
    fro, ssum, ratio = spectrum_stats(s, k)
    if clamp_quantile is None or clamp_quantile >= 1.0:
        error = math.sqrt(max(0.0, 1.0 - fro * fro))  # only the dropped singular values
    else:
        new_U, new_D = clamp_to_quantile(new_U, new_D, clamp_quantile)
        total = math.sqrt(math.fsum(v * v for v in s))  # ‖ΔW‖_F = ‖σ‖
        error = float(product_distance(U, D, new_U, new_D, total)) / total if total > 0 else 0.0
    change = ModuleChange(w.name, w.shape.kind, w.rank, k, float(k), fro, ssum, ratio, error, s, note)
    return make_module(w.name, w.shape, new_U, new_D, float(k)), change


def _read_all(models: Sequence[str | os.PathLike]) -> tuple[list[LoraFile], list[str]]:
    loras = [read_lora(p) for p in models]
    return loras, [md.title_of(p, lf.metadata) for p, lf in zip(models, loras)]


def merge_files(
    models: Sequence[str | os.PathLike],
    ratios: Sequence[float],
    save_to: str | os.PathLike,
    *,
    save_precision: str = "float",
    overwrite: bool = False,
) -> ToolReport:
    """Read, merge exactly, write. Returns the report (report.output is the path written)."""
    t0 = time.perf_counter()
    out = check_output_path(save_to, models, overwrite=overwrite)
    loras, titles = _read_all(models)
    lora, report = merge_loras(loras, ratios, titles=titles, title=Path(out).stem)
    save_lora(out, lora, save_precision=save_precision, overwrite=overwrite)
    report.output, report.elapsed_s = str(out), time.perf_counter() - t0
    report.settings["save_precision"] = save_precision
    return report


def svd_merge_files(
    models: Sequence[str | os.PathLike],
    ratios: Sequence[float],
    save_to: str | os.PathLike,
    new_rank: int,
    *,
    new_conv_rank: Optional[int] = None,
    clamp_quantile: Optional[float] = DEFAULT_CLAMP_QUANTILE,
    save_precision: str = "float",
    device: Optional[str] = None,
    overwrite: bool = False,
    progress: Optional[Progress] = None,
) -> ToolReport:
    """Read, SVD-merge, write. Returns the report (report.output is the path written)."""
    t0 = time.perf_counter()
    out = check_output_path(save_to, models, overwrite=overwrite)
    loras, titles = _read_all(models)
    lora, report = svd_merge_loras(
        loras,
        ratios,
        new_rank,
        new_conv_rank=new_conv_rank,
        clamp_quantile=clamp_quantile,
        device=device,
        titles=titles,
        title=Path(out).stem,
        progress=progress,
    )
    save_lora(out, lora, save_precision=save_precision, overwrite=overwrite)
    report.output, report.elapsed_s = str(out), time.perf_counter() - t0
    report.settings["save_precision"] = save_precision
    return report
