"""A field error as the API server reports it: the one type every admission step returns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cause:
    """One field error, as in ``Status.details.causes[]`` of the apiserver."""

    field: str  # e.g. "spec.chunking.size" or "spec.sources[0].url"
    message: str  # without the field prefix, e.g. "Required value"
    reason: str = "FieldValueInvalid"  # FieldValueRequired, FieldValueNotSupported, ...

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def as_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}
