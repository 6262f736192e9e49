"""Fields that only make sense with another setting: enabled or disabled as the form changes.

Each rule names a field and the condition (on the current form values) under which it can be
edited. Some fields also get a neutral value while disabled, as kohya_ss does, so a hidden
setting can never produce an error the user cannot reach. Fields that exist for one model family
only (SDXL) are hidden rather than disabled: see lora_gui.family.
"""

from __future__ import annotations

from typing import Any, Callable

from lora_gui.i18n import t
from lora_gui.panel_view import esc
from lora_gui.sysinfo import xformers_usable
from trainer.families.traits import known_traits

Values = dict[str, Any]  # form values, plus "_family": the model family ("" when unknown)


def _locon(v: Values) -> bool:
    return v.get("lora_type") == "LoCon"


def _multires(v: Values) -> bool:
    return v.get("noise_offset_type") == "Multires"


def _trains_text_encoder(v: Values) -> bool:
    """A text-encoder LoRA is trained: not 'UNet only', and its learning rate (blank = the learning rate) above 0."""
    if v.get("network_train_unet_only"):
        return False
    rate = v.get("text_encoder_lr")
    if rate is None or rate == "":
        rate = v.get("learning_rate")
    try:
        return float(rate) > 0
    except (TypeError, ValueError):
        return True


def _v2_switches_apply(family: str) -> bool:
    """v2 / v-parameterization mean something for the family (SD 1.x / 2.x), or it is not known yet."""
    traits = known_traits(family)
    return traits is None or traits.v2_switches


def _warmup_possible(v: Values) -> bool:
    """Whether the engine uses LR warmup: not with the constant scheduler (it refuses a warmup) nor the
    adafactor scheduler (it sets its own rate and ignores one). The Adafactor optimizer with any other
    scheduler warms up like every optimizer, so the page keeps the warmup for it."""
    return v.get("lr_scheduler") not in ("constant", "adafactor")


def _count(v: Values, name: str) -> int:
    try:
        return int(float(v.get(name) or 1))
    except (TypeError, ValueError):
        return 1


def _huber(v: Values) -> bool:
    return v.get("loss_type") in ("huber", "smooth_l1")


def _positive(v: Values, name: str) -> bool:
    try:
        return float(v.get(name) or 0) > 0
    except (TypeError, ValueError):
        return True


def _several_machines(v: Values) -> bool:
    return _count(v, "num_machines") > 1


ENABLED_WHEN: dict[str, Callable[[Values], bool]] = {
    "conv_dim": _locon,
    "conv_alpha": _locon,
    "lr_warmup_steps": _warmup_possible,
    "xformers": lambda v: xformers_usable(),
    "sdpa": lambda v: not v.get("xformers"),  # xformers replaces the attention SDPA would run
    "machine_rank": _several_machines,
    "main_process_ip": _several_machines,
    "main_process_port": lambda v: _several_machines(v) or _count(v, "num_processes") > 1,
    "multires_noise_iterations": _multires,
    "multires_noise_discount": _multires,
    "noise_offset": lambda v: not _multires(v),
    "v_parameterization": lambda v: bool(v.get("v2")),
    "lr_scheduler_num_cycles": lambda v: v.get("lr_scheduler") == "cosine_with_restarts",
    "lr_scheduler_power": lambda v: v.get("lr_scheduler") == "polynomial",
    "cache_latents_to_disk": lambda v: bool(v.get("cache_latents")),
    "min_bucket_reso": lambda v: bool(v.get("enable_bucket")) and not v.get("bucket_no_upscale"),
    "max_bucket_reso": lambda v: bool(v.get("enable_bucket")) and not v.get("bucket_no_upscale"),
    "full_fp16": lambda v: v.get("mixed_precision") == "fp16",
    "dynamo_backend": lambda v: bool(v.get("torch_compile")),
    "full_bf16": lambda v: v.get("mixed_precision") == "bf16",
    "persistent_data_loader_workers": lambda v: (v.get("max_data_loader_n_workers") or 0) > 0,
    "network_train_text_encoder_1": _trains_text_encoder,
    "network_train_text_encoder_2": _trains_text_encoder,
    "v2": lambda v: _v2_switches_apply(v.get("_family")),
    "ema_start_step": lambda v: _positive(v, "ema_decay"),
    "ema_update_every": lambda v: _positive(v, "ema_decay"),
    "ema_save_non_ema": lambda v: _positive(v, "ema_decay"),
    "conditioning_data_dir": lambda v: bool(v.get("masked_loss")) and not v.get("alpha_mask"),
    "huber_schedule": _huber,
    "huber_c": _huber,
    "huber_scale": _huber,
    "ip_noise_gamma_random_strength": lambda v: _positive(v, "ip_noise_gamma"),
    "loraplus_unet_lr_ratio": lambda v: not v.get("network_train_text_encoder_only"),
    "loraplus_text_encoder_lr_ratio": _trains_text_encoder,
}

# Value a disabled field is set to (only where a leftover value would be an error or a surprise).
VALUE_WHEN_DISABLED: dict[str, Any] = {
    "lr_warmup_steps": 0,
    "xformers": False,
    "machine_rank": 0,
    "v2": False,
    "v_parameterization": False,
    "full_fp16": False,
    "full_bf16": False,
    "persistent_data_loader_workers": False,
}


def disabled_notes(values: Values, lang: str) -> dict[str, str]:
    """HTML lines under disabled fields whose value the page resets, saying why (the engine agrees)."""
    if _warmup_possible(values):
        return {}
    if values.get("lr_scheduler") == "adafactor":
        text = t("form.warmup_off_adafactor", lang)
    else:
        text = t("form.warmup_off_constant", lang)
    return {"lr_warmup_steps": f'<div class="lg-note" data-note="warmup_off">{esc(text)}</div>'}


def dependent_fields() -> list[str]:
    return list(ENABLED_WHEN)


def field_states(values: Values) -> dict[str, tuple[bool, Any]]:
    """field -> (enabled, value to set or None to keep)."""
    states: dict[str, tuple[bool, Any]] = {}
    for name, condition in ENABLED_WHEN.items():
        enabled = bool(condition(values))
        new_value = None
        if not enabled and name in VALUE_WHEN_DISABLED and values.get(name) != VALUE_WHEN_DISABLED[name]:
            new_value = VALUE_WHEN_DISABLED[name]
        states[name] = (enabled, new_value)
    return states
