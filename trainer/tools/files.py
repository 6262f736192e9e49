"""Reading inputs and writing outputs safely.

Rules every command follows: the output is never one of the inputs (not even with --overwrite),
an existing output is refused unless overwrite is asked for, and files are written atomically by
`write_lora_file` (which also adds fresh sshs_* hashes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional

from trainer.fileio import OutputExistsError, same_path
from trainer.network.kohya_format import LoraFile, read_lora_file, write_lora_file
from trainer.config import SAVE_PRECISIONS
from trainer.tools.errors import ToolError
from trainer.tools.options import LORA_SUFFIXES

_PRECISION_ALIASES = {"fp32": "float", "float32": "float", "float16": "fp16", "bfloat16": "bf16", "half": "fp16"}


def normalize_precision(value: Optional[str]) -> str:
    """float | fp16 | bf16 (None -> float, sd-scripts' default for these scripts)."""
    if value is None:
        return "float"
    value = _PRECISION_ALIASES.get(value.lower(), value.lower())
    if value not in SAVE_PRECISIONS:
        raise ToolError(f"unknown save precision {value!r}", hint="float, fp16 or bf16")
    return value


def check_output_path(save_to: str | os.PathLike, inputs: Iterable[str | os.PathLike], *, overwrite: bool) -> Path:
    """Validate --save_to before any work is done; returns the path to write.

    A missing suffix gets ".safetensors" (as the kohya GUI does)."""
    path = Path(save_to)
    if not path.name:
        raise ToolError("--save_to must name a file")
    if path.suffix.lower() not in LORA_SUFFIXES:
        if path.suffix:
            raise ToolError(f"--save_to {path}: unsupported suffix", hint="use .safetensors (or .ckpt/.pt/.pth)")
        path = path.with_name(path.name + ".safetensors")
    for src in inputs:
        if same_path(path, Path(src)):
            raise ToolError(f"--save_to {path} is one of the input files; refusing to overwrite an input")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it")
    if path.exists() and path.is_dir():
        raise ToolError(f"--save_to {path} is a folder")
    return path


def check_output_folder(save_to: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> Path:
    """A diffusers folder to create: it must not exist yet (a folder is never replaced) nor be an input."""
    path = Path(save_to)
    if not path.name:
        raise ToolError("--save_to must name a folder")
    for src in inputs:
        if same_path(path, Path(src)):
            raise ToolError(f"--save_to {path} is one of the inputs; refusing to overwrite an input")
    if path.exists():
        raise OutputExistsError(f"{path} already exists; choose a new folder name")
    return path


def read_lora(path: str | os.PathLike) -> LoraFile:
    p = Path(path)
    if not p.is_file():
        raise ToolError(f"LoRA file not found: {p}")
    try:
        return read_lora_file(p)
    except ToolError:
        raise
    except Exception as exc:  # the reader's own errors: show them with the file name
        raise ToolError(f"cannot read {p}: {exc}") from exc


def dropped_keys_warning(lora: LoraFile, label: str = "the input") -> list[str]:
    """A warning when the reader found tensors it does not understand: they are not carried over."""
    unknown = list(getattr(lora, "unrecognized_keys", []) or [])
    if not unknown:
        return []
    return [f"{label} has {len(unknown)} non-LoRA keys (e.g. {unknown[0]}); they are not carried over"]


def save_lora(path: Path, lora: LoraFile, *, save_precision: str, overwrite: bool) -> Path:
    write_lora_file(path, lora, save_precision=normalize_precision(save_precision), exclusive=not overwrite)
    return path
