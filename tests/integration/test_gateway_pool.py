"""The gateway in front of a shared serving pool (issue 16, item 4): the real gateway process, routing by
affinity over two pods.

The pods here are test doubles of vLLM, not vLLM: small aiohttp servers on loopback ports, each in a
thread of this process, that serve `/v1/models` (their share of the pool's adapters, as vLLM lists them:
`parent` set, `id` the served name) and `/v1/chat/completions`, require the pool's key as a Bearer token,
and record which request reached them. What is checked is where the gateway sends requests, not what a
model answers; the end to end with real vLLM pods (each loading its share through the adapter sync) is a
separate test.

Shown: every request lands on a pod that has its adapter loaded (from the pods' own records); requests for
an adapter on both pods spread by in-flight count, a stream holding its pod until it ends; an adapter
placed nowhere is a 503 with Retry-After, counted on the internal port; an adapter loaded since the last
poll is found at once; the pool's key is sent; a tenant cannot reach another endpoint's adapter loaded in
the same pool; a pod that goes away is skipped and used again once it answers a poll.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.integration.test_gateway import GatewayProcess

pytestmark = pytest.mark.integration

POOL_KEY = "pool-key-5d1c"
TENANT_KEY = "sk-team-a-81fe"
# Served names in the pool: this endpoint's adapters are loaded as teama-*; teamb-secret is another
# endpoint's adapter, loaded on pod A too.
ALPHA, BETA, BOTH, GHOST, LATE = (
    "teama-alpha-1111",
    "teama-beta-2222",
    "teama-both-3333",
    "teama-ghost-5555",
    "teama-late-6666",
)
OTHER_TEAMS = "teamb-secret-4444"


class FakeVllm:
    """A vLLM double on 127.0.0.1 (a free port), served by its own event loop in a thread."""

    def __init__(self, name: str, adapters: set[str]) -> None:
        self.name = name
        self.adapters = set(adapters)
        self.calls: list[dict[str, Any]] = []  # each chat request that reached this pod
        self.polls: list[str | None] = []  # the Authorization header of each /v1/models
        self.refused = 0  # requests without the pool's key
        self.in_flight = 0
        self.max_in_flight = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.port = self._run(self._start(0))
        self.url = f"http://127.0.0.1:{self.port}"

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _start(self, port: int) -> int:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        return int(self._runner.addresses[0][1])

    async def _health(self, _: web.Request) -> web.Response:
        return web.Response()

    def stop(self) -> None:
        self._run(self._runner.cleanup())

    def restart(self) -> None:
        self._run(self._start(self.port))

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _authorized(self, request: web.Request) -> bool:
        if request.headers.get("Authorization") == f"Bearer {POOL_KEY}":
            return True
        self.refused += 1
        return False

    async def _models(self, request: web.Request) -> web.Response:
        self.polls.append(request.headers.get("Authorization"))
        if not self._authorized(request):
            return web.json_response({"error": {"message": "Unauthorized"}}, status=401)
        data = [{"id": "base", "object": "model", "root": "/models/base", "parent": None}] + [
            {"id": a, "object": "model", "root": f"/adapters/{a}", "parent": "base"}
            for a in sorted(self.adapters)
        ]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response({"error": {"message": "Unauthorized"}}, status=401)
        body = await request.json()
        model = body["model"]
        self.calls.append({"model": model, "stream": bool(body.get("stream"))})
        if model != "base" and model not in self.adapters:
            return web.json_response(
                {"error": {"message": f"The model `{model}` does not exist."}}, status=404
            )
        delay = float(body.get("fake_delay", 0))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            text = f"answered by {self.name}"
            usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
            if not body.get("stream"):
                await asyncio.sleep(delay)
                message = {"role": "assistant", "content": text}
                choices = [{"index": 0, "message": message, "finish_reason": "stop"}]
                return web.json_response(
                    {
                        "id": "cmpl-1",
                        "object": "chat.completion",
                        "model": model,
                        "choices": choices,
                        "usage": usage,
                    }
                )
            out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await out.prepare(request)
            chunk = {"id": "cmpl-1", "object": "chat.completion.chunk", "model": model}
            first = {**chunk, "choices": [{"index": 0, "delta": {"content": text}}]}
            await out.write(f"data: {json.dumps(first)}\n\n".encode())
            await asyncio.sleep(delay)  # the stream stays open this long: its pod stays in flight
            last = {**chunk, "choices": [], "usage": usage}
            await out.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())
            await out.write_eof()
            return out
        finally:
            self.in_flight -= 1

    def models_called(self) -> list[str]:
        return [c["model"] for c in self.calls]


def gateway_config(directory: Path, pods: list[FakeVllm], poll_seconds: float) -> dict[str, Any]:
    (directory / "pool-key").write_text(POOL_KEY)
    (directory / "team-a").write_text(TENANT_KEY)
    names = {"alpha": ALPHA, "beta": BETA, "both": BOTH, "ghost": GHOST, "late": LATE}
    return {
        "endpoint": {"namespace": "team-a", "name": "assistant"},
        "vllmPool": {"pods": [p.url for p in pods], "pollSeconds": poll_seconds, "retryAfterSeconds": 4},
        "vllmApiKeyFile": str(directory / "pool-key"),
        "baseModel": "base",
        "routes": [
            {"name": "base", "retrieval": False},
            *({"name": n, "adapter": n, "retrieval": False} for n in names),
        ],
        "adapters": [{"name": n, "path": f"/adapters/{n}", "servedName": s} for n, s in names.items()],
        "tenants": [{"name": "team-a", "apiKeyFile": str(directory / "team-a"), "maxConcurrentRequests": 16}],
    }


@pytest.fixture(scope="module")
def pods() -> Iterator[tuple[FakeVllm, FakeVllm]]:
    a = FakeVllm("pod-a", {ALPHA, BOTH, OTHER_TEAMS})
    b = FakeVllm("pod-b", {BETA, BOTH})
    yield a, b
    a.close()
    b.close()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, pods: tuple[FakeVllm, FakeVllm]
) -> Iterator[GatewayProcess]:
    directory = tmp_path_factory.mktemp("gateway-pool")
    # Polled at start and on a miss only (a long period): what a test finds is what those polls found.
    process = GatewayProcess(gateway_config(directory, list(pods), poll_seconds=300), directory)
    yield process
    process.stop()


def chat(gateway: GatewayProcess, model: str, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], **extra},
        headers={"Authorization": f"Bearer {TENANT_KEY}"},
        timeout=30,
    )


def internal(gateway: GatewayProcess, path: str) -> httpx.Response:
    return httpx.get(gateway.metrics_url.removesuffix("/metrics") + path, timeout=10)


def test_every_request_lands_on_a_pod_that_has_its_adapter(
    gateway: GatewayProcess, pods: tuple[FakeVllm, FakeVllm]
) -> None:
    a, b = pods
    before_a, before_b = len(a.calls), len(b.calls)
    for model in ["alpha", "beta", "both", "base"] * 3:
        response = chat(gateway, model)
        assert response.status_code == 200, response.text
        assert response.json()["model"] == model  # the caller's name, never the pool's
    new_a, new_b = a.models_called()[before_a:], b.models_called()[before_b:]
    assert new_a.count(ALPHA) == 3 and ALPHA not in new_b
    assert new_b.count(BETA) == 3 and BETA not in new_a
    assert new_a.count(BOTH) + new_b.count(BOTH) == 3 and new_a.count("base") + new_b.count("base") == 3
    assert set(new_a) <= a.adapters | {"base"} and set(new_b) <= b.adapters | {"base"}
    # The pool's key went with every call and every poll; none was refused.
    assert a.refused == b.refused == 0
    assert a.polls and set(a.polls) == set(b.polls) == {f"Bearer {POOL_KEY}"}


def test_concurrent_requests_spread_by_in_flight_count(
    gateway: GatewayProcess, pods: tuple[FakeVllm, FakeVllm]
) -> None:
    a, b = pods
    a.max_in_flight = b.max_in_flight = 0
    before_a, before_b = len(a.calls), len(b.calls)
    with ThreadPoolExecutor(6) as threads:
        answers = list(threads.map(lambda _: chat(gateway, "both", fake_delay=2.0), range(6)))
    assert [r.status_code for r in answers] == [200] * 6
    assert a.models_called()[before_a:] == [BOTH] * 3 and b.models_called()[before_b:] == [BOTH] * 3
    assert a.max_in_flight == b.max_in_flight == 3


def test_a_stream_holds_its_pod_until_it_ends(
    gateway: GatewayProcess, pods: tuple[FakeVllm, FakeVllm]
) -> None:
    a, b = pods
    body = {"model": "both", "messages": [{"role": "user", "content": "hi"}], "stream": True, "fake_delay": 3}
    headers = {"Authorization": f"Bearer {TENANT_KEY}"}
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=30
    ) as held:
        assert held.status_code == 200
        streaming, other = (a, b) if a.in_flight else (b, a)
        before_streaming, before_other = len(streaming.calls), len(other.calls)
        for _ in range(3):  # one at a time: the streaming pod has 1 in flight, the other none
            assert chat(gateway, "both").status_code == 200
        assert len(other.calls) - before_other == 3 and len(streaming.calls) == before_streaming
        text = held.read().decode()
    assert f"answered by {streaming.name}" in text and text.rstrip().endswith("data: [DONE]")
    pool = internal(gateway, "/healthz/dependencies").json()["pool"]
    assert [p["inFlight"] for p in pool["pods"]] == [0, 0]  # released when the stream ended


def test_an_adapter_placed_nowhere_is_503_with_retry_after_and_counted(
    gateway: GatewayProcess, pods: tuple[FakeVllm, FakeVllm]
) -> None:
    a, b = pods
    before = len(a.calls) + len(b.calls)
    response = chat(gateway, "ghost")
    assert response.status_code == 503 and response.headers["Retry-After"] == "4"
    error = response.json()["error"]
    assert error["code"] == "adapter_not_placed" and "'ghost'" in error["message"]
    assert GHOST not in response.text and "127.0.0.1" not in response.text  # no pool internals
    assert len(a.calls) + len(b.calls) == before  # no pod was asked

    metrics = httpx.get(gateway.metrics_url, timeout=10).text
    assert 'tandem_gateway_adapter_misses_total{adapter="ghost"} 1.0' in metrics
    assert httpx.get(f"{gateway.url}/metrics").status_code == 404  # the internal port only
    health = internal(gateway, "/healthz/dependencies").json()
    assert health["pool"]["misses"]["ghost"]["count"] == 1 and health["routes"]["ghost"] is False
    assert {p["address"]: sorted(p["adapters"]) for p in health["pool"]["pods"]} == {
        a.url: sorted(a.adapters),
        b.url: sorted(b.adapters),
    }


def test_an_adapter_loaded_since_the_last_poll_is_found_at_once(
    gateway: GatewayProcess, pods: tuple[FakeVllm, FakeVllm]
) -> None:
    _, b = pods
    b.adapters.add(LATE)  # B's sidecar loaded it; the next periodic poll is minutes away
    time.sleep(1.1)  # past the miss-poll rate limit of the last miss
    response = chat(gateway, "late")
    assert response.status_code == 200, response.text
    assert b.models_called()[-1] == LATE


def test_a_tenant_cannot_reach_another_endpoints_adapter_in_the_pool(
    gateway: GatewayProcess, pods: tuple[FakeVllm, FakeVllm]
) -> None:
    a, b = pods
    for model in (OTHER_TEAMS, ALPHA):  # loaded on pod A, but not a model of this endpoint by that name
        response = chat(gateway, model)
        assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    assert OTHER_TEAMS not in a.models_called() + b.models_called()
    assert (
        "teamb"
        not in httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {TENANT_KEY}"}).text
    )


def test_a_pod_that_goes_away_is_skipped_and_used_again_once_it_answers(tmp_path: Path) -> None:
    c, d = FakeVllm("pod-c", {BOTH}), FakeVllm("pod-d", {BOTH})
    process = GatewayProcess(gateway_config(tmp_path, [c, d], poll_seconds=0.5), tmp_path)
    try:
        c.stop()  # connections to C are refused from now on
        for _ in range(4):
            assert chat(process, "both").status_code == 200
        assert c.models_called() == [] and d.models_called() == [BOTH] * 4
        pods = internal(process, "/healthz/dependencies").json()["pool"]["pods"]
        assert [p["up"] for p in pods if p["address"] == c.url] == [False]

        c.restart()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pods = internal(process, "/healthz/dependencies").json()["pool"]["pods"]
            if all(p["up"] for p in pods):
                break
            time.sleep(0.2)
        assert all(p["up"] for p in pods)
        for _ in range(4):
            assert chat(process, "both").status_code == 200
        assert c.models_called() == [BOTH] * 2  # equally idle pods take turns
    finally:
        process.stop()
        c.close()
        d.close()
