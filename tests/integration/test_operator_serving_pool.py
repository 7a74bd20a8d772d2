"""ServingPool against the API emulator (issue 16): two namespaces' endpoints on one pool, the grant, the
placement over the pool's pods, what each pod's sidecar reports, a lost pod, and status at each step.

The emulator runs no controllers and no pods: the test records the pool's pods (Ready, with IPs 127.0.0.2
and 127.0.0.3 on loopback) and answers each pod's adapter-sync status port with a stand-in that says which
adapters that pod's vLLM has loaded (the real sidecar's port: tests/security/test_vllm_key.py; the real
vLLM end to end of a pool is not covered here). Deployments are rolled out by tests/cluster_controllers.
Not covered: the kubelet expanding $(POD_NAME) and refreshing the ConfigMap in the pods, DNS of the
headless Service, and NetworkPolicy enforcement.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiohttp import web

from tandem.platform.kubernetes.api import KubeApi
from tandem.platform.kubernetes.ownership import Owner
from tandem.platform.kubernetes.reconciler import Reconciler
from tandem.platform.kubernetes.settings import OperatorSettings
from tandem.platform.local.processes import free_port
from tests.cluster_controllers import roll_out_deployments, run_ready_pod
from tests.emulator.server import Emulator
from tests.integration.conftest import condition
from tests.manifests import example

pytestmark = pytest.mark.integration

POOL_NS = "serving"
MODEL = "hf://HuggingFaceTB/SmolLM2-135M-Instruct"
DIGEST = "ab" * 32
POOL = {
    "apiVersion": "tandem.dev/v1alpha1",
    "kind": "ServingPool",
    "metadata": {"name": "smollm", "namespace": POOL_NS},
    "spec": {"baseModel": {"uri": MODEL}, "serving": {"replicas": 2}, "placement": {"adapterReplicas": 1}},
}
GRANT = {
    "apiVersion": "tandem.dev/v1alpha1",
    "kind": "ReferenceGrant",
    "metadata": {"name": "team-a-may-use-smollm", "namespace": POOL_NS},
    "spec": {"from": [{"kind": "HybridEndpoint", "namespace": "team-a"}], "to": [{"kind": "ServingPool"}]},
}
PODS = {"smollm-vllm-0": "127.0.0.2", "smollm-vllm-1": "127.0.0.3"}


def endpoint(namespace: str, name: str) -> dict[str, Any]:
    he = copy.deepcopy(example("HybridEndpoint"))
    he["metadata"] = {"name": name, "namespace": namespace}
    he["spec"].update(
        baseModel={"uri": MODEL},
        servingPoolRef={"name": "smollm", "namespace": POOL_NS},
        adapters=[
            {"name": "support", "uri": f"oci://127.0.0.1:5000/{name}/support", "digest": DIGEST, "rank": 8}
        ],
        knowledgeBases=[],
        routes=[{"name": "support", "adapter": "support", "retrieval": False}],
        serving={},
    )
    return he


class Sidecars:
    """What each pool pod's adapter-sync status port answers: the adapters its vLLM has loaded."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.loaded: dict[str, dict[str, str]] = {ip: {} for ip in PODS.values()}
        self.errors: dict[str, dict[str, str]] = {ip: {} for ip in PODS.values()}  # the last round's
        self.runners: list[web.AppRunner] = []

    async def start(self) -> None:
        for ip in PODS.values():
            app = web.Application()
            app.router.add_get("/v1/models", self._handler(ip))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, ip, self.port).start()
            self.runners.append(runner)

    def _handler(self, ip: str) -> Any:
        async def models(_: web.Request) -> web.Response:
            data = [{"id": n, "root": root, "parent": "base"} for n, root in self.loaded[ip].items()]
            return web.json_response({"object": "list", "data": data, "errors": self.errors[ip]})

        return models

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


@pytest_asyncio.fixture()
async def sidecars() -> AsyncIterator[Sidecars]:
    found = Sidecars(free_port())
    await found.start()
    try:
        yield found
    finally:
        await found.stop()


def run_pool_pods(emulator: Emulator) -> None:
    """The pool's pods, recorded Ready at their loopback addresses (the emulator runs no kubelet)."""
    with httpx.Client(base_url=emulator.url, timeout=10) as client:
        labels = Owner("tandem.dev/v1alpha1", "ServingPool", POOL_NS, "smollm", "").labels("vllm")
        for name, ip in PODS.items():
            run_ready_pod(client, POOL_NS, name, labels, ip)


def roll_out(emulator: Emulator) -> None:
    """The Deployments of the pool's namespace and team-a's, rolled out as a cluster's controllers would."""
    with httpx.Client(base_url=emulator.url, timeout=10) as client:
        for ns in (POOL_NS, "team-a"):
            roll_out_deployments(client, ns)


def pool_status(emulator: Emulator) -> dict[str, Any]:
    return (emulator.get("servingpools", POOL_NS, "smollm") or {}).get("status") or {}


def record_triggers(reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    """Every (kind, namespace, name) the reconciler triggers from now on, in order; each still runs."""
    told: list[tuple[str, str, str]] = []
    trigger = reconciler.trigger

    async def recording(kind: str, namespace: str, name: str) -> Any:
        told.append((kind, namespace, name))
        return await trigger(kind, namespace, name)

    monkeypatch.setattr(reconciler, "trigger", recording)
    return told


async def settled(reconciler: Reconciler) -> None:
    """Wait for what the reconciler started beside the reconciliations the test ran (a pool telling its
    endpoints, an endpoint telling its pool), and for what those started: a loop would time out here."""

    async def drain() -> None:
        while reconciler._background:
            await asyncio.gather(*reconciler._background)

    await asyncio.wait_for(drain(), timeout=10)


async def test_two_namespaces_one_pool_placement_and_a_lost_pod(
    emulator: Emulator, kube: KubeApi, api: httpx.AsyncClient, sidecars: Sidecars
) -> None:
    settings = OperatorSettings(adapter_status_port=sidecars.port)
    reconciler = Reconciler(kube, settings)
    emulator.create(POOL)
    emulator.create(GRANT)
    emulator.create(endpoint("team-a", "assistant"))
    emulator.create(endpoint("team-b", "helpdesk"))  # no grant for team-b

    async def reconcile(resource: str, namespace: str, name: str) -> Any:
        return await reconciler.reconcile(emulator.get(resource, namespace, name) or {})

    async def kubelet() -> None:
        await asyncio.to_thread(roll_out, emulator)

    # The endpoint of team-a: its gateway only (the pool runs vLLM), and a key whose digest it records.
    result = await reconcile("hybridendpoints", "team-a", "assistant")
    assert result.outcome.reason == "WaitingForPool", result.outcome
    he = emulator.get("hybridendpoints", "team-a", "assistant") or {}
    digest = he["status"]["vllmKeyDigest"]
    assert len(digest) == 64
    kinds = sorted(c["kind"] for c in emulator.list_objects("v1/configmaps", "team-a"))
    assert kinds == ["ConfigMap"]
    assert not [
        d
        for d in emulator.list_objects("apps/v1/deployments", "team-a")
        if d["metadata"]["name"].endswith("-vllm")
    ]
    gateway_config = json.loads(emulator.list_objects("v1/configmaps", "team-a")[0]["data"]["gateway.json"])
    assert gateway_config["vllmPool"]["dns"] == "smollm-vllm.serving.svc.cluster.local"
    assert gateway_config["adapters"][0]["servedName"] == "team-a/assistant/support"
    # team-b names the pool without a grant: refused, and said so on both sides.
    refused = await reconcile("hybridendpoints", "team-b", "helpdesk")
    assert refused.outcome.reason == "ReferenceNotPermitted"

    # The pool, with its two pods running.
    await asyncio.to_thread(run_pool_pods, emulator)
    await reconcile("servingpools", POOL_NS, "smollm")
    await kubelet()
    result = await reconcile("servingpools", POOL_NS, "smollm")
    status = pool_status(emulator)
    assert status["endpoints"] == ["team-a/assistant"]
    assert status["refused"] == [
        "team-b/helpdesk: no ReferenceGrant in serving allows HybridEndpoints from team-b"
    ]
    [entry] = status["adapters"]
    assert entry["servedName"] == "team-a/assistant/support" and len(entry["placed"]) == 1
    assert entry["loaded"] == [] and result.outcome.reason == "LoadingAdapters"  # nothing observed yet
    [placed] = entry["placed"]
    config = next(
        c
        for c in emulator.list_objects("v1/configmaps", POOL_NS)
        if c["metadata"]["name"] == "smollm-placement"
    )
    assert json.loads(config["data"]["keys.json"]) == [digest]
    share = {p: [a["name"] for a in json.loads(config["data"][f"{p}.json"])["adapters"]] for p in PODS}
    assert share[placed] == ["team-a/assistant/support"] and sum(map(len, share.values())) == 1
    [policy] = emulator.list_objects("networking.k8s.io/v1/networkpolicies", POOL_NS)
    assert policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "team-a"
    ]

    # The placed pod's vLLM lists it (from the cache folder named by its digest): Ready.
    path = f"/var/cache/tandem/adapters/{DIGEST}"
    other = next(p for p in PODS if p != placed)
    sidecars.loaded[PODS[other]] = {"team-a/assistant/support": "/somewhere/else"}  # not from its folder
    result = await reconcile("servingpools", POOL_NS, "smollm")
    assert result.outcome.reason == "LoadingAdapters"
    sidecars.loaded[PODS[placed]] = {"team-a/assistant/support": path}
    result = await reconcile("servingpools", POOL_NS, "smollm")
    assert result.outcome.state == "Ready", result.outcome
    assert pool_status(emulator)["adapters"][0]["loaded"] == [placed]
    he_result = await reconcile("hybridendpoints", "team-a", "assistant")
    await kubelet()
    he_result = await reconcile("hybridendpoints", "team-a", "assistant")
    assert he_result.outcome.reason == "Serving", he_result.outcome
    he_status = (emulator.get("hybridendpoints", "team-a", "assistant") or {})["status"]
    assert he_status["adapters"] == [{"name": "support", "loadedReplicas": 1, "ready": True}]
    assert he_status["servingPool"] == "serving/smollm"
    assert condition(emulator.get("hybridendpoints", "team-b", "helpdesk"), "Stalled")["status"] == "True"

    # The pod holding the adapter is lost: the adapter is placed on the other, and status says it is not
    # loaded anywhere until that pod's vLLM lists it.
    gone = await api.delete(f"/api/v1/namespaces/{POOL_NS}/pods/{placed}")
    assert gone.status_code == 200
    sidecars.loaded[PODS[placed]] = {}
    result = await reconcile("servingpools", POOL_NS, "smollm")
    [entry] = pool_status(emulator)["adapters"]
    assert entry["placed"] == [other] and entry["loaded"] == []
    assert result.outcome.state != "Ready"
    he_result = await reconcile("hybridendpoints", "team-a", "assistant")
    assert he_result.outcome.reason == "LoadingAdapters"

    # Deleted: finalizing the endpoint re-reconciles its pool at once (not at the pool's next resync), so its
    # key digest leaves the pool, and so does its namespace's way in. (A finalizer stands in for kopf's.)
    path = "/apis/tandem.dev/v1alpha1/namespaces/team-a/hybridendpoints/assistant"
    held = await api.patch(
        path,
        json={"metadata": {"finalizers": ["test.tandem.dev/hold"]}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert held.status_code == 200, held.text
    await api.delete(path)
    deleting = emulator.get("hybridendpoints", "team-a", "assistant") or {}
    assert deleting["metadata"].get("deletionTimestamp")
    await reconciler.finalize(deleting)
    await settled(reconciler)
    config = next(
        c
        for c in emulator.list_objects("v1/configmaps", POOL_NS)
        if c["metadata"]["name"] == "smollm-placement"
    )
    assert json.loads(config["data"]["keys.json"]) == []
    [policy] = emulator.list_objects("networking.k8s.io/v1/networkpolicies", POOL_NS)
    assert len(policy["spec"]["ingress"]) == 1  # the operator's status reads only


async def test_an_attached_endpoints_status_follows_its_pools_at_once(
    emulator: Emulator, kube: KubeApi, sidecars: Sidecars, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the pool's status changes the endpoint's part of it (attached, an adapter loaded), the pool's
    reconciliation reconciles that endpoint at once, not at the endpoint's resync (60 s; here: never); a pool
    pass that changes no endpoint's part reconciles none, and nothing keeps waking the other."""
    reconciler = Reconciler(kube, OperatorSettings(adapter_status_port=sidecars.port))
    told = record_triggers(reconciler, monkeypatch)
    emulator.create(POOL)
    emulator.create(GRANT)
    emulator.create(endpoint("team-a", "assistant"))

    def he_status() -> dict[str, Any]:
        return (emulator.get("hybridendpoints", "team-a", "assistant") or {}).get("status") or {}

    # Not attached yet: the endpoint tells the pool, and the pool, attaching it, tells the endpoint.
    await asyncio.to_thread(run_pool_pods, emulator)
    first = await reconciler.reconcile(emulator.get("hybridendpoints", "team-a", "assistant") or {})
    assert first.outcome.reason == "WaitingForPool", first.outcome
    await settled(reconciler)
    assert told == [("ServingPool", POOL_NS, "smollm"), ("HybridEndpoint", "team-a", "assistant")]
    assert pool_status(emulator)["endpoints"] == ["team-a/assistant"]
    ready = condition({"status": he_status()}, "Ready")
    assert ready["reason"] != "WaitingForPool", ready  # it follows: the pool has attached it
    await asyncio.to_thread(roll_out, emulator)  # the gateway and the pool's vLLM roll out
    await reconciler.reconcile(emulator.get("hybridendpoints", "team-a", "assistant") or {})
    assert condition({"status": he_status()}, "Ready")["reason"] == "LoadingAdapters"

    # A pool pass that changes no endpoint's part of its status (replicas ready now) tells no endpoint.
    told.clear()
    await reconciler.reconcile(emulator.get("servingpools", POOL_NS, "smollm") or {})
    await settled(reconciler)
    assert told == []

    # The placed pod's vLLM lists the adapter: reconciling the pool alone makes the endpoint Serving.
    [entry] = pool_status(emulator)["adapters"]
    [placed] = entry["placed"]
    sidecars.loaded[PODS[placed]] = {"team-a/assistant/support": f"/var/cache/tandem/adapters/{DIGEST}"}
    result = await reconciler.reconcile(emulator.get("servingpools", POOL_NS, "smollm") or {})
    assert result.outcome.state == "Ready", result.outcome
    await settled(reconciler)
    assert told == [
        ("HybridEndpoint", "team-a", "assistant")
    ]  # it, attached as it is, tells the pool nothing
    assert condition({"status": he_status()}, "Ready")["reason"] == "Serving"
    assert he_status()["adapters"] == [{"name": "support", "loadedReplicas": 1, "ready": True}]

    # Steady: another pool pass tells no one.
    told.clear()
    await reconciler.reconcile(emulator.get("servingpools", POOL_NS, "smollm") or {})
    await settled(reconciler)
    assert told == []


async def test_a_pool_told_to_scale_with_keda_on_a_cluster_without_it_stalls_saying_so(
    emulator: Emulator, kube: KubeApi
) -> None:
    """The emulator, as a cluster without KEDA, answers 404 for ScaledObjects: the pool is Stalled with
    what to install, instead of retrying the write forever as a transient error."""
    pool = copy.deepcopy(POOL)
    pool["spec"]["serving"] = {"autoscaling": {"minReplicas": 0, "maxReplicas": 2}}
    emulator.create(pool)
    settings = OperatorSettings(keda_prometheus_url="http://prometheus.monitoring.svc:9090")
    result = await Reconciler(kube, settings).reconcile(emulator.get("servingpools", POOL_NS, "smollm") or {})
    assert result.outcome.state == "Stalled" and result.outcome.reason == "KindNotInstalled"
    assert "ScaledObject (keda.sh/v1alpha1)" in result.outcome.message and "install" in result.outcome.message
    stored = emulator.get("servingpools", POOL_NS, "smollm") or {}
    assert condition(stored, "Stalled")["reason"] == "KindNotInstalled"


async def test_a_pooled_endpoints_new_key_reaches_the_pool_at_once(
    emulator: Emulator, kube: KubeApi, api: httpx.AsyncClient
) -> None:
    """The pool accepts an attached gateway's key by the digest the endpoint's status records. When the key
    is created (the first attach) or rotated (its Secret deleted: the operator makes a new one), the pool
    takes the new digest as soon as the endpoint's status holds it, not at the pool's next resync (until
    then the gateway, which re-reads its key file, is refused 401 by every pod)."""
    reconciler = Reconciler(kube, OperatorSettings())
    emulator.create(POOL)
    emulator.create(GRANT)
    emulator.create(endpoint("team-a", "assistant"))

    def keys() -> list[str]:
        [config] = [
            c
            for c in emulator.list_objects("v1/configmaps", POOL_NS)
            if c["metadata"]["name"] == "smollm-placement"
        ]
        return json.loads(config["data"]["keys.json"])

    def recorded() -> str:
        return (emulator.get("hybridendpoints", "team-a", "assistant") or {})["status"]["vllmKeyDigest"]

    await reconciler.reconcile(emulator.get("hybridendpoints", "team-a", "assistant") or {})
    await settled(reconciler)
    first = recorded()
    assert keys() == [first]

    gone = await api.delete("/api/v1/namespaces/team-a/secrets/assistant-vllm-key")
    assert gone.status_code == 200, gone.text
    await reconciler.reconcile(emulator.get("hybridendpoints", "team-a", "assistant") or {})
    await settled(reconciler)
    assert recorded() != first and keys() == [recorded()]


async def test_an_attached_endpoint_says_at_once_that_its_pool_is_gone(
    emulator: Emulator, kube: KubeApi, api: httpx.AsyncClient
) -> None:
    """Deleting a ServingPool takes its vLLM pods away from every attached endpoint: each is told at once
    (the pool's delete handler reconciles them) and is no longer Ready, saying the pool is not found."""
    reconciler = Reconciler(kube, OperatorSettings())
    emulator.create(POOL)
    emulator.create(GRANT)
    emulator.create(endpoint("team-a", "assistant"))
    await reconciler.reconcile(emulator.get("hybridendpoints", "team-a", "assistant") or {})
    await settled(reconciler)
    pool = emulator.get("servingpools", POOL_NS, "smollm") or {}
    assert pool["status"]["endpoints"] == ["team-a/assistant"]

    gone = await api.delete(f"/apis/tandem.dev/v1alpha1/namespaces/{POOL_NS}/servingpools/smollm")
    assert gone.status_code == 200, gone.text
    await reconciler.finalize(pool)  # kopf's delete handler, with the pool's last body
    await settled(reconciler)
    ready = condition(emulator.get("hybridendpoints", "team-a", "assistant"), "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ServingPoolNotFound", ready
    assert ready["message"] == "ServingPool serving/smollm does not exist"
