"""Child sync: apply what differs from the plan, prune what is no longer planned, count the writes.

A steady state costs reads and no writes: a child is applied only when the live object does not already
say everything the planned one says.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tandem.api.kinds import ADAPTER_TRAINING, EVALUATION, HYBRID_ENDPOINT, KNOWLEDGE_BASE, SERVING_POOL
from tandem.core.digests import digest

from . import metrics
from .api import ApiError, KubeApi
from .blocked import Blocked
from .conditions import Outcome
from .ownership import Owner
from .planners import Plan

log = logging.getLogger("tandem.operator")

CHILD_KINDS: dict[str, tuple[tuple[str, str], ...]] = {
    KNOWLEDGE_BASE.kind: (
        ("v1", "ConfigMap"),
        ("batch/v1", "Job"),
        ("batch/v1", "CronJob"),
        ("ray.io/v1", "RayJob"),
    ),
    ADAPTER_TRAINING.kind: (("v1", "ConfigMap"), ("batch/v1", "Job"), ("ray.io/v1", "RayJob")),
    HYBRID_ENDPOINT.kind: (
        ("v1", "ConfigMap"),
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ),
    EVALUATION.kind: (("v1", "ConfigMap"), ("batch/v1", "Job")),
    SERVING_POOL.kind: (
        ("v1", "ConfigMap"),
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("keda.sh/v1alpha1", "ScaledObject"),
    ),
}

# A child as (apiVersion, kind, name), and an owner's children by that key.
Key = tuple[str, str, str]
Live = dict[Key, dict[str, Any]]


def key(obj: dict[str, Any]) -> Key:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


def contains(live: Any, desired: Any) -> bool:
    """Whether `live` already says everything `desired` says (extra fields set by the server are fine).

    Lists of named objects (containers, env, volumes, ports) are matched by name, not position: server-side
    apply keeps such lists as maps, and may order them differently from the applied manifest.
    """
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and contains(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return False
        if all(isinstance(d, dict) and "name" in d for d in desired):
            by_name = {item.get("name"): item for item in live if isinstance(item, dict)}
            return all(d["name"] in by_name and contains(by_name[d["name"]], d) for d in desired)
        return all(map(contains, live, desired))
    return bool(live == desired)


def owned(obj: dict[str, Any], owner: Owner) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(r.get("uid") == owner.uid for r in refs)


async def write(call: Awaitable[Any], kind: str, verb: str) -> Any:
    """Send one write to the API server, counted in the API-writes metric."""
    metrics.API_WRITES.labels(kind, verb).inc()
    return await call


# Answers that say the API server (or an admission webhook or policy) will not take this child as it is:
# 400 malformed, 403 forbidden/denied, 422 invalid. Sending the same manifest again cannot help.
REFUSED = (400, 403, 422)
FIRST_RETRY_SECONDS = 30.0
MAX_RETRY_SECONDS = 600.0


@dataclass
class Refusal:
    manifest: str  # digest of the refused child
    message: str
    attempts: int
    not_before: float


@dataclass
class Refusals:
    """Children the API server refused, so the same manifest is not sent again on every resync: retried
    with exponential backoff (30 s doubling to 10 min), at once when the planned child changes."""

    clock: Callable[[], float] = time.monotonic
    _refused: dict[tuple[str, Key], Refusal] = field(default_factory=dict)

    def check(self, owner: Owner, child: dict[str, Any]) -> None:
        """Blocked (Stalled, the API's message) while the refused manifest waits for its next attempt."""
        refusal = self._refused.get((owner.uid, key(child)))
        if refusal is None or refusal.manifest != digest(child, 16):
            return
        if refusal.not_before > self.clock():
            raise Blocked(Outcome.stalled("ChildRefused", refusal.message))

    def refused(self, owner: Owner, child: dict[str, Any], error: ApiError) -> Blocked:
        previous = self._refused.get((owner.uid, key(child)))
        manifest = digest(child, 16)
        attempts = previous.attempts + 1 if previous and previous.manifest == manifest else 1
        delay = min(FIRST_RETRY_SECONDS * 2 ** (attempts - 1), MAX_RETRY_SECONDS)
        kind, name = child["kind"], child["metadata"]["name"]
        # The message stays the same until the next attempt, so a stalled resource costs no status writes.
        retry_at = time.strftime("%H:%M:%S UTC", time.gmtime(time.time() + delay))
        message = (
            f"the API server refused {kind} {owner.namespace}/{name} ({error.status} {error.reason}): "
            f"{error.message}; fix the spec (a change is tried at once), else next attempt at {retry_at}"
        )
        self._refused[(owner.uid, key(child))] = Refusal(manifest, message, attempts, self.clock() + delay)
        return Blocked(Outcome.stalled("ChildRefused", message))

    def accepted(self, owner: Owner, child: dict[str, Any]) -> None:
        self._refused.pop((owner.uid, key(child)), None)


async def sync_children(
    api: KubeApi, owner: Owner, plan: Plan[Any], refusals: Refusals | None = None
) -> tuple[Live, int]:
    """Apply what differs, prune what is no longer planned; return the children as they now are and the
    number of writes it took. A child the API server refuses stalls the owner with the API's message
    (Blocked), and is sent again only after a backoff or when the plan changes it."""
    refusals = refusals if refusals is not None else Refusals()
    live: Live = {}
    for api_version, kind in CHILD_KINDS[owner.kind]:
        for obj in await api.list(api_version, kind, owner.namespace, owner.selector()):
            live[key(obj)] = obj
    writes = 0
    planned = set()
    for child in plan.children:
        child_key = key(child)
        planned.add(child_key)
        current = live.get(child_key)
        if current is not None and contains(current, child):
            continue
        if current is None:
            stranger = await api.get(child["apiVersion"], child["kind"], owner.namespace, child_key[2])
            if stranger is not None and not owned(stranger, owner):
                raise Blocked(
                    Outcome.stalled(
                        "ChildNameConflict",
                        f"{child['kind']} {owner.namespace}/{child_key[2]} exists and is not managed by this "
                        f"{owner.kind}; rename or delete it",
                    )
                )
        refusals.check(owner, child)
        try:
            live[child_key] = await write(api.apply(child), child["kind"], "apply")
        except ApiError as e:
            if e.status == 404:
                # The kind is not served (its CRD is not installed): no retry will change that by itself.
                raise Blocked(
                    Outcome.stalled(
                        "KindNotInstalled",
                        f"this cluster does not serve {child['kind']} ({child['apiVersion']}), which "
                        f"{owner.kind} {owner.namespace}/{owner.name} needs: install it (KEDA for "
                        "ScaledObject, KubeRay for RayJob) or change the operator's settings",
                    )
                ) from None
            if e.status not in REFUSED:
                raise  # the server is busy or down: kopf retries, nothing is wrong with the child
            raise refusals.refused(owner, child, e) from None
        refusals.accepted(owner, child)
        writes += 1
        if current is None:
            log.info("created %s %s/%s for %s", child["kind"], owner.namespace, child_key[2], owner.name)
    for child_key, obj in list(live.items()):
        if child_key not in planned and owned(obj, owner):
            api_version, kind, name = child_key
            await write(api.delete(api_version, kind, owner.namespace, name), kind, "delete")
            writes += 1
            del live[child_key]
    return live, writes
