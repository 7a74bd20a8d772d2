"""A child the API server refuses (a 422 from validation, a 403 from an admission webhook or policy) makes
its owner Stalled with the API's message and a Warning event, and is not sent again on every resync.

The refusals are the API server's answers to the operator's apply; the emulator serves everything else.
What the emulator does not do here: run admission webhooks or ValidatingAdmissionPolicies itself, so the
refusal is injected at the client (`RefusingApi`), with the message shape a real API server sends.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from tandem.platform.kubernetes.api import ApiError, KubeApi
from tandem.platform.kubernetes.reconciler import Reconciler
from tandem.platform.kubernetes.settings import OperatorSettings
from tests.emulator.server import Emulator
from tests.integration.conftest import condition
from tests.manifests import example

pytestmark = pytest.mark.integration
NS = "team"


class RefusingApi(KubeApi):
    """The real client against the emulator, except that applying a child of `kind` gets `status`."""

    def __init__(self, inner: KubeApi, kind: str, status: int, message: str) -> None:
        self.__dict__.update(inner.__dict__)
        self.kind, self.status, self.message = kind, status, message
        self.refused: list[str] = []

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        if obj["kind"] == self.kind:
            self.refused.append(obj["metadata"]["name"])
            reason = "Invalid" if self.status == 422 else "Forbidden"
            raise ApiError(self.status, reason, self.message)
        return await super().apply(obj)


def resource(kind: str, name: str, **spec: Any) -> dict[str, Any]:
    obj = copy.deepcopy(example(kind))
    obj["metadata"].update(namespace=NS, name=name)
    obj["spec"].update(spec)
    return obj


INLINE = [{"name": "a", "inline": {"documents": [{"id": "x", "text": "y"}]}}]
CASES = {
    # child kind -> (owner, the API server's message)
    "Job": (
        resource(
            "KnowledgeBase",
            "handbook",
            sources=[{"name": "a", "inline": {"documents": [{"id": "x", "text": "y"}]}}],
        ),
        'Job.batch "handbook-ingest-1" is invalid: spec.template.spec.containers[0].resources.limits: '
        'Invalid value: "8 gigs": quantities must match the regular expression',
    ),
    "CronJob": (
        resource(
            "KnowledgeBase",
            "handbook",
            sources=INLINE,
            refresh={"schedule": "0 3 * * *"},
        ),
        'CronJob.batch "handbook-refresh" is invalid: spec.schedule: Invalid value: "61 25 * * *"',
    ),
    "RayJob": (
        resource("AdapterTraining", "house-style"),
        'admission webhook "validate.ray.io" denied the request: workerGroupSpecs[0].replicas must be '
        "at most maxReplicas",
    ),
    "Service": (
        resource("HybridEndpoint", "assistant", adapters=[], knowledgeBases=[]),
        'Service "assistant" is forbidden: ValidatingAdmissionPolicy "no-services" denied request',
    ),
}


@pytest.mark.parametrize("child", sorted(CASES))
async def test_a_refused_child_stalls_its_owner_with_the_apis_message(
    emulator: Emulator, kube: KubeApi, child: str
) -> None:
    owner, message = CASES[child]
    emulator.create(owner)
    status = 403 if "forbidden" in message or "denied" in message else 422
    api = RefusingApi(kube, child, status, message)
    events: list[tuple[str, str, str]] = []
    clock = [1000.0]
    reconciler = Reconciler(api, OperatorSettings(), events=lambda body, t, r, m: events.append((t, r, m)))
    reconciler.refusals.clock = lambda: clock[0]
    plural = owner["kind"].lower() + "s"

    def current() -> dict[str, Any]:
        obj = emulator.get(plural, NS, owner["metadata"]["name"])
        assert obj is not None
        return obj

    result = await reconciler.reconcile(current())
    assert result.outcome.state == "Stalled" and result.outcome.reason == "ChildRefused"
    stalled = condition(current(), "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "ChildRefused"
    assert message in stalled["message"] and f"{child} {NS}/" in stalled["message"]
    assert condition(current(), "Ready")["status"] == "False"
    assert [(t, r) for t, r, _ in events] == [("Warning", "ChildRefused")] and message in events[0][2]
    assert len(api.refused) == 1

    # The resync timer comes round: the same manifest is not sent again within the backoff, the status
    # is not written again and no second event is posted.
    clock[0] += 20
    again = await reconciler.reconcile(current())
    assert again.outcome.reason == "ChildRefused" and again.writes == 0
    assert len(api.refused) == 1 and len(events) == 1
    # After the backoff it is tried again (and refused again: the next wait doubles).
    clock[0] += 15
    await reconciler.reconcile(current())
    assert len(api.refused) == 2

    # Fixed (here: the server accepts it now, as after a policy change or a spec fix): Ready path resumes.
    api.kind = "nothing"
    clock[0] += 3600
    fixed = await reconciler.reconcile(current())
    assert fixed.outcome.reason != "ChildRefused"
    assert condition(current(), "Stalled").get("status") != "True"


async def test_a_server_error_is_not_a_refusal(emulator: Emulator, kube: KubeApi) -> None:
    """A 5xx says nothing about the child: the reconciliation fails (kopf retries) and status is kept."""
    owner, _ = CASES["Job"]
    emulator.create(owner)
    api = RefusingApi(kube, "Job", 503, "etcdserver: request timed out")
    reconciler = Reconciler(api, OperatorSettings())
    with pytest.raises(ApiError):
        await reconciler.reconcile(emulator.get("knowledgebases", NS, "handbook") or {})
    assert not (emulator.get("knowledgebases", NS, "handbook") or {}).get("status")


# --- deletion never hangs ---------------------------------------------------------------------------


def cleanup_jobs(emulator: Emulator) -> list[dict[str, Any]]:
    return [j for j in emulator.list("jobs", NS) if j["metadata"]["name"].endswith("-cleanup")]


async def test_a_failed_cleanup_is_shown_and_retried_with_a_new_job(
    emulator: Emulator, kube: KubeApi
) -> None:
    """Bug: a failed cleanup Job kept its fixed name and was read again forever (the finalizer waited on a
    Job that would never succeed), with nothing in status or events."""
    import httpx

    from tests.cluster_controllers import finish_jobs

    owner, _ = CASES["Job"]
    emulator.create(owner)
    events: list[tuple[str, str, str]] = []
    reconciler = Reconciler(kube, OperatorSettings(), events=lambda body, t, r, m: events.append((t, r, m)))

    def body() -> dict[str, Any]:
        return emulator.get("knowledgebases", NS, "handbook") or {}

    started = await reconciler.finalize(body())
    assert started.reason == "CleaningUp" and len(cleanup_jobs(emulator)) == 1
    assert condition(body(), "Ready")["reason"] == "CleaningUp"  # status says the deletion is under way

    def fail_jobs() -> None:  # the Job controller gives up (sync HTTP: off the emulator's event loop)
        with httpx.Client(base_url=emulator.url, timeout=10) as client:
            finish_jobs(client, NS, failed=True)

    await asyncio.to_thread(fail_jobs)
    failed = await reconciler.finalize(body())
    assert failed.state == "Stalled" and failed.reason == "CleanupFailed"
    assert condition(body(), "Stalled")["reason"] == "CleanupFailed"
    assert ("Warning", "CleanupFailed") in [(t, r) for t, r, _ in events]
    assert cleanup_jobs(emulator) == []  # the failed attempt is gone...
    again = await reconciler.finalize(body())
    [job] = cleanup_jobs(emulator)  # ...and the next call is a new attempt
    assert again.reason == "CleaningUp" and not (job.get("status") or {}).get("conditions")


async def test_in_a_terminating_namespace_the_finalizer_is_released_with_a_warning(
    emulator: Emulator, kube: KubeApi
) -> None:
    """Bug: a KnowledgeBase in a namespace being deleted could not create its cleanup Job and held the
    namespace in Terminating forever."""
    owner, _ = CASES["Job"]
    emulator.create(owner)
    message = (
        'jobs.batch "handbook-cleanup" is forbidden: unable to create new content in namespace team '
        "because it is being terminated"
    )
    api = RefusingApi(kube, "Job", 403, message)
    events: list[tuple[str, str, str]] = []
    reconciler = Reconciler(api, OperatorSettings(), events=lambda body, t, r, m: events.append((t, r, m)))
    outcome = await reconciler.finalize(emulator.get("knowledgebases", NS, "handbook") or {})
    assert outcome.state == "Ready" and outcome.reason == "CleanupAbandoned"  # the finalizer may go
    [(kind, reason, said)] = events
    assert (kind, reason) == ("Warning", "CleanupAbandoned")
    assert "Milvus collection" in said and "namespace team is being deleted" in said
