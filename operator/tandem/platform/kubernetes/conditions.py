"""Conditions in the kstatus convention (Ready, Reconciling, Stalled), computed from one Outcome.

Flux, Argo CD and `kubectl wait` read these: Ready=True means done; Reconciling=True means work is in
progress and the resource will change on its own; Stalled=True means it will not progress without
someone fixing something (the reason and message say what).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Literal

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"

State = Literal["Ready", "Progressing", "Stalled"]


@dataclass(frozen=True)
class Outcome:
    """What the operator observed about a resource, in one word plus an explanation."""

    state: State
    reason: str
    message: str

    @classmethod
    def ready(cls, reason: str, message: str) -> Outcome:
        return cls("Ready", reason, message)

    @classmethod
    def progressing(cls, reason: str, message: str) -> Outcome:
        return cls("Progressing", reason, message)

    @classmethod
    def stalled(cls, reason: str, message: str) -> Outcome:
        return cls("Stalled", reason, message)


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions_for(
    outcome: Outcome, generation: int | None, previous: list[dict[str, Any]], now: str | None = None
) -> list[dict[str, Any]]:
    """The three conditions; lastTransitionTime only moves when a condition's status changes."""
    stamp = now or now_rfc3339()
    wanted = [
        (READY, outcome.state == "Ready"),
        (RECONCILING, outcome.state == "Progressing"),
        (STALLED, outcome.state == "Stalled"),
    ]
    before = {c.get("type"): c for c in previous}
    result = []
    for type_, is_true in wanted:
        status = "True" if is_true else "False"
        old = before.get(type_)
        transition = old["lastTransitionTime"] if old and old.get("status") == status else stamp
        result.append(
            {
                "type": type_,
                "status": status,
                "reason": outcome.reason,
                "message": outcome.message,
                "observedGeneration": generation,
                "lastTransitionTime": transition,
            }
        )
    return result


def condition(status: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in (status or {}).get("conditions", []) or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def is_ready(obj: dict[str, Any] | None) -> bool:
    if obj is None:
        return False
    ready = condition(obj.get("status"), READY)
    generation = obj.get("metadata", {}).get("generation")
    return bool(ready and ready.get("status") == "True" and ready.get("observedGeneration") == generation)
