"""Hostile pods answering the operator: the operator reads each vLLM pod's adapter-sync status port and
each gateway pod's /healthz/dependencies, and one operator serves every namespace. A pod whose image the
manifest's author chose (a HybridEndpoint's serving.image runs beside the adapter sync, in its network)
may answer with gigabytes or trickle its answer forever. Each read is bounded in size and in total time:
the pod is taken as not answering (nothing claimed loaded, the gateway "does not answer"), and an honest
pod beside it is still read.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from aiohttp import web

from tandem.platform.kubernetes.adapters import observe_pods
from tandem.platform.kubernetes.gateway_health import dependencies_per_pod
from tandem.platform.local.processes import free_port

HONEST, HUGE, TRICKLE = "127.0.0.2", "127.0.0.3", "127.0.0.4"
HUGE_BYTES = 16 * 1024 * 1024  # 16 times what the operator reads of an answer


async def _huge(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    await response.write(b'{"data": [')
    entry = json.dumps({"id": "x", "root": "/r", "parent": "base"}).encode() + b","
    for _ in range(HUGE_BYTES // len(entry)):
        await response.write(entry)
    await response.write(b'{"id": "y", "parent": "base"}]}')
    return response


async def _trickle(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    for byte in b'{"data": [], "routes": {}, "errors": {}}' * 1000:
        await response.write(bytes([byte]))
        await asyncio.sleep(0.2)  # each byte well within any per-read timeout
    return response


async def _honest(request: web.Request) -> web.Response:
    if request.path == "/v1/models":
        loaded = [{"id": "support", "root": "/cache/abc", "parent": "base"}]
        return web.json_response({"object": "list", "data": loaded, "errors": {}})
    return web.json_response({"routes": {"support": "ok"}, "vllm": "ok", "knowledgeBases": {}})


@pytest_asyncio.fixture()
async def peers() -> AsyncIterator[int]:
    """The three pods' answers on one port of three loopback addresses."""
    port = free_port()
    runners = []
    for ip, handler in ((HONEST, _honest), (HUGE, _huge), (TRICKLE, _trickle)):
        app = web.Application()
        app.router.add_get("/v1/models", handler)
        app.router.add_get("/healthz/dependencies", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, ip, port).start()
        runners.append(runner)
    try:
        yield port
    finally:
        for runner in runners:
            await runner.cleanup()


def pod(name: str, ip: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    }


PODS = [pod("honest", HONEST), pod("huge", HUGE), pod("trickle", TRICKLE)]


async def test_a_status_port_answering_too_much_or_too_slowly_claims_nothing(peers: int) -> None:
    started = time.monotonic()
    found = await observe_pods(PODS, peers, timeout=2.0)
    assert time.monotonic() - started < 10  # the trickle would take 30 minutes
    assert found["honest"].loaded == {"support": "/cache/abc"}
    assert found["huge"].loaded == {} and found["trickle"].loaded == {}


async def test_a_gateway_answering_too_much_or_too_slowly_does_not_answer(peers: int) -> None:
    started = time.monotonic()
    honest, huge, trickle = await dependencies_per_pod(PODS, peers, timeout=2.0)
    assert time.monotonic() - started < 10
    assert isinstance(honest, dict) and honest["routes"] == {"support": "ok"}
    assert huge == f"the gateway pod huge ({HUGE}:{peers}) does not answer (AnswerTooLarge)"
    assert trickle == f"the gateway pod trickle ({TRICKLE}:{peers}) does not answer (TimeoutError)"
