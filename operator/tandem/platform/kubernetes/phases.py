"""status.phase from the outcome, the same way for every kind.

The per-kind status functions propose a phase for the paths they see (Indexing, Running...), but many
outcomes never reach them: an invalid spec, a refused child, a missing reference, a cleanup. Without this
the phase of those objects was left blank or stale (`kubectl get` showed an empty PHASE for most Stalled
objects). One rule, applied to every status write:

- deletionTimestamp set: Terminating (the Ready condition says CleaningUp or CleanupFailed);
- Stalled: Failed (the Stalled condition says why);
- Ready: the kind's ready phase (Ready for what keeps serving, Succeeded for a run that finished);
- otherwise what the kind proposed, else Pending.
"""

from __future__ import annotations

from typing import Any

from .conditions import Outcome

# A run that finishes is Succeeded; something that keeps serving is Ready.
READY_PHASE = {
    "KnowledgeBase": "Ready",
    "AdapterTraining": "Succeeded",
    "HybridEndpoint": "Ready",
    "Evaluation": "Succeeded",
}


def phase(kind: str, body: dict[str, Any], outcome: Outcome, proposed: str | None) -> str:
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    if outcome.state == "Stalled":
        return "Failed"
    if outcome.state == "Ready":
        return READY_PHASE[kind]
    return proposed if proposed not in (None, "Failed", "Terminating") else "Pending"
