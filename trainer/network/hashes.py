"""The model hashes that sd-scripts stores in a LoRA file and that AUTOMATIC1111 shows.

- `sshs_model_hash`: sha256 of the safetensors data section (every byte after the header).
- `sshs_legacy_hash`: first 8 hex digits of the sha256 of the 0x10000 bytes at offset 0x100000 of the
  whole serialized file (header included; empty when the file is smaller, as in sd-scripts).

sd-scripts computes both from the file serialized with only its `ss_*` metadata, so that editing
user metadata (modelspec.*, or anything else) later does not change them. No library provides these
(A1111 and sd-scripts each carry their own copy), hence this small module.
"""

from __future__ import annotations

import hashlib
from typing import Mapping

import torch

LEGACY_OFFSET = 0x100000
LEGACY_LENGTH = 0x10000


def safetensors_header_size(blob: bytes) -> int:
    """Bytes before the data section: the 8-byte length prefix plus the JSON header."""
    return 8 + int.from_bytes(blob[:8], "little")


def data_sha256(blob: bytes) -> str:
    """sha256 of the tensor data of a serialized safetensors file (excluding the header)."""
    return hashlib.sha256(memoryview(blob)[safetensors_header_size(blob):]).hexdigest()


def legacy_hash(blob: bytes) -> str:
    """sd-webui-additional-networks' old hash: 64 KiB at 1 MiB, first 8 hex digits."""
    return hashlib.sha256(blob[LEGACY_OFFSET:LEGACY_OFFSET + LEGACY_LENGTH]).hexdigest()[:8]


def training_hashes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> tuple[str, str]:
    """(sshs_model_hash, sshs_legacy_hash) exactly as sd-scripts computes them before saving."""
    from safetensors.torch import save

    ss_only = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    blob = save(dict(tensors), ss_only or None)
    return data_sha256(blob), legacy_hash(blob)
