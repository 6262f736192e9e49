"""LoRA files in the kohya / sd-scripts layout, which AUTOMATIC1111, ComfyUI and diffusers all load.

One module `lora_unet_down_blocks_0_attentions_0_proj_in` is stored as three tensors:
`<name>.lora_down.weight` ([r, in] or [r, in, kh, kw]), `<name>.lora_up.weight` ([out, r] or
[out, r, 1, 1]) and `<name>.alpha` (0-D); the weight update is ΔW = up·down·alpha/r.

safetensors does the (de)serialization; what is written by hand here is only what no library
offers: the kohya key names (peft/diffusers use dotted `lora_A`/`lora_B` names and keep alpha out of
the file), the sd-scripts hashes, and the delta-weight math for 3x3 convolutions.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Union

import torch

from trainer.fileio import atomic_write_bytes
from trainer.network import hashes

SAVE_DTYPES = {"float": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TORCH_SUFFIXES = (".ckpt", ".pt", ".pth")
HASH_KEYS = ("sshs_model_hash", "sshs_legacy_hash", "modelspec.hash_sha256")

# Component names diffusers uses in its LoRA files, and the kohya prefix of each.
DIFFUSERS_COMPONENTS = {"unet": "lora_unet", "text_encoder": "lora_te", "text_encoder_2": "lora_te2"}
DIFFUSERS_ADAPTER_METADATA_KEY = "lora_adapter_metadata"

_KOHYA_SUFFIXES = ((".lora_down.weight", "down"), (".lora_up.weight", "up"), (".alpha", "alpha"))
_PEFT_SUFFIX = re.compile(r"\.lora_([AB])(?:\.[A-Za-z0-9_]+)?\.weight$")  # optional adapter name
_TE_NAME = re.compile(r"^(lora_te[12]?)_(.+)$")


class LoraFormatError(ValueError):
    """A LoRA file that cannot be read: unknown extension, a module without up or down, bad shapes."""


def lora_delta(down: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The unscaled update up·down in float32, shaped like the adapted layer's weight."""
    down, up = down.float(), up.float()
    if down.dim() == 2:
        return up @ down
    # lora_up is a 1x1 conv, so ΔW[o, i, :, :] = Σ_r up[o, r] · down[r, i, :, :] for any kernel size
    # of lora_down (1x1 or 3x3); it is one matrix product on the flattened kernels.
    return (up.flatten(1) @ down.flatten(1)).reshape(up.shape[0], *down.shape[1:])


@dataclass
class LoraModule:
    """One adapted layer. `alpha` None or 0 means alpha = rank (scale 1), as in sd-scripts."""

    name: str
    down: torch.Tensor
    up: torch.Tensor
    alpha: Optional[float] = None

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def effective_alpha(self) -> float:
        return float(self.alpha) if self.alpha else float(self.rank)

    @property
    def scale(self) -> float:
        return self.effective_alpha / self.rank

    @property
    def is_conv(self) -> bool:
        return self.down.dim() == 4

    def delta_weight(self, multiplier: float = 1.0) -> torch.Tensor:
        """ΔW = multiplier · alpha/r · up·down (float32), the amount added to the base weight."""
        return lora_delta(self.down, self.up) * (self.scale * multiplier)

    def tensors(self, dtype: Optional[torch.dtype] = None) -> dict[str, torch.Tensor]:
        """The module's kohya keys. sd-scripts casts alpha to the save dtype too."""
        dtype = dtype or self.down.dtype
        return {
            f"{self.name}.lora_down.weight": self.down.detach().to("cpu", dtype).contiguous(),
            f"{self.name}.lora_up.weight": self.up.detach().to("cpu", dtype).contiguous(),
            f"{self.name}.alpha": torch.tensor(self.effective_alpha, dtype=dtype),
        }


@dataclass
class LoraFile:
    modules: dict[str, LoraModule]
    metadata: dict[str, str] = field(default_factory=dict)
    unrecognized_keys: list[str] = field(default_factory=list)  # keys of other formats (LoHa, DoRA, ...)

    def state_dict(self, dtype: Optional[torch.dtype] = None) -> dict[str, torch.Tensor]:
        tensors: dict[str, torch.Tensor] = {}
        for name in sorted(self.modules):
            tensors.update(self.modules[name].tensors(dtype))
        return tensors

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor],
                        metadata: Optional[Mapping[str, str]] = None) -> "LoraFile":
        """Group tensors into modules, accepting kohya, peft (`lora_A`/`lora_B`) and diffusers names."""
        metadata = dict(metadata or {})
        parts: dict[str, dict[str, torch.Tensor]] = {}
        peft_origin: dict[str, tuple[str, str]] = {}
        unrecognized: list[str] = []
        for key, tensor in state_dict.items():
            parsed = parse_key(key)
            if parsed is None:
                unrecognized.append(key)
                continue
            name, part, origin = parsed
            parts.setdefault(name, {})[part] = tensor
            if origin is not None:
                peft_origin[name] = origin

        adapter_meta = _diffusers_adapter_metadata(metadata)
        modules: dict[str, LoraModule] = {}
        for name, p in parts.items():
            missing = [k for k in ("down", "up") if k not in p]
            if missing:
                raise LoraFormatError(f"LoRA module {name} has no lora_{missing[0]} weight")
            down, up = p["down"], p["up"]
            if down.shape[0] != up.shape[1] or down.dim() != up.dim():
                raise LoraFormatError(
                    f"LoRA module {name}: lora_down {tuple(down.shape)} and lora_up {tuple(up.shape)} do not fit")
            if "alpha" in p:
                alpha: Optional[float] = float(p["alpha"].float().item())
            elif name in peft_origin:
                alpha = _peft_alpha(adapter_meta, *peft_origin[name], rank=int(down.shape[0]))
            else:
                alpha = None
            modules[name] = LoraModule(name, down, up, alpha)
        return cls(modules, metadata, unrecognized)


def parse_key(key: str) -> Optional[tuple[str, str, Optional[tuple[str, str]]]]:
    """`key` -> (kohya module name, "down"|"up"|"alpha", (diffusers component, module path) or None).

    Accepts `lora_unet_x.lora_down.weight`, `unet.x.y.lora_A.weight`, `text_encoder.x.lora_B.weight`,
    and text-encoder names without `text_model_` (which A1111/ComfyUI would silently ignore, so they are
    normalised to the kohya spelling here). None for anything else.
    """
    for suffix, part in _KOHYA_SUFFIXES:
        if key.endswith(suffix):
            module = key[: -len(suffix)]
            break
    else:
        m = _PEFT_SUFFIX.search(key)
        if m is None:
            return None
        module, part = key[: m.start()], ("down" if m.group(1) == "A" else "up")

    if module.startswith("lora_") and "." not in module:
        return canonical_name(module), part, None
    component, _, path = module.partition(".")
    if component in DIFFUSERS_COMPONENTS and path:
        name = f"{DIFFUSERS_COMPONENTS[component]}_{path.replace('.', '_')}"
        return canonical_name(name), part, (component, path)
    return None


def canonical_name(name: str) -> str:
    """The kohya spelling: text-encoder names always read `lora_te_text_model_...` (transformers 4 paths)."""
    m = _TE_NAME.match(name)
    if m and not m.group(2).startswith("text_model_"):
        return f"{m.group(1)}_text_model_{m.group(2)}"
    return name


def _diffusers_adapter_metadata(metadata: Mapping[str, str]) -> dict:
    raw = metadata.get(DIFFUSERS_ADAPTER_METADATA_KEY)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _peft_alpha(adapter_meta: dict, component: str, path: str, *, rank: int) -> Optional[float]:
    """The kohya alpha of a module of a diffusers/peft file, from the LoraConfig diffusers stores.

    Without that metadata diffusers itself assumes alpha = r, and so do we (None).
    """
    cfg = {k[len(component) + 1:]: v for k, v in adapter_meta.items() if k.startswith(component + ".")}
    if "lora_alpha" not in cfg:
        return None
    from peft.utils.other import get_pattern_key

    pattern = cfg.get("alpha_pattern") or {}
    alpha = float(pattern.get(get_pattern_key(pattern.keys(), path), cfg["lora_alpha"]))
    if cfg.get("use_rslora"):
        alpha *= math.sqrt(rank)  # rsLoRA scales by alpha/sqrt(r); kohya scales by alpha/r
    return alpha


def read_lora_file(path: Union[str, Path]) -> LoraFile:
    """Read a .safetensors (with metadata) or a .ckpt/.pt/.pth LoRA file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            state_dict = {k: f.get_tensor(k) for k in f.keys()}
    elif suffix in TORCH_SUFFIXES:
        # weights_only: a LoRA file from anywhere must not be able to run code (plain pickle can)
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(loaded, dict):
            raise LoraFormatError(f"{path} does not hold a state dict")
        state_dict, metadata = loaded, {}
    else:
        raise LoraFormatError(f"{path}: unknown LoRA file type {suffix!r} (use .safetensors, .ckpt or .pt)")
    return LoraFile.from_state_dict(state_dict, metadata)


def write_lora_file(path: Union[str, Path], lora: LoraFile, *, save_precision: str = "fp16",
                    exclusive: bool = True) -> dict[str, str]:
    """Write `lora` atomically; returns the metadata written (empty for .ckpt/.pt).

    .safetensors gets the metadata plus `sshs_model_hash`/`sshs_legacy_hash` (computed, like
    sd-scripts, from the file serialized with only the `ss_*` keys) and, when the metadata carries a
    model spec, `modelspec.hash_sha256`. .ckpt/.pt/.pth hold only the tensors (torch.save), as in
    sd-scripts. With exclusive=True an existing file raises OutputExistsError.
    """
    from safetensors.torch import save

    path = Path(path)
    if save_precision not in SAVE_DTYPES:
        raise ValueError(f"save_precision must be one of {', '.join(SAVE_DTYPES)}, got {save_precision!r}")
    tensors = lora.state_dict(SAVE_DTYPES[save_precision])
    suffix = path.suffix.lower()

    if suffix in TORCH_SUFFIXES:
        # In memory first: torch.save onto a full disk fails with an unclear RuntimeError, a write with ENOSPC.
        buffer = io.BytesIO()
        torch.save(tensors, buffer)
        atomic_write_bytes(path, buffer.getvalue(), exclusive=exclusive)
        return {}
    if suffix != ".safetensors":
        raise LoraFormatError(f"{path}: unknown LoRA file type {suffix!r} (use .safetensors, .ckpt or .pt)")

    metadata = {k: str(v) for k, v in lora.metadata.items() if k not in HASH_KEYS}
    model_hash, legacy = hashes.training_hashes(tensors, metadata)
    metadata["sshs_model_hash"] = model_hash
    metadata["sshs_legacy_hash"] = legacy
    if any(k.startswith("modelspec.") for k in metadata):
        # The model spec's hash covers the same bytes: all tensor data, header excluded.
        metadata["modelspec.hash_sha256"] = "0x" + model_hash
    atomic_write_bytes(path, save(tensors, metadata), exclusive=exclusive)
    return metadata
