"""Errors a user can act on. The engine turns them into `error` events (code, message, field, hint)."""

from __future__ import annotations

from typing import Any, Optional


class TrainingError(Exception):
    """`params` fill the UI's translated template for `code` (as ValidationIssue.params do)."""

    def __init__(self, code: str, message: str, *, field: Optional[str] = None, hint: Optional[str] = None,
                 params: Optional[dict[str, Any]] = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.hint = hint
        self.params = params or {}

    def event_fields(self) -> dict:
        return {"code": self.code, "message": self.message, "field": self.field, "hint": self.hint,
                "params": self.params}
