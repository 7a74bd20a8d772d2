"""The one error a plan raises when a spec cannot be realised as written."""

from __future__ import annotations


class PlanError(ValueError):
    """The spec cannot be realised as written; `reason` is a CamelCase condition reason, the message names
    the field to change."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
