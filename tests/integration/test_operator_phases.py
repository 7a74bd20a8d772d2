"""status.phase is set for every outcome (issue 14, around the CRDs): Failed whenever Stalled, Terminating
while the resource is being deleted, also on the paths no kind's status function sees (a refused child,
a missing reference, a cleanup). Bug: `kubectl get` showed an empty PHASE for most Stalled objects.

The emulator stores the objects, sets deletionTimestamp on a delete while a finalizer is held, and runs no
Job controller (tests.cluster_controllers finishes the cleanup Job as failed).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tandem.platform.kubernetes.api import KubeApi
from tandem.platform.kubernetes.conditions import Outcome
from tandem.platform.kubernetes.phases import phase
from tandem.platform.kubernetes.reconciler import Reconciler
from tandem.platform.kubernetes.settings import OperatorSettings
from tests.cluster_controllers import finish_jobs
from tests.emulator.server import Emulator
from tests.integration.conftest import condition
from tests.integration.test_operator_refused_children import CASES, NS, RefusingApi, resource

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("child", sorted(CASES))
async def test_a_refused_child_gives_phase_failed(emulator: Emulator, kube: KubeApi, child: str) -> None:
    owner, message = CASES[child]
    emulator.create(owner)
    reconciler = Reconciler(RefusingApi(kube, child, 422, message), OperatorSettings())
    plural = owner["kind"].lower() + "s"
    await reconciler.reconcile(emulator.get(plural, NS, owner["metadata"]["name"]) or {})
    obj = emulator.get(plural, NS, owner["metadata"]["name"]) or {}
    assert condition(obj, "Stalled")["reason"] == "ChildRefused"
    assert obj["status"]["phase"] == "Failed"


async def test_a_missing_reference_gives_phase_failed(emulator: Emulator, kube: KubeApi) -> None:
    """Stalled by the resolver (the reference names no KnowledgeBase), before any status function runs."""
    emulator.create(resource("HybridEndpoint", "assistant", adapters=[], knowledgeBases=[{"name": "nope"}]))
    await Reconciler(kube, OperatorSettings()).reconcile(
        emulator.get("hybridendpoints", NS, "assistant") or {}
    )
    obj = emulator.get("hybridendpoints", NS, "assistant") or {}
    assert condition(obj, "Stalled")["reason"] == "KnowledgeBaseNotFound"
    assert obj["status"]["phase"] == "Failed"


async def test_phase_is_terminating_while_cleanup_runs_and_fails(emulator: Emulator, kube: KubeApi) -> None:
    owner = resource("KnowledgeBase", "handbook", sources=[{"name": "a", "inline": {"documents": [
        {"id": "x", "text": "y"}]}}])  # fmt: skip
    owner["metadata"]["finalizers"] = ["tandem.dev/finalizer"]  # as kopf adds it
    emulator.create(owner)
    rt = emulator.resource_type("knowledgebases")
    emulator.store.delete(rt, NS, "handbook")
    reconciler = Reconciler(kube, OperatorSettings())

    def body() -> dict[str, Any]:
        return emulator.get("knowledgebases", NS, "handbook") or {}

    assert body()["metadata"]["deletionTimestamp"]
    assert (await reconciler.finalize(body())).reason == "CleaningUp"
    assert body()["status"]["phase"] == "Terminating"
    assert condition(body(), "Ready")["reason"] == "CleaningUp"

    def fail_jobs() -> None:  # the Job controller gives up (sync HTTP: off the emulator's event loop)
        with httpx.Client(base_url=emulator.url, timeout=10) as client:
            finish_jobs(client, NS, failed=True)

    await asyncio.to_thread(fail_jobs)
    assert (await reconciler.finalize(body())).reason == "CleanupFailed"
    # Stalled, yet Terminating: the deletion is what is under way, the condition says it is stuck.
    assert body()["status"]["phase"] == "Terminating"
    assert condition(body(), "Stalled")["reason"] == "CleanupFailed"


@pytest.mark.parametrize("kind", ["KnowledgeBase", "AdapterTraining", "HybridEndpoint", "Evaluation"])
def test_every_outcome_maps_to_a_phase_the_schema_allows(kind: str) -> None:
    from tandem.api.kinds import by_kind

    allowed = set(by_kind(kind).status.model_fields["phase"].annotation.__args__[0].__args__)  # type: ignore
    live: dict[str, Any] = {"metadata": {}}
    gone: dict[str, Any] = {"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}
    outcomes = [Outcome.ready("R", ""), Outcome.stalled("S", ""), Outcome.progressing("P", "")]
    for outcome in outcomes:
        for body in (live, gone):
            for proposed in (None, "Pending", "Failed"):
                assert phase(kind, body, outcome, proposed) in allowed
    assert phase(kind, live, Outcome.stalled("S", ""), "Running") == "Failed"
    assert phase(kind, gone, Outcome.ready("R", ""), None) == "Terminating"
    assert phase(kind, live, Outcome.progressing("P", ""), None) == "Pending"
