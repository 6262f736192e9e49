"""The one error type of the LoRA tools: something the user can fix (bad input, bad option, bad path)."""

from __future__ import annotations

from typing import Optional


class ToolError(Exception):
    def __init__(self, message: str, *, hint: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"
