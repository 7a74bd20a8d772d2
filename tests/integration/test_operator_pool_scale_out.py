"""A ServingPool scaled out against the API emulator (issue 16, "placement after scale-out"): with one pod,
every adapter is placed there; once a second pod runs, the adapters whose rendezvous ranking prefers it
move there and only those (each move is a reload), the rest stay loaded where they are, and status shows
a moved adapter loaded where its vLLM still lists it, not where it is placed, until the sidecars act.

In a cluster the pool is reconciled when its vLLM Deployment changes (a child event: new replicas, then a
new ready pod); here the test reconciles it by hand at those points. Pods, the kubelet and the sidecars are
stand-ins (see test_operator_serving_pool.py); the pool's own rendezvous is tandem.core.placement.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tandem.core.placement import rank
from tandem.platform.kubernetes.api import KubeApi
from tandem.platform.kubernetes.ownership import Owner
from tandem.platform.kubernetes.reconciler import Reconciler
from tandem.platform.kubernetes.settings import OperatorSettings
from tests.cluster_controllers import roll_out_deployments, run_ready_pod
from tests.emulator.server import Emulator
from tests.integration.test_operator_serving_pool import (  # noqa: F401  (the stand-in sidecars' fixture)
    DIGEST,
    GRANT,
    PODS,
    POOL,
    POOL_NS,
    Sidecars,
    endpoint,
    pool_status,
    settled,
    sidecars,
)

pytestmark = pytest.mark.integration

ENDPOINTS = [f"assistant-{i}" for i in range(6)]
FIRST, SECOND = list(PODS)


def shares(emulator: Emulator) -> dict[str, list[str]]:
    config = next(
        c
        for c in emulator.list_objects("v1/configmaps", POOL_NS)
        if c["metadata"]["name"] == "smollm-placement"
    )
    return {
        key.removesuffix(".json"): sorted(a["name"] for a in json.loads(value)["adapters"])
        for key, value in config["data"].items()
        if key.removesuffix(".json") in PODS
    }


async def test_a_second_pod_takes_the_adapters_that_prefer_it_and_no_others(
    emulator: Emulator,
    kube: KubeApi,
    api: httpx.AsyncClient,
    sidecars: Sidecars,  # noqa: F811  (the fixture imported above)
) -> None:
    reconciler = Reconciler(kube, OperatorSettings(adapter_status_port=sidecars.port))
    pool = {**POOL, "spec": {**POOL["spec"], "serving": {"replicas": 1}}}
    emulator.create(pool)
    emulator.create(GRANT)
    for name in ENDPOINTS:
        emulator.create(endpoint("team-a", name))

    async def reconcile(resource: str, namespace: str, name: str) -> Any:
        return await reconciler.reconcile(emulator.get(resource, namespace, name) or {})

    def start(pod: str) -> None:
        with httpx.Client(base_url=emulator.url, timeout=10) as client:
            labels = Owner("tandem.dev/v1alpha1", "ServingPool", POOL_NS, "smollm", "").labels("vllm")
            run_ready_pod(client, POOL_NS, pod, labels, PODS[pod])

    def kubelet() -> None:
        with httpx.Client(base_url=emulator.url, timeout=10) as client:
            roll_out_deployments(client, POOL_NS)

    for name in ENDPOINTS:  # each records its key digest; the pool attaches them
        await reconcile("hybridendpoints", "team-a", name)
    served = sorted(f"team-a/{name}/support" for name in ENDPOINTS)
    folder = f"/var/cache/tandem/adapters/{DIGEST}"

    # One pod: every adapter placed on it, and loaded there.
    await asyncio.to_thread(start, FIRST)
    await reconcile("servingpools", POOL_NS, "smollm")
    await asyncio.to_thread(kubelet)
    assert shares(emulator) == {FIRST: served}
    sidecars.loaded[PODS[FIRST]] = dict.fromkeys(served, folder)
    result = await reconcile("servingpools", POOL_NS, "smollm")
    assert result.outcome.state == "Ready", result.outcome

    # Scaled out: a second pod runs. The adapters that rank it first move; the others stay put.
    scaled = await api.patch(
        f"/apis/tandem.dev/v1alpha1/namespaces/{POOL_NS}/servingpools/smollm",
        json={"spec": {"serving": {"replicas": 2}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert scaled.status_code == 200, scaled.text
    await asyncio.to_thread(start, SECOND)
    await reconcile("servingpools", POOL_NS, "smollm")
    await asyncio.to_thread(kubelet)
    prefer_second = sorted(s for s in served if rank(s, PODS)[0] == SECOND)
    assert 0 < len(prefer_second) < len(served), "the names give no move to check: pick others"
    assert shares(emulator) == {FIRST: sorted(set(served) - set(prefer_second)), SECOND: prefer_second}

    # Until the sidecars act, a moved adapter is still loaded on the first pod (its vLLM lists it, and a
    # gateway may still send it there) and not yet where it is placed: status says both, and not Ready.
    result = await reconcile("servingpools", POOL_NS, "smollm")
    entries = {e["servedName"]: e for e in pool_status(emulator)["adapters"]}
    assert all(entries[s]["placed"] == [SECOND] and entries[s]["loaded"] == [FIRST] for s in prefer_second)
    assert result.outcome.reason == "LoadingAdapters", result.outcome
    sidecars.loaded[PODS[FIRST]] = dict.fromkeys(sorted(set(served) - set(prefer_second)), folder)
    sidecars.loaded[PODS[SECOND]] = dict.fromkeys(prefer_second, folder)
    result = await reconcile("servingpools", POOL_NS, "smollm")
    assert result.outcome.state == "Ready", result.outcome
    entries = {e["servedName"]: e for e in pool_status(emulator)["adapters"]}
    assert {s: e["loaded"] for s, e in entries.items()} == {
        s: [SECOND if s in prefer_second else FIRST] for s in served
    }
    await settled(reconciler)
