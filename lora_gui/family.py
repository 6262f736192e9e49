"""The base model's family as the form sees it, and what depends on it.

The family comes from the model path: a quick-pick model id is known without looking (it may not
be downloaded yet), anything else is detected from its files (torch-free). "" means unknown: an
empty or mistyped path, or a pickle checkpoint (.ckpt), whose family the engine reads when it loads.

SDXL-only fields are shown only for an SDXL model. While hidden they do not count: the config the
page checks, saves and runs holds their defaults, so a hidden setting can never cause an error the
user cannot see (and switching back to SDXL shows the values the fields kept).
"""

from __future__ import annotations

from typing import Any, Optional

from lora_gui import engine
from trainer.config import TrainConfig

# quick pick -> (model id, family, v2, v_parameterization); "custom" leaves everything as it is
QUICK_PICKS: dict[str, Optional[tuple[str, str, bool, bool]]] = {
    "custom": None,
    "sd15": ("stable-diffusion-v1-5/stable-diffusion-v1-5", "sd1", False, False),
    "sd21_512": ("stabilityai/stable-diffusion-2-1-base", "sd2", True, False),
    "sd21_768v": ("stabilityai/stable-diffusion-2-1", "sd2", True, True),
    "sdxl": ("stabilityai/stable-diffusion-xl-base-1.0", "sdxl", False, False),
}

SDXL_ONLY: tuple[str, ...] = ("network_train_text_encoder_1", "network_train_text_encoder_2", "no_half_vae",
                              "cache_text_encoder_outputs", "cache_text_encoder_outputs_to_disk")

# field -> (SD 1.x/2.x default, SDXL default): switched when the family changes, if not edited
FAMILY_DEFAULTS: dict[str, tuple[Any, Any]] = {"resolution": ("512", "1024"), "bucket_reso_steps": (64, 32)}

_DEFAULTS = TrainConfig()


def quick_pick_for(path: str) -> str:
    """The quick-pick key whose model id is `path`, else "custom"."""
    path = (path or "").strip()
    for key, pick in QUICK_PICKS.items():
        if pick is not None and pick[0] == path:
            return key
    return "custom"


def model_family(path: str) -> str:
    """"sd1", "sd2", "sdxl", or "" when it cannot be told (yet)."""
    pick = QUICK_PICKS.get(quick_pick_for(path))
    if pick is not None:
        return pick[1]
    detection = engine.detect_model(path or "")
    if detection is None or not detection.ok:
        return ""
    return detection.family or ""


def field_shown(name: str, family: str) -> bool:
    return name not in SDXL_ONLY or family == "sdxl"


def hidden_fields(family: str) -> list[str]:
    return [name for name in SDXL_ONLY if not field_shown(name, family)]


def effective(data: dict[str, Any]) -> dict[str, Any]:
    """A flat config dict with the fields hidden for its model's family set to their defaults."""
    family = model_family(str(data.get("pretrained_model_name_or_path") or ""))
    hidden = hidden_fields(family)
    if not hidden:
        return data
    return dict(data, **{name: getattr(_DEFAULTS, name) for name in hidden})


def defaults_for_family(old_family: str, new_family: str, values: dict[str, Any],
                        auto: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """What changes when the known family goes from `old_family` to `new_family`.

    `auto` holds the values this function set earlier (field -> value). Returns (new field values,
    new `auto`, one entry per field for the note: field, old, new, kept).

    - to SDXL: a field still at its SD 1.x/2.x default gets the SDXL default; an edited one is kept
      (and named in the note, since SDXL usually wants another value).
    - from SDXL to SD 1.x/2.x: a field this page switched, and still at that value, goes back.
    """
    changes: dict[str, Any] = {}
    notes: list[dict[str, Any]] = []
    if new_family == old_family or not new_family:
        return changes, auto, notes
    if new_family == "sdxl":
        auto = {}
        for name, (sd_default, sdxl_default) in FAMILY_DEFAULTS.items():
            current = values.get(name)
            if _same(current, sd_default):
                changes[name] = sdxl_default
                auto[name] = sdxl_default
                notes.append(dict(field=name, old=current, new=sdxl_default, kept=False))
            elif not _same(current, sdxl_default):
                notes.append(dict(field=name, old=current, new=sdxl_default, kept=True))
        return changes, auto, notes
    if old_family == "sdxl":
        for name, value in auto.items():
            if name in FAMILY_DEFAULTS and _same(values.get(name), value):
                changes[name] = FAMILY_DEFAULTS[name][0]
                notes.append(dict(field=name, old=value, new=FAMILY_DEFAULTS[name][0], kept=False))
        return changes, {}, notes
    return changes, auto, notes


def _same(a: Any, b: Any) -> bool:
    if isinstance(b, str):
        return str(a or "").strip().replace(" ", "") == b
    try:
        return a is not None and a != "" and float(a) == float(b)
    except (TypeError, ValueError):
        return False
