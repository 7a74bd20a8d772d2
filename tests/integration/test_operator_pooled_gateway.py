"""What an endpoint on a ServingPool learns from its own gateway pods (issue 16, items 3 and 4), against the
API emulator: their /healthz/dependencies, as for an endpoint with its own vLLM. A KnowledgeBase the
gateway cannot search makes the endpoint RetrievalUnavailable, not Serving; a request the gateway answered
503 because no pod had its adapter ("the placement is told") reconciles the pool at once.

The gateway pod is a stand-in: a Ready pod recorded at 127.0.0.4 and an HTTP server there answering
/healthz/dependencies as the real gateway's body is shaped (tandem.workloads.gateway.app); the pool's pods
and sidecars are the stand-ins of test_operator_serving_pool.py.
"""

from __future__ import annotations

import asyncio
import time
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
from tests.cluster_controllers import run_ready_pod
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
    record_triggers,
    roll_out,
    run_pool_pods,
    settled,
    sidecars,
)

pytestmark = pytest.mark.integration

GATEWAY_IP = "127.0.0.4"
SERVED = "team-a/assistant/support"


class Gateway:
    """The endpoint's gateway pod's /healthz/dependencies: vLLM (the pool) answers; the test sets what
    else it says."""

    def __init__(self) -> None:
        self.port = free_port()
        self.knowledge_bases: dict[str, Any] = {}
        self.misses: dict[str, Any] = {}
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz/dependencies", self.dependencies)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, GATEWAY_IP, self.port).start()

    async def dependencies(self, _: web.Request) -> web.Response:
        down = any(not kb["ok"] for kb in self.knowledge_bases.values())
        body = {
            "vllm": {"ok": True},
            "knowledgeBases": self.knowledge_bases,
            "routes": {"support": True, "ask": not down},
            "pool": {"pods": [], "misses": self.misses},
        }
        return web.json_response(body, status=503 if down else 200)


@pytest_asyncio.fixture()
async def gateway() -> AsyncIterator[Gateway]:
    found = Gateway()
    await found.start()
    try:
        yield found
    finally:
        assert found.runner is not None
        await found.runner.cleanup()


async def test_the_endpoint_reads_its_gateways_and_tells_the_pool_of_misses(
    emulator: Emulator,
    kube: KubeApi,
    sidecars: Sidecars,  # noqa: F811  (the fixture imported above)
    gateway: Gateway,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = OperatorSettings(adapter_status_port=sidecars.port, gateway_port=gateway.port)
    reconciler = Reconciler(kube, settings)
    told = record_triggers(reconciler, monkeypatch)
    emulator.create(POOL)
    emulator.create(GRANT)
    emulator.create(endpoint("team-a", "assistant"))

    def cluster() -> None:
        run_pool_pods(emulator)
        with httpx.Client(base_url=emulator.url, timeout=10) as client:
            mine = Owner("tandem.dev/v1alpha1", "HybridEndpoint", "team-a", "assistant", "").labels("gateway")
            run_ready_pod(client, "team-a", "assistant-gateway-0", mine, GATEWAY_IP)
        roll_out(emulator)

    async def reconcile_endpoint() -> Any:
        result = await reconciler.reconcile(emulator.get("hybridendpoints", "team-a", "assistant") or {})
        await settled(reconciler)
        return result

    # Attached, rolled out, its adapter loaded where placed: Serving, and the pool is told nothing.
    await reconcile_endpoint()
    await asyncio.to_thread(cluster)
    await reconciler.reconcile(emulator.get("servingpools", POOL_NS, "smollm") or {})
    [placed] = pool_status(emulator)["adapters"][0]["placed"]
    sidecars.loaded[PODS[placed]] = {SERVED: f"/var/cache/tandem/adapters/{DIGEST}"}
    await reconciler.reconcile(emulator.get("servingpools", POOL_NS, "smollm") or {})
    await settled(reconciler)
    told.clear()
    result = await reconcile_endpoint()
    assert result.outcome.reason == "Serving", result.outcome
    assert told == []

    # The gateway cannot search a KnowledgeBase: not Serving, and the message says which.
    gateway.knowledge_bases = {"team-a/handbook": {"ok": False, "error": "KnowledgeBase handbook: timed out"}}
    result = await reconcile_endpoint()
    assert (result.outcome.state, result.outcome.reason) == ("Stalled", "RetrievalUnavailable"), (
        result.outcome
    )
    assert "handbook" in result.outcome.message and "support still answers" in result.outcome.message
    gateway.knowledge_bases = {}

    # A request found the adapter on no pod just now: the pool is told (reconciled at once).
    gateway.misses = {"support": {"servedName": SERVED, "count": 1, "lastAt": round(time.time(), 3)}}
    result = await reconcile_endpoint()
    assert ("ServingPool", POOL_NS, "smollm") in told
    # A miss older than a resync period was seen by the pool's own resync since: not told again.
    told.clear()
    gateway.misses["support"]["lastAt"] = time.time() - 2 * settings.resync_seconds
    await reconcile_endpoint()
    assert told == []
