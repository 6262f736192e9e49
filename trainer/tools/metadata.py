"""Metadata of files the tools write (safetensors `__metadata__`, all values strings).

sd-scripts conventions kept: ss_network_dim / ss_network_alpha describe the non-conv modules and read
"Dynamic" when they vary; conv_dim / conv_alpha in the ss_network_args JSON describe the 3×3 (and
larger) convs; a note about the operation is prefixed to ss_training_comment; merges list their
inputs in modelspec.merged_from. Stale hashes are removed (write_lora_file adds fresh sshs_* ones).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

from trainer.tools.factors import ModuleShape

DYNAMIC = "Dynamic"
NETWORK_MODULE = "networks.lora"

# Keys that describe the file's bytes or its training; they do not survive a transformation.
_STALE_KEYS = ("sshs_model_hash", "sshs_legacy_hash", "modelspec.hash_sha256")
# Keys a merge carries over when every input agrees on them.
_SHARED_KEYS = (
    "ss_v2",
    "ss_base_model_version",
    "ss_sd_model_name",
    "ss_new_sd_model_hash",
    "ss_clip_skip",
    "modelspec.sai_model_spec",
    "modelspec.architecture",
    "modelspec.implementation",
    "modelspec.resolution",
    "modelspec.prediction_type",
)


def fmt_alpha(alpha: float) -> str:
    """Alpha as sd-scripts writes it (str of a float, e.g. "16.0")."""
    return str(float(round(alpha, 6)))


def _describe(values: Sequence, fmt) -> Optional[str]:
    if not values:
        return None
    first = values[0]
    return fmt(first) if all(abs(v - first) <= 1e-9 * max(1.0, abs(first)) for v in values) else DYNAMIC


def network_shape_metadata(modules: Iterable[tuple[ModuleShape, int, float]]) -> dict[str, Optional[str]]:
    """{dim, alpha, conv_dim, conv_alpha} from (shape, rank, alpha) of every written module.
    A value is "Dynamic" when it varies across modules and None when no such module exists."""
    linear: list[tuple[int, float]] = []
    conv: list[tuple[int, float]] = []
    for shape, rank, alpha in modules:
        (conv if shape.is_spatial else linear).append((rank, alpha))
    return {
        "dim": _describe([r for r, _ in linear], str),
        "alpha": _describe([a for _, a in linear], fmt_alpha),
        "conv_dim": _describe([r for r, _ in conv], str),
        "conv_alpha": _describe([a for _, a in conv], fmt_alpha),
    }


def apply_network_shape(metadata: dict[str, str], shape_info: Mapping[str, Optional[str]]) -> dict[str, str]:
    """Write ss_network_dim/alpha and the conv entries of ss_network_args into `metadata` (in place)."""
    if shape_info["dim"] is not None:
        metadata["ss_network_dim"] = shape_info["dim"]
        metadata["ss_network_alpha"] = shape_info["alpha"] or DYNAMIC
    elif shape_info["conv_dim"] is not None:  # conv-only file: mirror the conv values
        metadata["ss_network_dim"] = shape_info["conv_dim"]
        metadata["ss_network_alpha"] = shape_info["conv_alpha"] or DYNAMIC
    try:
        args = json.loads(metadata.get("ss_network_args") or "{}")
        if not isinstance(args, dict):
            args = {}
    except json.JSONDecodeError:
        args = {}
    if shape_info["conv_dim"] is not None:
        args["conv_dim"] = shape_info["conv_dim"]
        args["conv_alpha"] = shape_info["conv_alpha"] or DYNAMIC
    else:
        args.pop("conv_dim", None)
        args.pop("conv_alpha", None)
    if args:
        metadata["ss_network_args"] = json.dumps(args)
    else:
        metadata.pop("ss_network_args", None)
    metadata.setdefault("ss_network_module", NETWORK_MODULE)
    return metadata


def without_stale(metadata: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in metadata.items() if k not in _STALE_KEYS}


def prefix_comment(metadata: dict[str, str], note: str) -> dict[str, str]:
    """sd-scripts style: "<note>; <previous comment>"."""
    old = metadata.get("ss_training_comment", "")
    metadata["ss_training_comment"] = f"{note}; {old}" if old else note
    return metadata


def title_of(path: Optional[str | Path], metadata: Mapping[str, str]) -> str:
    """The name a merge lists an input under: its modelspec.title, else its file stem."""
    if metadata.get("modelspec.title"):
        return metadata["modelspec.title"]
    if metadata.get("ss_output_name"):
        return metadata["ss_output_name"]
    return Path(path).stem if path else "unnamed"


def merged_metadata(
    inputs: Sequence[Mapping[str, str]],
    titles: Sequence[str],
    *,
    note: str,
    title: Optional[str],
) -> tuple[dict[str, str], list[str]]:
    """Fresh metadata for a merged LoRA: keys all inputs agree on, merged_from, title, comment.
    Returns (metadata, warnings)."""
    warnings: list[str] = []
    metadata: dict[str, str] = {"ss_network_module": NETWORK_MODULE}
    for key in _SHARED_KEYS:
        values = {m.get(key) for m in inputs}
        if len(values) == 1 and None not in values:
            metadata[key] = values.pop()
        elif key in ("ss_base_model_version", "modelspec.architecture") and len(values - {None}) > 1:
            warnings.append(f"inputs disagree on {key}: {sorted(v for v in values if v)}")
    metadata["modelspec.merged_from"] = ", ".join(titles)
    if title:
        metadata["modelspec.title"] = title
    metadata["ss_training_comment"] = note
    return metadata, warnings
