"""Map a kohya_ss GUI JSON config onto TrainConfig.

kohya_ss saves its GUI state under GUI field names (`epoch`, `optimizer`, `max_resolution`,
`LoRA_type`, ...) that drift from sd-scripts' argument names. Most keys are the same name,
some are renamed or reshaped below; everything we cannot represent is reported, never
silently dropped. Torch-free: the web process uses it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from trainer.config import ConfigError, TrainConfig, coerce_value

# GUI-only keys whose meaning is folded into other fields below. The model-type checkboxes
# (sdxl, ...) carry no setting of ours: the family is detected from the weights.
_CONSUMED = {"epoch", "max_resolution", "optimizer", "LoRA_type", "lr_warmup", "use_8bit_adam",
             "xformers", "sdpa", "max_train_epochs", "max_train_steps", "lr_warmup_steps", "sdxl",
             "model_list"}
# kohya_ss's SDXL block: passed to sd-scripts only while its SDXL checkbox is ticked
_SDXL_RENAMED = {"sdxl_no_half_vae": "no_half_vae", "sdxl_cache_text_encoder_outputs": "cache_text_encoder_outputs"}
# kohya_ss writes 0 for "not set" in these; sd-scripts then uses its own default
_ZERO_MEANS_UNSET = {"max_timestep"}


def _blank(value: Any) -> bool:
    """kohya_ss saves an empty box as "" (or null): the setting keeps its default."""
    return value is None or (isinstance(value, str) and not value.strip())


def _meaningful(value: Any) -> bool:
    return value not in (None, "", False, 0, 0.0, [], {}, "none", "None")


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _map_lora_type(value: Any) -> Optional[str]:
    if value in ("Standard", "", None):
        return "Standard"
    if value in ("Kohya LoCon", "LoCon", "LyCORIS/LoCon"):
        return "LoCon"
    return None


class _Mapping:
    """The values mapped so far and the reasons for what could not be."""

    def __init__(self) -> None:
        self.fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
        self.values: dict[str, Any] = {}
        self.unmapped: list[str] = []
        self.touched: set[str] = set()  # our fields the file speaks about (set, or blank = default)

    def put(self, name: str, raw: Any, source: str) -> None:
        """Set field `name` from kohya's `raw` (numbers saved as text and the reverse are accepted)."""
        self.touched.add(name)
        candidates = [raw]
        num = _number(raw)
        if num is not None and not isinstance(raw, (int, float)):
            candidates.append(int(num) if num.is_integer() else num)
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            candidates.append(str(raw))
        for cand in candidates:
            try:
                self.values[name] = coerce_value(self.fields[name], cand)
                return
            except ValueError as exc:
                last = str(exc)
        self.unmapped.append(f"{source}: {last}")


def import_kohya_config(data: dict[str, Any]) -> tuple[TrainConfig, list[str]]:
    """Return our config and a list of `"key: reason"` for what could not be mapped."""
    mapping = _map(data)
    # kohya: a learning rate of 0 for a part means "do not train it"; ours says the same.
    try:
        config = TrainConfig.from_dict(mapping.values)
    except ConfigError as exc:  # cross-field coercions above should make this unreachable
        mapping.unmapped.extend(str(e) for e in exc.errors)
        config = TrainConfig.from_dict({k: v for k, v in mapping.values.items()
                                        if k not in {e.field for e in exc.errors}})
    return config, mapping.unmapped


def kohya_fields(data: dict[str, Any]) -> set[str]:
    """Our fields a kohya_ss config speaks about; a form loading it keeps its other fields."""
    return _map(data).touched


def _map(data: dict[str, Any]) -> _Mapping:
    mapping = _Mapping()
    for key, raw in data.items():
        if key in mapping.fields and key not in _CONSUMED:
            mapping.touched.add(key)
        if key in _CONSUMED or _blank(raw) or (key in _ZERO_MEANS_UNSET and _number(raw) == 0):
            continue
        if key in _SDXL_RENAMED:
            if data.get("sdxl") is True:
                mapping.put(_SDXL_RENAMED[key], raw, key)
        elif key in mapping.fields:
            mapping.put(key, raw, key)
        elif _meaningful(raw):
            mapping.unmapped.append(f"{key}: not supported by this app (value {raw!r} ignored)")
    _map_length(data, mapping)
    _map_reshaped(data, mapping)
    return mapping


def _map_length(data: dict[str, Any], mapping: _Mapping) -> None:
    """Epochs vs steps: kohya passes max_train_epochs (wins in sd-scripts), else steps, else `epoch`."""
    epochs = _number(data.get("max_train_epochs"))
    steps = _number(data.get("max_train_steps"))
    if epochs and epochs > 0:
        mapping.put("max_train_epochs", int(epochs), "max_train_epochs")
        mapping.put("max_train_steps", 0, "max_train_steps")
    elif steps and steps > 0:
        mapping.put("max_train_steps", int(steps), "max_train_steps")
    elif _number(data.get("epoch")):
        mapping.put("max_train_epochs", int(_number(data["epoch"])), "epoch")


def _map_reshaped(data: dict[str, Any], mapping: _Mapping) -> None:
    """kohya_ss GUI fields whose name or shape differs from ours."""
    if not _blank(data.get("max_resolution")):
        mapping.put("resolution", str(data["max_resolution"]).replace(" ", ""), "max_resolution")
    optimizer = data.get("optimizer") or ("AdamW8bit" if data.get("use_8bit_adam") else None)
    if optimizer:
        name = str(optimizer).split(".")[-1]  # "pytorch_optimizer.CAME" -> "CAME"
        mapping.put("optimizer_type", name, "optimizer")
    if "LoRA_type" in data:
        lora_type = _map_lora_type(data["LoRA_type"])
        if lora_type is None:
            mapping.unmapped.append(f"LoRA_type: {data['LoRA_type']!r} is not supported (Standard and LoCon are)")
        else:
            mapping.touched.add("lora_type")
            mapping.values["lora_type"] = lora_type
    # Warmup: an explicit step count wins over the percentage field.
    warmup_steps = _number(data.get("lr_warmup_steps"))
    warmup_pct = _number(data.get("lr_warmup"))
    if warmup_steps and warmup_steps > 0:
        mapping.put("lr_warmup_steps", warmup_steps, "lr_warmup_steps")
    elif warmup_pct and warmup_pct > 0:
        mapping.put("lr_warmup_steps", warmup_pct / 100.0, "lr_warmup")
    attention = data.get("xformers")
    if not _blank(attention):
        xformers = attention is True or attention == "xformers"
        mapping.touched |= {"xformers", "sdpa"}
        mapping.values["xformers"] = xformers
        mapping.values["sdpa"] = (not xformers and attention != "none") or bool(data.get("sdpa"))


def looks_like_kohya_config(data: dict[str, Any]) -> bool:
    """kohya_ss GUI configs carry GUI-only keys and no format_version."""
    return "format_version" not in data and any(k in data for k in ("LoRA_type", "epoch", "max_resolution", "optimizer"))


def load_any_config(data: dict[str, Any]) -> tuple[TrainConfig, list[str]]:
    """Our own flat format, or a kohya_ss GUI config (mapped, with the unmapped keys listed)."""
    if looks_like_kohya_config(data):
        return import_kohya_config(data)
    return TrainConfig.from_dict(data), []


