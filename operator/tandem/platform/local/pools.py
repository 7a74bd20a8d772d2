"""Local mode's ServingPools: one set of vLLM processes for every HybridEndpoint that names the pool.

A pool's pods are vLLM processes on loopback ports, `<pool>-0`, `<pool>-1`, ... (`spec.serving.replicas`;
with autoscaling, its minReplicas; at least one: nothing scales up a local pool from zero). The placement
is the cluster's (tandem.core.placement, rendezvous hashing within `maxCpuLoras`, `adapterReplicas`
copies), and `tandem up` does what each pod's sidecar does there: loads the pod's share under the
pool-unique served names and unloads the rest, verifying each adapter's digest first. Each attached
endpoint keeps its own gateway, tenants and key; the pool's vLLMs accept the attached endpoints' keys by
digest (the guard re-reads the list every 2 s, so attaching an endpoint restarts nothing), and each
gateway routes a request to a pod that has the adapter loaded (tandem.workloads.gateway.pool).

Status says what was observed: an adapter is `loaded` on a pod only when that pod's /v1/models lists it
after the sync, and an endpoint is Ready only when its gateway answers and each of its adapters is loaded
somewhere. Unlike a cluster, every process here can reach every other on loopback: the keys keep tenants
apart, not the network.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tandem.api.v1alpha1 import HybridEndpointSpec
from tandem.api.v1alpha1.adaptertraining import ModelSource
from tandem.api.v1alpha1.servingpool import ServingPoolSpec
from tandem.core import vllm_guard
from tandem.core.adapters import lora_rank_slot
from tandem.core.digests import FINGERPRINT_DIGEST, digest
from tandem.core.errors import PlanError
from tandem.core.gateway import gateway_config
from tandem.core.placement import PodSlot, place
from tandem.core.pools import AttachedEndpoint, PooledAdapter, placement_of, served_name, store_for
from tandem.core.references import ResolvedAdapter
from tandem.core.vllm import pool_vllm_arguments
from tandem.workloads.gateway.config import AdapterConfig, GatewayConfig, KnowledgeBaseConfig, VllmPool

from .manifests import Manifests, Resource, pool_of
from .references import secret_folder
from .runner import Progress, WorkFailed
from .servers import Supervisor
from .state import ResourceState, Server, State, pool_server_name

if TYPE_CHECKING:
    from tandem.workloads.models import PreparedModel

POOL_KIND = "ServingPool"
KEYS_FILE = "keys.json"


class Platform(Protocol):
    """What a pool needs of local mode's platform (LocalPlatform)."""

    dir: Path
    model_cache: Path
    vllm_python: str | None
    state: State
    servers: Supervisor
    progress: Progress

    def resolve_adapters(self, he: Resource[HybridEndpointSpec]) -> list[ResolvedAdapter]: ...

    def vllm_key(self, directory: Path) -> Path: ...

    def prepare_model(self, key: str, source: ModelSource) -> PreparedModel: ...

    def endpoint_directory(self, he: Resource[HybridEndpointSpec]) -> Path: ...

    def gateway_inputs(
        self, he: Resource[HybridEndpointSpec], manifests: Manifests
    ) -> tuple[list[KnowledgeBaseConfig], dict[str, str]]: ...

    def write_key_files(self, directory: Path, secrets: dict[str, str]) -> dict[str, str]: ...


def pool_directory(root: Path, namespace: str, name: str) -> Path:
    return root / "pools" / f"{namespace}-{name}"


def local_pods(pool: Resource[ServingPoolSpec]) -> list[str]:
    """The pool's pods here: fixed replicas, or autoscaling's minimum, and at least one."""
    serving = pool.spec.serving
    wanted = serving.autoscaling.min_replicas if serving.autoscaling is not None else serving.replicas
    return [f"{pool.name}-{i}" for i in range(max(1, 1 if wanted is None else wanted))]


def server_name(pool: Resource[ServingPoolSpec], pod: str) -> str:
    return pool_server_name(pool.namespace, pool.name, pod)


def key_digest(key_file: Path) -> str:
    """The SHA-256 hex the guard compares a presented key with (as the operator records vllmKeyDigest)."""
    return hashlib.sha256(key_file.read_text().strip().encode()).hexdigest()


def pooled_adapters(
    platform: Platform, he: Resource[HybridEndpointSpec], spec: ServingPoolSpec
) -> list[PooledAdapter]:
    """The endpoint's adapters as its pool loads them, or WorkFailed saying why the pool cannot: a pool
    loads only adapters it can verify by digest, fetches from stores with the pool's own credentials
    (spec.adapterStores, for the namespaces each lists) or anonymously, never with the endpoint's (as a
    pool's pods do in a cluster), and serves ranks up to its maxLoraRank."""
    out = []
    who = f"{he.namespace}/{he.name}"
    max_rank = spec.serving.max_lora_rank
    for a in platform.resolve_adapters(he):
        where = f"{who}: spec.adapters[{a.name}]"
        if not a.digest:
            raise WorkFailed(
                "AdapterDigestMissing",
                f"{where}: {a.uri}: no adapter digest to verify it by; a pool loads only verified adapters",
            )
        if a.remote and (a.credentials is not None or a.insecure):
            raise WorkFailed(
                "AdapterStoreNotShared",
                f"{where}: a ServingPool does not fetch with the endpoint's credentialsSecretRef or "
                "insecure: remove them, and have the pool list the namespace under a store in "
                "spec.adapterStores",
            )
        if lora_rank_slot(a.rank) > max_rank:
            raise WorkFailed(
                "AdapterRankTooLarge",
                f"{where}: rank {a.rank}; the pool serves up to spec.serving.maxLoraRank {max_rank}",
            )
        try:
            store = store_for(where, a.uri, he.namespace, spec.adapter_stores) if a.remote else None
        except PlanError as e:
            raise WorkFailed(e.reason, str(e)) from None
        config = AdapterConfig(
            name=served_name(he.namespace, he.name, a.name),
            # A fetched adapter's folder is each pod's own cache (set per pod); a local one is read in place.
            path=a.digest if a.remote else a.uri,
            version=a.version,
            digest=a.digest,
            uri=a.uri if a.remote else None,
        )
        out.append(PooledAdapter(who, a.name, config, a.rank, store))
    return out


def _sync_entries(
    platform: Platform,
    pool: Resource[ServingPoolSpec],
    manifests: Manifests,
    share: list[PooledAdapter],
    cache: Path,
) -> list[dict[str, Any]]:
    """One pod's share as its sidecar reads it in a cluster: fetched adapters in the pod's own cache, each
    with its store's Secret as a private folder (empty while the Secret is not among the manifests, as an
    optional volume is: that store's adapters then fail to fetch, saying so)."""
    entries = []
    for a in share:
        entry: dict[str, Any] = a.config.model_dump()
        if a.config.uri:
            entry["path"] = str(cache / a.config.path)
        if a.store is not None:
            where = f"ServingPool {pool.namespace}/{pool.name}: spec.adapterStores[{a.store.name}]"
            entry["credentials"] = str(
                secret_folder(
                    platform.dir,
                    manifests,
                    pool.namespace,
                    a.store.credentials_secret_ref.name,
                    where,
                    optional=True,
                )
            )
            entry["insecure"] = a.store.insecure
        entries.append(entry)
    return entries


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def reconcile_pool(
    platform: Platform, pool: Resource[ServingPoolSpec], status: ResourceState, manifests: Manifests
) -> None:
    from tandem.workloads.adapter_sync import Fetcher, SyncError, VllmAdmin, sync_once

    spec = pool.spec
    attached: list[AttachedEndpoint] = []
    refused: list[str] = []
    for he in manifests.attached(pool):
        try:
            adapters = pooled_adapters(platform, he, spec)
        except WorkFailed as e:
            refused.append(f"{he.namespace}/{he.name}: {e}")
            continue
        key = key_digest(platform.vllm_key(platform.endpoint_directory(he)))
        attached.append(AttachedEndpoint(he.namespace, he.name, key, adapters))
    adapters = [a for e in attached for a in e.adapters]
    by_served = {a.config.name: a for a in adapters}
    pods = local_pods(pool)
    placement = place(
        list(by_served),
        [PodSlot(p, spec.serving.max_cpu_loras) for p in pods],
        spec.placement.adapter_replicas,
        placement_of(status.figures),  # what it recorded: nothing moves without a reason
    )

    directory = pool_directory(platform.dir, pool.namespace, pool.name)
    # The pool's own key: what `tandem up` presents when it loads adapters (in a cluster, the sidecars').
    pool_key = platform.vllm_key(directory)
    keys = directory / KEYS_FILE
    _write_atomically(keys, json.dumps(sorted({e.key_digest for e in attached if e.key_digest})))
    model = platform.prepare_model(pool.key, spec.base_model)
    for name in [
        n for n in platform.state.servers if n.startswith(pool_server_name(pool.namespace, pool.name, ""))
    ]:
        if name not in {server_name(pool, p) for p in pods}:
            platform.servers.stop(name)  # replicas lowered: the pod is gone
    servers: dict[str, Server] = {}
    for pod in pods:
        servers[pod] = _ensure_pod(platform, pool, pod, str(model.path), pool_key, keys)

    loaded: dict[str, dict[str, str]] = {}
    errors: list[str] = []
    # served name -> "pod: error" per pod whose sync failed on it (the cluster: status.adapters[].errors)
    failed: dict[str, list[str]] = {}
    for pod, server in servers.items():
        cache = directory / "adapter-cache" / pod  # each pod's own, as in a cluster: a sync prunes its cache
        share = [by_served[s] for s in placement.by_pod.get(pod, ())]
        wanted = _sync_entries(platform, pool, manifests, share, cache)
        problems: dict[str, str] = {}
        with VllmAdmin(server.url, api_key=pool_key.read_text().strip()) as admin:
            try:
                sync_once(server.url, wanted, admin=admin, fetcher=Fetcher(cache), problems=problems)
            except SyncError as e:
                errors.append(f"{pod}: {e}")
            for name, error in problems.items():
                failed.setdefault(name, []).append(f"{pod}: {error}")
            loaded[pod] = {a.name: a.path for a in admin.loaded_adapters()}
            paths = {c["name"]: c["path"] for c in wanted}
            loaded[pod] = {n: p for n, p in loaded[pod].items() if paths.get(n) in (None, p)}

    entries: list[dict[str, Any]] = [
        {
            "endpoint": a.endpoint,
            "adapter": a.adapter,
            "servedName": a.config.name,
            "placed": list(placement.by_adapter.get(a.config.name, ())),
            "loaded": sorted(pod for pod, names in loaded.items() if a.config.name in names),
            **({"errors": failed[a.config.name]} if a.config.name in failed else {}),
        }
        for a in adapters
    ]
    nowhere = [e["servedName"] for e in entries if not e["placed"]]
    pending = [e["servedName"] for e in entries if not set(e["placed"]) <= set(e["loaded"])]
    if nowhere:
        reason, message = (
            "AdaptersUnplaced",
            "placed on no pod: " + "; ".join(f"{n}: {placement.unplaced.get(n, 'no room')}" for n in nowhere),
        )
    elif errors or pending:
        reason = "AdapterSyncFailed"
        message = "not loaded where placed: " + "; ".join(errors or pending)
    else:
        reason = "Serving"
        message = (
            f"vLLM {len(servers)}/{len(pods)} ready, {len(entries)} adapters of {len(attached)} endpoints"
        )
        message += " loaded as placed" + (f"; refused: {'; '.join(refused)}" if refused else "")
    ready = reason == "Serving"
    platform.state.set(
        status,
        ready=ready,
        reason=reason,
        message=message,
        phase="Ready" if ready else "Failed" if reason == "AdaptersUnplaced" else "Progressing",
        replicas=len(pods),
        readyReplicas=len(servers),
        endpointCount=len(attached),
        endpoints=[e.id for e in attached],
        refused=refused,
        adapters=entries,
        unplaced=[f"{name}: {why}" for name, why in sorted(placement.unplaced.items())],
        local={
            "pods": {pod: server.url for pod, server in servers.items()},
        },
    )


def _ensure_pod(
    platform: Platform, pool: Resource[ServingPoolSpec], pod: str, model: str, key: Path, keys: Path
) -> Server:
    from .vllm import key_guard, vllm_env, vllm_python

    serving = pool.spec.serving
    python = platform.vllm_python or vllm_python()
    guard_arguments, guard_env = key_guard(platform.dir / "vllm-guard")

    def argv(port: int) -> list[str]:
        dtype = "bfloat16" if serving.dtype == "auto" else serving.dtype  # what the CPU build serves
        return guard_arguments + pool_vllm_arguments(
            serving, model=model, host="127.0.0.1", port=port, dtype=dtype
        )

    platform.progress(
        pool.key, {"stage": "vllm", "message": f"starting vLLM {pod} (CPU build): about a minute"}
    )
    return platform.servers.ensure(
        server_name(pool, pod),
        digest({"model": model, "argv": argv(0)}, FINGERPRINT_DIGEST),
        lambda port: [python, "-m", "vllm.entrypoints.openai.api_server", *argv(port)],
        ready="/health",
        timeout=600,
        # The pool's own key (what loads adapters) from its file, the attached gateways' keys by digest:
        # both files are read again every 2 s, so neither a new endpoint nor a new key restarts vLLM.
        env={
            **vllm_env(),
            **guard_env,
            vllm_guard.KEY_FILE_ENV: str(key),
            vllm_guard.DIGESTS_FILE_ENV: str(keys),
        },
    )


def pooled_endpoint(
    platform: Platform,
    he: Resource[HybridEndpointSpec],
    status: ResourceState,
    manifests: Manifests,
    start_gateway: Callable[[Resource[HybridEndpointSpec], GatewayConfig, Path, dict[str, str]], Server],
) -> None:
    """An endpoint served by a pool: its own gateway, routing to the pool's pods; Ready when the gateway
    answers and each of its adapters is loaded on a pod of the pool (as the pool observed this pass)."""
    from .health import endpoint_condition

    where = pool_of(he)
    assert where is not None
    pool = manifests.pool(*where)
    assert pool is not None  # checked when the manifests were loaded
    pool_status = platform.state.resource(POOL_KIND, *where)
    me = f"{he.namespace}/{he.name}"
    named = f"ServingPool {where[0]}/{where[1]}"
    refusal = next((r for r in pool_status.figures.get("refused") or [] if r.startswith(f"{me}: ")), None)
    if refusal is not None:
        raise WorkFailed("RefusedByPool", f"{named}: {refusal.removeprefix(me + ': ')}")
    pods = pool_status.local.get("pods") or {}
    if me not in (pool_status.figures.get("endpoints") or []) or not pods:
        raise WorkFailed(
            "WaitingForPool",
            f"{named} is not serving the endpoint yet ({pool_status.reason}: {pool_status.message})",
        )
    adapters = pooled_adapters(platform, he, pool.spec)
    served = [a.for_gateway() for a in adapters]
    directory = platform.endpoint_directory(he)
    vllm_key = platform.vllm_key(directory)
    knowledge, secrets = platform.gateway_inputs(he, manifests)
    key_files = platform.write_key_files(directory, secrets)
    config = gateway_config(
        he.spec,
        namespace=he.namespace,
        name=he.name,
        vllm_url=None,
        vllm_pool=VllmPool(
            pods=[pods[p] for p in sorted(pods)], name=f"{where[0]}/{where[1]}", poll_seconds=2.0
        ),
        adapters=served,
        knowledge_bases=knowledge,
        api_key_files=key_files,
        vllm_api_key_file=str(vllm_key),
        max_model_len=pool.spec.serving.max_model_len,
    )
    gateway = start_gateway(he, config, vllm_key, secrets)
    now = endpoint_condition(gateway.url)
    mine = {e["adapter"]: e for e in pool_status.figures.get("adapters") or [] if e.get("endpoint") == me}
    figures: list[dict[str, Any]] = [
        {
            "name": a.name,
            "loadedReplicas": len((mine.get(a.name) or {}).get("loaded") or []),
            "ready": bool((mine.get(a.name) or {}).get("loaded")),
        }
        for a in he.spec.adapters
    ]
    missing = [a["name"] for a in figures if not a["ready"]]
    ready = now.ready and not missing
    reason, message = now.reason, now.message
    if now.ready and missing:
        reason, message = "LoadingAdapters", f"not loaded on any pod of {named}: {', '.join(missing)}"
    platform.state.set(
        status,
        ready=ready,
        reason=reason,
        message=message,
        phase="Ready" if ready else "Progressing",
        url=f"{gateway.url}/v1",
        servingPool=f"{where[0]}/{where[1]}",
        replicas=pool_status.figures.get("replicas"),
        readyReplicas=pool_status.figures.get("readyReplicas"),
        gatewayReadyReplicas=1,
        adapters=figures,
        local={"routes": [r.name for r in config.routes], "keyFiles": key_files},
    )
