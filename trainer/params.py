"""The one parameter base: how a parameter is declared, read from JSON, and offered on a command line.

A parameter set is a dataclass whose fields are declared with `param()`; the field metadata (help,
label, tab/section, choices, range, widget, step, sd_scripts name, extra checks) is the only place a
parameter is described. `TrainConfig`, the slider spec and the tool options all use it:

- `read_values()` checks JSON values (types, choices, ranges, the field's own check) and lists every
  problem by field in one `ParamError`; it also reads and migrates `format_version`.
- `add_arguments()` builds argparse flags (type, choices, range, help) from the same metadata.
- `field_specs()` gives the form description the GUI renders.
- `same_as()` declares a field as another set's field (same help, choices, range), with its own default.

Torch-free: the web process imports it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Union

KINDS = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict}
UNSET: Any = dataclasses.MISSING


def param(
    default: Any = UNSET,
    help: str = "",
    *,
    tab: str = "",
    section: str = "basic",
    label: Optional[str] = None,
    choices: Optional[tuple] = None,
    min: Optional[float] = None,
    max: Optional[float] = None,
    widget: Optional[str] = None,
    step: Optional[float] = None,
    sd_scripts: Union[bool, str] = True,
    check: Optional[Callable[[Any], None]] = None,
    convert: Optional[Callable[[Any], Any]] = None,
    factory: Any = UNSET,
    **extra: Any,
) -> Any:
    """Declare a parameter with the metadata the forms, the CLIs and the checks use.

    `check(value)` raises ValueError for a value the type and range allow but the parameter does not;
    `convert(raw)` replaces the scalar type check for lists and objects (raises ValueError).
    `sd_scripts` says how a TrainConfig field appears on an sd-scripts command line (train_network.py):
    True: `--<name>` as is; False: sd-scripts has no such option; "network_args": inside
    `--network_args name=value`; "network_args_if_set": the same, left out at its default (off); "network_module": chooses `--network_module`; "unless_default":
    given only when not the default (sd-scripts refuses the default value); "file": the text goes
    into a file whose path is given; "implied": no option of its own, it decides which other options
    are given (fields it disables are left out); "launch": an `accelerate launch` option, before the script.
    Other keywords (`required`, `nargs`, `item`, `metavar`, `form_default`) describe the command-line
    flag and the form; see argument_options() and field_spec()."""
    meta = {"help": help, "tab": tab, "section": section, "label": label, "choices": choices, "min": min,
            "max": max, "widget": widget, "step": step, "sd_scripts": sd_scripts, "check": check,
            "convert": convert, **extra}
    if factory is not UNSET:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


PLACEMENT = ("tab", "section", "form_default")

# What the file picker beside a path parameter offers (meta `accept`, read by lora_gui/file_browser.py):
# FOLDER, file name suffixes, or both. A path parameter without `accept` offers folders and every file.
FOLDER = ("folder",)
LORA_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")


def same_as(source: type, name: str, default: Any = UNSET, *, factory: Any = UNSET, **overrides: Any) -> Any:
    """A field declared as `source`'s field `name`: the same help, choices, range and checks.

    `default` (or `factory`) replaces the source's default; `overrides` may only place the field
    (tab, section, the form's start value) or narrow its range (a larger min, a smaller max), never
    redefine it."""
    f = field_of(source, name)
    meta = dict(f.metadata)
    for key, value in overrides.items():
        if key == "min" and (meta["min"] is None or value >= meta["min"]) or \
                key == "max" and (meta["max"] is None or value <= meta["max"]) or key in PLACEMENT:
            meta[key] = value
        else:
            raise TypeError(f"same_as({source.__name__}.{name}): {key}={value!r} would redefine the parameter")
    meta["same_as"] = (source, name)
    if factory is not UNSET:
        return field(default_factory=factory, metadata=meta)
    return field(default=f.default if default is UNSET else default, metadata=meta)


def field_of(cls: type, name: str) -> dataclasses.Field:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise KeyError(f"{cls.__name__} has no parameter {name!r}")


def shared_fields(cls: type) -> dict[str, tuple[type, str]]:
    """Fields of `cls` declared with same_as(): name -> (source class, source field name)."""
    return {f.name: f.metadata["same_as"] for f in dataclasses.fields(cls) if "same_as" in f.metadata}


def field_type(f: dataclasses.Field) -> tuple[type, bool]:
    """The field's base type and whether None is allowed, from its annotation string."""
    ann = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    optional = ann.startswith("Optional[")
    if optional:
        ann = ann[len("Optional["):-1]
    return KINDS[ann.split("[")[0]], optional


def default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


# ---- reading JSON values ------------------------------------------------------------------------------
@dataclass
class FieldError:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class ParamError(ValueError):
    """Values that are not a valid parameter set: `errors` names each bad field."""

    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))

    @property
    def issues(self) -> list[Any]:
        """The errors as findings (code "bad_value"), for pages that list findings."""
        from trainer.findings import error

        return [error(e.field, "bad_value", e.message) for e in self.errors]


def coerce_value(f: dataclasses.Field, raw: Any) -> Any:
    """Check one JSON value against the field's type, choices, range and own check."""
    kind, optional = field_type(f)
    meta = f.metadata
    if raw is None or (optional and raw == ""):
        if optional:
            return None
        raise ValueError("must not be empty")
    value = meta["convert"](raw) if meta.get("convert") else _scalar(kind, raw)
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        shown = ", ".join(str(c) for c in choices if c is not None)
        raise ValueError(f"must be one of {shown}; got {raw!r}")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo:
        raise ValueError(f"must be at least {lo}, got {raw!r}")
    if hi is not None and value > hi:
        raise ValueError(f"must be at most {hi}, got {raw!r}")
    if meta.get("check"):
        meta["check"](value)
    return value


def _scalar(kind: type, raw: Any) -> Any:
    if kind is bool:
        if not isinstance(raw, bool):
            raise ValueError(f"must be true or false, got {raw!r}")
        return raw
    if kind is int:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError(f"must be a whole number, got {raw!r}")
        return int(raw)
    if kind is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise ValueError(f"must be a number, got {raw!r}")
        return float(raw)
    if kind is str:
        if not isinstance(raw, str):
            raise ValueError(f"must be text, got {raw!r}")
        return raw
    raise ValueError(f"{kind.__name__} parameters need a converter")  # pragma: no cover - a declaration bug


Migration = Callable[[dict[str, Any]], dict[str, Any]]


def read_values(cls: type, data: dict[str, Any], *, version: int, migrations: Optional[dict[int, Migration]] = None,
                partial: bool = True, unknown: str = "unknown parameter") -> dict[str, Any]:
    """The checked values of `data` for the parameter set `cls`, or ParamError listing every bad field.

    `format_version` (when present) must be a whole number no newer than `version`; data of an older
    version goes through `migrations[v]` (v -> v + 1) first. With partial=False every field must be given."""
    errors: list[FieldError] = []
    raw_version = data.get("format_version", version)
    if isinstance(raw_version, bool) or not isinstance(raw_version, int) or raw_version > version:
        errors.append(FieldError("format_version", f"unsupported format_version {raw_version!r}; "
                                                   f"this app reads {version}"))
    else:
        for v in range(raw_version, version):
            data = (migrations or {}).get(v, dict)(data)
    known = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key == "format_version":
            continue
        if key not in known:
            errors.append(FieldError(key, unknown))
            continue
        try:
            values[key] = coerce_value(known[key], raw)
        except ValueError as exc:
            errors.append(FieldError(key, str(exc)))
    if not partial:
        errors.extend(FieldError(n, "missing") for n in known if n not in data)
    if errors:
        raise ParamError(errors)
    return values


# ---- command lines -------------------------------------------------------------------------------------
def add_arguments(parser: Any, cls: type, names: Optional[Iterable[str]] = None, *, given_only: bool = False) -> None:
    """One `--<name>` flag per field of `cls` (all, or `names`), typed, ranged and helped by the metadata.

    given_only: every flag defaults to None (the caller applies only flags that were given, over a
    spec file) and a bool flag has a --no- form; otherwise a flag defaults to the field's default and
    a bool is a store_true switch."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in names if names is not None else fields:
        parser.add_argument(f"--{name}", **argument_options(fields[name], given_only=given_only))


def argument_options(f: dataclasses.Field, *, given_only: bool = False) -> dict[str, Any]:
    """The keyword arguments of parser.add_argument for one field."""
    meta = f.metadata
    kind, _ = field_type(f)
    default = default_of(f)
    shown = None if kind is bool and not given_only else default
    options: dict[str, Any] = {"help": _flag_help(meta["help"], shown) or None}
    if kind is bool:
        options["action"] = argparse.BooleanOptionalAction if given_only else "store_true"
    else:
        item = KINDS[meta["item"]] if meta.get("item") else kind
        if item in (int, float):
            options["type"] = ranged(item, meta.get("min"), meta.get("max"))
        if meta.get("choices") is not None:
            options["choices"] = [c for c in meta["choices"] if c is not None]
        if meta.get("nargs") or kind is list:
            options["nargs"] = meta.get("nargs") or "+"
    if meta.get("metavar"):
        options["metavar"] = meta["metavar"]
    if meta.get("required"):
        options["required"] = True
    elif not given_only and kind is not bool:
        options["default"] = default
    if given_only:
        options["default"] = None
    return options


def _flag_help(text: str, default: Any) -> str:
    shown = "" if default in (None, "", [], {}) else f" (default: {default})"
    return (text + shown).strip()


def ranged(kind: type, lo: Optional[float], hi: Optional[float]) -> Callable[[str], Any]:
    """An argparse type: a number of `kind` within [lo, hi] (either bound may be open)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole number' if kind is int else 'number'}") \
                from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if lo is not None and value < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo:g}, got {text}")
        if hi is not None and value > hi:
            raise argparse.ArgumentTypeError(f"must be at most {hi:g}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


# ---- forms ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldSpec:
    """What a form needs to render and read back one parameter."""

    name: str
    kind: type  # str, int, float, bool, list or dict
    optional: bool
    default: Any
    tab: str
    section: str
    choices: Optional[tuple]
    minimum: Optional[float]
    maximum: Optional[float]
    step: Optional[float]
    widget: Optional[str]
    accept: tuple = ()  # path parameters: what their picker offers (FOLDER and/or suffixes)

    @property
    def wide(self) -> bool:
        """Paths and free text take a whole row."""
        return self.widget in ("path", "textarea")


def field_spec(f: dataclasses.Field) -> FieldSpec:
    meta = f.metadata
    kind, optional = field_type(f)
    default = meta["form_default"] if "form_default" in meta else default_of(f)
    return FieldSpec(name=f.name, kind=kind, optional=optional, default=default, tab=meta.get("tab") or "",
                     section=meta.get("section") or "basic", choices=meta.get("choices"), minimum=meta.get("min"),
                     maximum=meta.get("max"), step=meta.get("step"), widget=meta.get("widget"),
                     accept=tuple(meta.get("accept") or ()))


def field_specs(cls: type) -> dict[str, FieldSpec]:
    """The form description of every field of `cls`, in declaration order."""
    return {f.name: field_spec(f) for f in dataclasses.fields(cls)}
