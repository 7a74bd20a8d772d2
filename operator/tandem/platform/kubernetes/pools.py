"""ServingPools in the cluster: which HybridEndpoints are attached to a pool, what the pool's pods have
loaded, and the status of both sides, from what was observed just now.

An endpoint attaches by naming the pool (spec.servingPoolRef); the pool's namespace must grant it when it
lies elsewhere (ReferenceGrant, kind ServingPool), its base model must be the pool's, and its adapters must
be portable (an artifact with a digest). An endpoint that fails one of these is listed in the pool's
status.refused with the reason, and its own status says the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from tandem.api.kinds import HYBRID_ENDPOINT, REFERENCE_GRANT, SERVING_POOL
from tandem.api.v1alpha1 import HybridEndpointSpec
from tandem.api.v1alpha1.servingpool import AdapterStore, ServingPoolSpec
from tandem.core.errors import PlanError
from tandem.core.pools import AttachedEndpoint, PooledAdapter, check_portable, served_name, store_for
from tandem.core.references import ResolvedAdapter
from tandem.workloads.gateway.config import AdapterConfig

from .adapters import PodAdapters
from .api import KubeApi
from .blocked import Blocked
from .conditions import Outcome
from .observe import deployment_replicas
from .ownership import Owner
from .planners.hybridendpoint import adapter_cache_folder
from .planners.servingpool import PoolFacts
from .references import reference_allowed
from .resolution import Resolver
from .status import serving_outcome
from .vllm_key import vllm_key_secret_name


def pool_of(spec: HybridEndpointSpec, namespace: str) -> tuple[str, str] | None:
    """(namespace, name) of the pool an endpoint names, if any."""
    ref = spec.serving_pool_ref
    return None if ref is None else (ref.namespace or namespace, ref.name)


def pooled_adapter(
    endpoint: Owner, adapter: ResolvedAdapter, stores: Sequence[AdapterStore] = ()
) -> PooledAdapter:
    """An endpoint's adapter as a pool serves it; PlanError if its pods could not fetch and verify it.
    `stores`, the pool's adapterStores: the one granted to the endpoint's namespace for the adapter's
    location gives the credentials; anonymous otherwise."""
    where = f"{endpoint.namespace}/{endpoint.name}: spec.adapters[{adapter.name}]"
    check_portable(where, adapter)
    assert adapter.digest is not None
    if adapter.credentials is not None or adapter.insecure:
        raise PlanError(
            "AdapterStoreNotShared",
            f"{where}: a ServingPool's pods cannot mount the endpoint's credentialsSecretRef (a Secret of "
            "its own namespace) nor take its insecure: remove them, and have the pool's owner list the "
            f"namespace under a store in the ServingPool's spec.adapterStores, or publish to a store "
            "anyone may read",
        )
    store = store_for(where, adapter.uri, endpoint.namespace, stores)
    config = AdapterConfig(
        name=served_name(endpoint.namespace, endpoint.name, adapter.name),
        path=adapter_cache_folder(adapter.digest),
        version=adapter.version,
        digest=adapter.digest,
        uri=adapter.uri,
    )
    return PooledAdapter(f"{endpoint.namespace}/{endpoint.name}", adapter.name, config, adapter.rank, store)


async def attached_endpoints(
    api: KubeApi,
    resolver: Resolver,
    pool: Owner,
    spec: ServingPoolSpec,
    namespaces: tuple[str, ...],
) -> tuple[list[AttachedEndpoint], list[str]]:
    """The endpoints the pool serves, and those that name it but are refused (with the reason)."""
    found: list[dict[str, Any]] = []
    for namespace in namespaces or (None,):
        found += await api.list(HYBRID_ENDPOINT.api_version, HYBRID_ENDPOINT.kind, namespace)
    grants = await api.list(REFERENCE_GRANT.api_version, REFERENCE_GRANT.kind, pool.namespace)
    attached: list[AttachedEndpoint] = []
    refused: list[str] = []
    for body in sorted(found, key=lambda b: (b["metadata"]["namespace"], b["metadata"]["name"])):
        if body["metadata"].get("deletionTimestamp"):
            continue
        endpoint = Owner.from_body(body)
        who = f"{endpoint.namespace}/{endpoint.name}"
        try:
            he = HybridEndpointSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            continue  # its own status says what is wrong with its spec
        if pool_of(he, endpoint.namespace) != (pool.namespace, pool.name):
            continue
        if not reference_allowed(
            from_kind=HYBRID_ENDPOINT.kind,
            from_namespace=endpoint.namespace,
            to_kind=SERVING_POOL.kind,
            to_namespace=pool.namespace,
            to_name=pool.name,
            grants=grants,
        ):
            refused.append(
                f"{who}: no ReferenceGrant in {pool.namespace} allows HybridEndpoints from "
                f"{endpoint.namespace}"
            )
            continue
        if he.base_model.uri != spec.base_model.uri:
            refused.append(
                f"{who}: its baseModel {he.base_model.uri} is not the pool's {spec.base_model.uri}"
            )
            continue
        try:
            resolved, _waiting = await resolver.adapters(endpoint, he)
            adapters = [pooled_adapter(endpoint, a, spec.adapter_stores) for a in resolved]
        except Blocked as e:
            refused.append(f"{who}: {e.outcome.message}")
            continue
        except PlanError as e:
            refused.append(f"{who}: {e}")
            continue
        digest = (body.get("status") or {}).get("vllmKeyDigest")
        attached.append(AttachedEndpoint(endpoint.namespace, endpoint.name, digest, adapters))
    return attached, refused


NONE = PodAdapters()  # a pod that did not answer: nothing loaded, nothing failing


def pool_status(
    facts: PoolFacts,
    deployment: dict[str, Any] | None,
    attached: list[AttachedEndpoint],
    refused: list[str],
    observed: dict[str, PodAdapters],
) -> tuple[Outcome, dict[str, Any]]:
    """The pool's status: an adapter counts as loaded on a pod only when that pod's vLLM lists it from its
    placed folder (the folder is named by the digest, so another version does not count). An adapter whose
    sync failed on a pod it is placed on (the sidecar's last round) stalls the pool with that error: its
    sidecar tries again with backoff, and the next observation clears it."""
    desired, ready = deployment_replicas(deployment)
    placement = facts.placement
    entries = []
    for a in facts.adapters:
        name, placed = a.config.name, list(placement.by_adapter.get(a.config.name, ()))
        where = [pod for pod, seen in sorted(observed.items()) if seen.loaded.get(name) == a.config.path]
        entry: dict[str, Any] = {
            "endpoint": a.endpoint,
            "adapter": a.adapter,
            "servedName": name,
            "placed": placed,
            "loaded": where,
        }
        errors = [
            f"{pod}: {observed[pod].errors[name]}" for pod in placed if name in observed.get(pod, NONE).errors
        ]
        if errors:
            entry["errors"] = errors
        entries.append(entry)
    figures: dict[str, Any] = {
        "replicas": desired,
        "readyReplicas": ready,
        "ready": f"{ready}/{desired}",
        "endpointCount": len(attached),
        "endpoints": [e.id for e in attached],
        "refused": refused,
        "adapters": entries,
        "unplaced": [f"{name}: {why}" for name, why in sorted(placement.unplaced.items())],
    }
    missing_keys = [e.id for e in attached if not e.key_digest]
    pending = [
        f"{e['servedName']} ({len(set(e['placed']) & set(e['loaded']))}/{len(e['placed'])} pods)"
        for e in entries
        if not set(e["placed"]) <= set(e["loaded"])
    ]
    nowhere = [a.config.name for a in facts.adapters if not placement.by_adapter.get(a.config.name)]
    if ready < desired or desired == 0:
        outcome = Outcome.progressing("Deploying", f"vLLM {ready}/{desired} ready")
    elif nowhere:
        outcome = Outcome.stalled(
            "AdaptersUnplaced",
            "placed on no pod: "
            + (
                "; ".join(f"{n}: {placement.unplaced[n]}" for n in nowhere if n in placement.unplaced)
                or ", ".join(nowhere)
            ),
        )
    elif failing := [f"{e['servedName']} on {error}" for e in entries for error in e.get("errors", ())]:
        outcome = Outcome.stalled("AdapterSyncFailed", "; ".join(failing))
    elif pending:
        outcome = Outcome.progressing(
            "LoadingAdapters", "adapters not loaded where placed yet: " + ", ".join(pending)
        )
    else:
        message = (
            f"vLLM {ready}/{desired} ready, {len(entries)} adapters of {len(attached)} endpoints loaded as "
            "placed"
        )
        if missing_keys:
            message += f"; no key recorded for {', '.join(missing_keys)} (their gateways are refused)"
        outcome = Outcome.ready("Serving", message)
    figures["phase"] = {"Ready": "Ready", "Stalled": "Failed"}.get(outcome.state, "Progressing")
    return outcome, figures


def endpoints_to_tell(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The endpoints (namespace/name) whose part of the pool's status differs between `old` and `new`: their
    entry in endpoints or refused, or the placed and loaded pods of their adapters. Only these derive a
    different status from the pool's (pooled_endpoint_status), so only these need reconciling now."""

    def parts(status: dict[str, Any]) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        for who in status.get("endpoints") or []:
            found.setdefault(who, []).append("attached")
        for refusal in status.get("refused") or []:
            who, _, why = refusal.partition(": ")
            found.setdefault(who, []).append(("refused", why))
        for e in status.get("adapters") or []:
            mine = (e.get("adapter"), e.get("placed"), e.get("loaded"), e.get("errors"))
            found.setdefault(e.get("endpoint"), []).append(mine)
        return found

    before, after = parts(old), parts(new)
    return sorted(who for who in before.keys() | after.keys() if who and before.get(who) != after.get(who))


def pooled_endpoint_status(
    owner: Owner,
    spec: HybridEndpointSpec,
    gateway: dict[str, Any] | None,
    pool: dict[str, Any],
    key_digest: str | None,
    waiting: list[str],
    url: str = "",
    dependencies: list[dict[str, Any] | str] | None = None,
) -> tuple[Outcome, dict[str, Any]]:
    """An endpoint served by a pool: Ready only when its gateway is, the pool lists it as attached, each of
    its adapters is loaded on at least one of the pool's pods (as the pool observed just now), and no
    gateway pod finds a dependency down (`dependencies`: their /healthz/dependencies, as for an endpoint
    with its own vLLM: a KnowledgeBase it cannot search makes it RetrievalUnavailable)."""
    me = f"{owner.namespace}/{owner.name}"
    where = f"ServingPool {pool['metadata']['namespace']}/{pool['metadata']['name']}"
    status = pool.get("status") or {}
    mine = {e["adapter"]: e for e in status.get("adapters") or [] if e.get("endpoint") == me}
    adapters: list[dict[str, Any]] = [
        {
            "name": a.name,
            "loadedReplicas": len((mine.get(a.name) or {}).get("loaded") or []),
            "ready": bool((mine.get(a.name) or {}).get("loaded")),
        }
        for a in spec.adapters
    ]
    gw_desired, gw_ready = deployment_replicas(gateway)
    figures: dict[str, Any] = {
        "servingPool": f"{pool['metadata']['namespace']}/{pool['metadata']['name']}",
        "replicas": status.get("replicas"),
        "readyReplicas": status.get("readyReplicas"),
        "ready": status.get("ready"),
        "gatewayReadyReplicas": gw_ready,
        "adapters": adapters,
    }
    refusal = next((r for r in status.get("refused") or [] if r.startswith(f"{me}: ")), None)
    if key_digest is None:
        outcome = Outcome.stalled(
            "VllmKeyUnknown",
            f"the key Secret {vllm_key_secret_name(owner)} exists but its digest was never recorded, so "
            f"{where} cannot accept it: delete the Secret and the operator creates a new key and records it",
        )
    elif refusal is not None:
        outcome = Outcome.stalled("RefusedByPool", f"{where}: {refusal.removeprefix(me + ': ')}")
    elif me not in (status.get("endpoints") or []):
        outcome = Outcome.progressing("WaitingForPool", f"{where} has not attached the endpoint yet")
    elif gw_ready < gw_desired:
        outcome = Outcome.progressing("Deploying", f"gateway {gw_ready}/{gw_desired} ready")
    elif waiting:
        outcome = Outcome.progressing("WaitingForAdapters", f"waiting for adapters: {', '.join(waiting)}")
    elif failing := [
        f"{a['name']} on {error}"
        for a in adapters
        if not a["ready"]
        for error in (mine.get(a["name"]) or {}).get("errors") or []
    ]:
        outcome = Outcome.stalled("AdapterSyncFailed", f"{where}: " + "; ".join(failing))
    elif not all(a["ready"] for a in adapters):
        missing = ", ".join(a["name"] for a in adapters if not a["ready"])
        outcome = Outcome.progressing("LoadingAdapters", f"not loaded on any pod of {where} yet: {missing}")
    else:
        outcome = serving_outcome(url, f"gateway {gw_ready}/{gw_desired} ready on {where}", dependencies)
    figures["phase"] = {"Ready": "Ready", "Stalled": "Failed"}.get(outcome.state, "Progressing")
    return outcome, figures


def missed_adapters(dependencies: list[dict[str, Any] | str], since: float) -> list[str]:
    """The served names an endpoint's gateways found on no pod that answers (their /healthz/dependencies
    `pool.misses`) at or after `since` (wall-clock seconds): a request answered 503 for want of them, so
    the pool is told, to observe its pods again and place anew what a lost pod held."""
    missed: set[str] = set()
    for body in dependencies:
        misses = ((body.get("pool") or {}).get("misses") or {}) if isinstance(body, dict) else {}
        for miss in misses.values():
            if isinstance(miss, dict) and float(miss.get("lastAt") or 0) >= since and miss.get("servedName"):
                missed.add(str(miss["servedName"]))
    return sorted(missed)
