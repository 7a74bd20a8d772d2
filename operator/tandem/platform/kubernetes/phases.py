"""status.phase from the outcome, the same way for every kind, and the summary fields derived from the
other figures (a HybridEndpoint's READY 1/3 and its scale selector).

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
from .ownership import Owner

# A run that finishes is Succeeded; something that keeps serving is Ready.
READY_PHASE = {
    "KnowledgeBase": "Ready",
    "AdapterTraining": "Succeeded",
    "HybridEndpoint": "Ready",
    "Evaluation": "Succeeded",
    "ServingPool": "Ready",
}


def phase(kind: str, body: dict[str, Any], outcome: Outcome, proposed: str | None) -> str:
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    if outcome.state == "Stalled":
        return "Failed"
    if outcome.state == "Ready":
        return READY_PHASE[kind]
    return proposed if proposed not in (None, "Failed", "Terminating") else "Pending"


def summary(kind: str, body: dict[str, Any], outcome: Outcome, figures: dict[str, Any]) -> dict[str, Any]:
    """What every status write carries besides the kind's figures: the phase; for a HybridEndpoint, READY
    as kubectl shows a Deployment's (ready/desired vLLM pods, when they were observed) and the vLLM pods'
    label selector, which the scale subresource reports (labelSelectorPath) so that a
    HorizontalPodAutoscaler aimed at the endpoint can find the pods it measures."""
    out: dict[str, Any] = {"phase": phase(kind, body, outcome, figures.get("phase"))}
    if kind == "HybridEndpoint":
        labels = Owner.from_body(body).labels("vllm")  # the vLLM Deployment's selector (its planner's)
        out["selector"] = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        if figures.get("replicas") is not None and figures.get("readyReplicas") is not None:
            out["ready"] = f"{figures['readyReplicas']}/{figures['replicas']}"
    return out
