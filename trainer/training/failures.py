"""The `error` event of the exception that ended a run: a code, a message naming what to fix, a hint."""

from __future__ import annotations

import sys
import traceback
from typing import Any

import torch

from trainer.errors import TrainingError
from trainer.fileio import OutputExistsError

OOM_HINT = ("Use batch size 1, turn on gradient checkpointing and cache latents, lower the resolution, "
            "or pick an 8-bit optimizer (AdamW8bit).")


def error_fields(exc: Exception) -> dict[str, Any]:
    """The event fields for `exc`; the traceback goes to stderr (the engine log) only for unexpected ones."""
    from trainer.cli import describe_os_error
    from trainer.training.disk_full import FULL_DISK_ERRNOS

    if isinstance(exc, TrainingError):
        return exc.event_fields()
    if isinstance(exc, OutputExistsError):
        return {"code": "output_exists", "message": str(exc), "field": "output_name",
                "hint": "Files are never overwritten: change the output name or move the existing file, then "
                        "train again."}
    if isinstance(exc, torch.OutOfMemoryError):
        return {"code": "out_of_memory", "message": f"out of memory: {exc}".strip(), "field": "train_batch_size",
                "hint": OOM_HINT}
    if isinstance(exc, MemoryError):
        return {"code": "out_of_memory", "message": "the computer ran out of memory", "field": "train_batch_size",
                "hint": OOM_HINT}
    if isinstance(exc, OSError) and exc.errno in FULL_DISK_ERRNOS:
        return {"code": "disk_full", "message": f"cannot write {describe_os_error(exc)}", "field": "output_dir",
                "hint": "Free some space on that disk, then train again.", "params": {"path": exc.filename}}
    if isinstance(exc, OSError) and exc.filename is not None:
        return {"code": "file_error", "message": f"cannot use {describe_os_error(exc)}", "field": None,
                "hint": "Fix the file or folder named above, then train again.", "params": {"path": exc.filename}}
    traceback.print_exc(file=sys.stderr)
    msg = f"{type(exc).__name__}: {exc}"
    if "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower():
        return {"code": "out_of_memory", "message": msg, "field": "train_batch_size", "hint": OOM_HINT}
    return {"code": "internal_error", "message": msg, "field": None,
            "hint": "See the engine log for the full traceback."}
