"""The base model's family as the form sees it, and what depends on it.

The family comes from the model path: a quick-pick model id is known without looking (it may not
be downloaded yet), anything else is detected from its files (torch-free). "" means unknown: an
empty or mistyped path, or a pickle checkpoint (.ckpt), whose family the engine reads when it loads.

Fields of one family only (SDXL's; trainer.families.traits says which) are shown only for that family.
While hidden they do not count: the config the page checks, saves and runs holds their defaults, so a
hidden setting can never cause an error the user cannot see (and switching back to SDXL shows the
values the fields kept).
"""

from __future__ import annotations

from typing import Any, Optional

from lora_gui import engine
from trainer.config import TrainConfig
from trainer.families.traits import SD1, FamilyTraits, family_only_fields, field_applies, known_traits

# quick pick -> (model id, family, v2, v_parameterization); "custom" leaves everything as it is
QUICK_PICKS: dict[str, Optional[tuple[str, str, bool, bool]]] = {
    "custom": None,
    "sd15": ("stable-diffusion-v1-5/stable-diffusion-v1-5", "sd1", False, False),
    "sd21_512": ("stabilityai/stable-diffusion-2-1-base", "sd2", True, False),
    "sd21_768v": ("stabilityai/stable-diffusion-2-1", "sd2", True, True),
    "sdxl": ("stabilityai/stable-diffusion-xl-base-1.0", "sdxl", False, False),
}

# Fields shown for some families only (SDXL's), from the family traits.
FAMILY_FIELDS: tuple[str, ...] = family_only_fields()
# Fields whose default follows the family (switched when the family changes, if not edited).
FAMILY_DEFAULT_FIELDS: tuple[str, ...] = ("resolution", "bucket_reso_steps")

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


def traits_or_default(family: str) -> FamilyTraits:
    """The family's traits; SD 1.x's (which the config defaults are made for) while it is unknown."""
    return known_traits(family) or SD1


def field_shown(name: str, family: str) -> bool:
    return field_applies(name, family)


def hidden_fields(family: str) -> list[str]:
    return [name for name in FAMILY_FIELDS if not field_shown(name, family)]


def v2_flags(family: str, v_parameterization: Optional[bool]) -> tuple[bool, Optional[bool]]:
    """The v2 / v-parameterization switches for a detected model: both off where they do not apply (SDXL)."""
    traits = traits_or_default(family)
    if not traits.v2_switches:
        return False, False
    return traits.v2, v_parameterization


def family_defaults(family: str) -> dict[str, Any]:
    """The form values of FAMILY_DEFAULT_FIELDS that suit `family`."""
    traits = traits_or_default(family)
    return {"resolution": str(traits.default_resolution), "bucket_reso_steps": traits.bucket_reso_steps}


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

    - to a family with its own defaults (SDXL): a field still at the config default gets the family's;
      an edited one is kept (and named in the note, since the family usually wants another value).
    - from such a family to one without (SD 1.x/2.x): a field this page switched, and still at that value, goes back.
    """
    if new_family == old_family or not new_family:
        return {}, auto, []
    standard = {name: getattr(_DEFAULTS, name) for name in FAMILY_DEFAULT_FIELDS}
    wanted = family_defaults(new_family)
    if wanted != standard:
        return _switch_to_family_defaults(values, standard, wanted)
    if old_family and family_defaults(old_family) != standard:
        return _switch_back(values, standard, auto)
    return {}, auto, []


def _switch_to_family_defaults(values: dict[str, Any], standard: dict[str, Any], wanted: dict[str, Any]):
    changes: dict[str, Any] = {}
    notes: list[dict[str, Any]] = []
    for name, family_default in wanted.items():
        current = values.get(name)
        if _same(current, standard[name]):
            changes[name] = family_default
            notes.append(dict(field=name, old=current, new=family_default, kept=False))
        elif not _same(current, family_default):
            notes.append(dict(field=name, old=current, new=family_default, kept=True))
    return changes, dict(changes), notes


def _switch_back(values: dict[str, Any], standard: dict[str, Any], auto: dict[str, Any]):
    changes: dict[str, Any] = {}
    notes: list[dict[str, Any]] = []
    for name, value in auto.items():
        if name in standard and _same(values.get(name), value):
            changes[name] = standard[name]
            notes.append(dict(field=name, old=value, new=standard[name], kept=False))
    return changes, {}, notes


def _same(a: Any, b: Any) -> bool:
    if isinstance(b, str):
        return str(a or "").strip().replace(" ", "") == b
    try:
        return a is not None and a != "" and float(a) == float(b)
    except (TypeError, ValueError):
        return False
