"""Child sync: apply what differs from the plan, prune what is no longer planned, count the writes.

A steady state costs reads and no writes: a child is applied only when the live object does not already
say everything the planned one says.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

from tandem.api.kinds import ADAPTER_TRAINING, EVALUATION, HYBRID_ENDPOINT, KNOWLEDGE_BASE

from . import metrics
from .api import KubeApi
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


async def sync_children(api: KubeApi, owner: Owner, plan: Plan[Any]) -> tuple[Live, int]:
    """Apply what differs, prune what is no longer planned; return the children as they now are and the
    number of writes it took."""
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
        live[child_key] = await write(api.apply(child), child["kind"], "apply")
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
