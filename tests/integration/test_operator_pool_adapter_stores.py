"""A ServingPool's adapter store against the API emulator: the pool's owner grants the credentials of a
private registry location to team-a; team-b, also granted the pool, names team-a's private artifact.

team-a's adapter is placed with the store's folder in its pod's placement entry and the store's Secret is
mounted in the adapter-sync container only; team-b is refused on both sides (the pool's status.refused
and its own Stalled AdapterStoreNotGranted) and nothing of it reaches the pool's pods: the pool would
otherwise fetch team-a's adapter for team-b with team-a's credentials. The fetch itself, with and without
the store, runs against a real registry in tests/integration/test_adapter_sync_artifacts.py. Not covered
by the emulator: the kubelet mounting the Secret (optional volume) and refreshing it.
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import httpx
import pytest

from tandem.platform.kubernetes.api import KubeApi
from tandem.platform.kubernetes.planners.servingpool import STORES_DIR
from tandem.platform.kubernetes.reconciler import Reconciler
from tandem.platform.kubernetes.settings import OperatorSettings
from tests.emulator.server import Emulator
from tests.integration.conftest import condition
from tests.integration.test_operator_serving_pool import (  # noqa: F401  (the fixture `sidecars`)
    DIGEST,
    GRANT,
    PODS,
    POOL,
    POOL_NS,
    Sidecars,
    endpoint,
    roll_out,
    run_pool_pods,
    settled,
    sidecars,
)

pytestmark = pytest.mark.integration

PRIVATE = "oci://127.0.0.1:5000/private-team-a"


async def test_a_store_serves_the_namespaces_it_lists_and_refuses_the_others(
    emulator: Emulator, kube: KubeApi, api: httpx.AsyncClient
) -> None:
    pool = copy.deepcopy(POOL)
    pool["spec"]["adapterStores"] = [
        {
            "name": "team-a",
            "prefix": PRIVATE,
            "credentialsSecretRef": {"name": "registry-team-a"},
            "namespaces": ["team-a"],
        }
    ]
    grant = copy.deepcopy(GRANT)
    grant["spec"]["from"].append({"kind": "HybridEndpoint", "namespace": "team-b"})
    mine, theirs = endpoint("team-a", "assistant"), endpoint("team-b", "helpdesk")
    for he in (mine, theirs):
        he["spec"]["adapters"][0]["uri"] = f"{PRIVATE}/support:v1"
    for body in (pool, grant, mine, theirs):
        emulator.create(body)
    reconciler = Reconciler(kube, OperatorSettings())

    async def reconcile(resource: str, namespace: str, name: str) -> Any:
        return await reconciler.reconcile(emulator.get(resource, namespace, name) or {})

    await reconcile("hybridendpoints", "team-a", "assistant")
    refused = await reconcile("hybridendpoints", "team-b", "helpdesk")
    assert refused.outcome.reason == "AdapterStoreNotGranted", refused.outcome
    assert "namespace team-b" in refused.outcome.message
    stalled = condition(emulator.get("hybridendpoints", "team-b", "helpdesk"), "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "AdapterStoreNotGranted"

    await asyncio.to_thread(run_pool_pods, emulator)
    await reconcile("servingpools", POOL_NS, "smollm")
    status = (emulator.get("servingpools", POOL_NS, "smollm") or {})["status"]
    assert status["endpoints"] == ["team-a/assistant"]
    [refusal] = status["refused"]
    assert refusal.startswith("team-b/helpdesk: ") and "do not list namespace team-b" in refusal
    assert [a["endpoint"] for a in status["adapters"]] == ["team-a/assistant"]

    [config] = [
        c
        for c in emulator.list_objects("v1/configmaps", POOL_NS)
        if c["metadata"]["name"] == "smollm-placement"
    ]
    entries = [
        e
        for key, v in config["data"].items()
        if key.endswith(".json") and key != "keys.json"
        for e in json.loads(v)["adapters"]
    ]
    assert [(e["name"], e.get("credentials")) for e in entries] == [
        ("team-a/assistant/support", f"{STORES_DIR}/team-a")
    ]

    [deployment] = emulator.list_objects("apps/v1/deployments", POOL_NS)
    pod = deployment["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "store-team-a"]
    assert volume["secret"]["secretName"] == "registry-team-a" and volume["secret"]["optional"] is True
    mounts = {c["name"]: [m["mountPath"] for m in c["volumeMounts"]] for c in pod["containers"]}
    assert f"{STORES_DIR}/team-a" in mounts["adapter-sync"]
    assert not [m for m in mounts["vllm"] if m.startswith(STORES_DIR)]

    # The owner lists team-b too: its endpoint is attached at the pool's next reconcile.
    stores = copy.deepcopy(pool["spec"]["adapterStores"])
    stores[0]["namespaces"] = ["team-a", "team-b"]
    patched = await api.patch(
        f"/apis/tandem.dev/v1alpha1/namespaces/{POOL_NS}/servingpools/smollm",
        json={"spec": {"adapterStores": stores}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    await reconcile("servingpools", POOL_NS, "smollm")
    status = (emulator.get("servingpools", POOL_NS, "smollm") or {})["status"]
    assert status["endpoints"] == ["team-a/assistant", "team-b/helpdesk"] and status["refused"] == []
    await settled(reconciler)


async def test_a_fetch_that_fails_on_its_pod_stalls_pool_and_endpoint_with_the_sidecars_words(
    emulator: Emulator,
    kube: KubeApi,
    sidecars: Sidecars,  # noqa: F811  (the fixture imported above)
) -> None:
    """The store's Secret holds a wrong password: the pod's sidecar cannot fetch the adapter and says so on
    its status port. Status says why (not LoadingAdapters forever): the pool and the endpoint are Stalled
    AdapterSyncFailed with the pod and the sidecar's error; once the sidecar loads it, both are Ready."""
    pool = copy.deepcopy(POOL)
    pool["spec"]["adapterStores"] = [
        {"name": "team-a", "prefix": PRIVATE, "credentialsSecretRef": {"name": "r"}, "namespaces": ["team-a"]}
    ]
    mine = endpoint("team-a", "assistant")
    mine["spec"]["adapters"][0]["uri"] = f"{PRIVATE}/support:v1"
    for body in (pool, GRANT, mine):
        emulator.create(body)
    reconciler = Reconciler(kube, OperatorSettings(adapter_status_port=sidecars.port))

    async def reconcile(resource: str, namespace: str, name: str) -> Any:
        return await reconciler.reconcile(emulator.get(resource, namespace, name) or {})

    await reconcile("hybridendpoints", "team-a", "assistant")
    await asyncio.to_thread(run_pool_pods, emulator)
    await reconcile("servingpools", POOL_NS, "smollm")
    await asyncio.to_thread(roll_out, emulator)
    [entry] = (emulator.get("servingpools", POOL_NS, "smollm") or {})["status"]["adapters"]
    [placed] = entry["placed"]
    denied = f"{PRIVATE}/support:v1: ArtifactAccessDenied: the registry refused the credentials (401)"
    sidecars.errors[PODS[placed]] = {entry["servedName"]: denied}
    other = next(ip for pod, ip in PODS.items() if pod != placed)
    sidecars.errors[other] = {"someone/else/adapter": "not placed here: not reported"}

    result = await reconcile("servingpools", POOL_NS, "smollm")
    assert result.outcome.state == "Stalled" and result.outcome.reason == "AdapterSyncFailed"
    assert result.outcome.message == f"team-a/assistant/support on {placed}: {denied}"
    [entry] = (emulator.get("servingpools", POOL_NS, "smollm") or {})["status"]["adapters"]
    assert entry["errors"] == [f"{placed}: {denied}"] and entry["loaded"] == []
    await settled(reconciler)  # the pool told the endpoint: its part changed
    stalled = condition(emulator.get("hybridendpoints", "team-a", "assistant"), "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "AdapterSyncFailed"
    assert f"support on {placed}: {denied}" in stalled["message"]

    # The Secret fixed: the sidecar's next round loads it and reports no error.
    sidecars.errors[PODS[placed]] = {}
    sidecars.loaded[PODS[placed]] = {entry["servedName"]: f"/var/cache/tandem/adapters/{DIGEST}"}
    result = await reconcile("servingpools", POOL_NS, "smollm")
    assert result.outcome.state == "Ready", result.outcome
    await settled(reconciler)
    he = await reconcile("hybridendpoints", "team-a", "assistant")
    assert he.outcome.state == "Ready", he.outcome
    assert "errors" not in (emulator.get("servingpools", POOL_NS, "smollm") or {})["status"]["adapters"][0]
