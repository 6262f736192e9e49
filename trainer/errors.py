"""Errors a user can act on. The engine turns them into `error` events (code, message, field, hint)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from trainer.findings import Finding


class TrainingError(Exception):
    """`params` fill the UI's translated template for `code` (as a Finding's params do)."""

    def __init__(self, code: str, message: str, *, field: Optional[str] = None, hint: Optional[str] = None,
                 params: Optional[dict[str, Any]] = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.hint = hint
        self.params = params or {}

    @classmethod
    def from_finding(cls, finding: "Finding") -> "TrainingError":
        return cls(finding.code, finding.message, field=finding.field, hint=finding.hint, params=finding.params)

    def event_fields(self) -> dict:
        return {"code": self.code, "message": self.message, "field": self.field, "hint": self.hint,
                "params": self.params}
