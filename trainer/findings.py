"""The one finding type: a problem a check found, for the page, the CLIs and the event stream.

The training pre-flight (trainer.preflight), the slider spec checks and the engine's warning/error
events all report `Finding`s. `code` keys the UI's translation catalog and `params` fill its template;
a param that names a config field holds the field's name (the page shows its translated label), never
an English label. `message` is the English text (what is wrong, then what to do) and `hint` an optional
extra suggestion. Errors block the run; warnings do not.

Params that name config fields say so by their key: `field` or `<what>_field` holds one field name,
`fields` or `<what>_fields` a list of them (e.g. `caption_fields=["shuffle_caption"]`); the page renders
them as the fields' labels in its language (lora_gui.i18n), so renaming a label cannot break a page.

Torch-free: the web process imports it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import KW_ONLY, dataclass
from typing import Any, Iterable, Optional

ERROR, WARNING = "error", "warning"
LEVELS = (ERROR, WARNING)


@dataclass
class Finding:
    field: str  # the field to highlight ("" when none applies)
    level: str  # ERROR | WARNING (the severity)
    code: str
    message: str
    _: KW_ONLY
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    hint: Optional[str] = None

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"finding level must be one of {LEVELS}, got {self.level!r}")

    @property
    def is_error(self) -> bool:
        return self.level == ERROR

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def event_fields(self) -> dict[str, Any]:
        """The fields of the `warning` / `error` event (trainer.events.EVENT_FIELDS) that reports it:
        `events.emit(finding.level, **finding.event_fields())`."""
        fields = {"code": self.code, "message": self.message, "field": self.field, "params": self.params}
        if self.is_error:
            fields["hint"] = self.hint
        return fields


def names_fields(param: str) -> bool:
    """Whether a param's value is a config field name (or a list of them), by the convention above."""
    return param in ("field", "fields") or param.endswith(("_field", "_fields"))


def error(field: str, code: str, message: str, *, hint: Optional[str] = None, **params: Any) -> Finding:
    return Finding(field, ERROR, code, message, params=params, hint=hint)


def warning(field: str, code: str, message: str, *, hint: Optional[str] = None, **params: Any) -> Finding:
    return Finding(field, WARNING, code, message, params=params, hint=hint)


def errors_of(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.is_error]


def warnings_of(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if not f.is_error]


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.is_error for f in findings)
