"""Routing by affinity in a shared serving pool (issue 16, item 4), on fixed inputs.

The router alone, with a fake poller and clock: only pods that have the adapter loaded are chosen, the
least busy of them; a miss polls again at once (rate-limited) before raising AdapterNotPlaced; a pod that
refused a connection is skipped until a later poll. Then the gateway with a pool of stub pods (an httpx
mock transport): a tenant's model name maps to its endpoint's served name only, so another endpoint's
adapter in the same pool is an unknown model; a miss is a 503 with Retry-After in the caller's names,
counted, and reported on /healthz/dependencies. The real servers: tests/integration/test_gateway_pool.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tandem.workloads.gateway import pool as pool_module
from tandem.workloads.gateway.app import Gateway
from tandem.workloads.gateway.config import ConfigError, GatewayConfig, VllmPool, load_config
from tandem.workloads.gateway.pool import AdapterNotPlaced, PoolRouter

A, B, C = "http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.0.3:8000"


class FakePods:
    """What each pod's /v1/models lists (served names of its adapters); a pod absent from `up` fails."""

    def __init__(self, loaded: dict[str, set[str]]) -> None:
        self.loaded = loaded
        self.up = set(loaded)
        self.polls = 0

    async def resolve(self) -> list[str]:
        return list(self.loaded)

    async def fetch(self, url: str) -> list[dict[str, Any]]:
        self.polls += 1
        if url not in self.up:
            raise httpx.ConnectError("connection refused")
        return [{"id": "base", "parent": None}] + [{"id": a, "parent": "base"} for a in self.loaded[url]]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def router(pods: FakePods, clock: Clock | None = None) -> PoolRouter:
    clock = clock or Clock()
    return PoolRouter(
        VllmPool(pods=list(pods.loaded)),
        base_model="base",
        resolve=pods.resolve,
        fetch_models=pods.fetch,
        clock=clock,
        sleep=clock.sleep,
    )


async def test_only_pods_with_the_adapter_and_the_least_busy_of_them() -> None:
    pods = FakePods({A: {"x"}, B: {"x", "y"}, C: {"y"}})
    r = router(pods)
    await r.refresh()
    a, b, c = (r.pods[u] for u in (A, B, C))
    r.acquire(a)
    r.acquire(a)
    r.acquire(b)
    assert r.pick("x") is b  # C is idle but has no x
    r.acquire(b)
    r.acquire(b)
    assert r.pick("x") is a  # now B is the busier
    assert r.pick("y") is c
    for _ in range(5):
        r.release(b)  # over-released on purpose below: counts are the caller's to balance
    r.acquire(b)
    r.acquire(b)
    r.acquire(b)  # a: 2, b: 0
    assert r.pick("x") is b


async def test_equally_busy_pods_take_turns_and_the_base_model_is_on_every_pod() -> None:
    pods = FakePods({A: {"x"}, B: {"x"}, C: set()})
    r = router(pods)
    await r.refresh()
    assert {r.pick("x").url for _ in range(4)} == {A, B}
    assert [r.pick("x").url for _ in range(4)] in ([A, B, A, B], [B, A, B, A])
    assert {r.pick("base").url for _ in range(6)} == {A, B, C}


async def test_a_miss_is_answered_from_a_poll_begun_after_it_one_round_a_second_at_most() -> None:
    """The sidecar loads an adapter just after the gateway's last poll, and a request for it comes within
    the second: it is answered from a new round (not refused from the round before the load, as a
    restarted local pool's gateway once did), which waits for the second to pass."""
    clock = Clock()
    pods = FakePods({A: {"x"}, B: set()})
    r = router(pods, clock)
    await r.refresh()
    polls, started = pods.polls, clock.now
    pods.loaded[B] = {"y"}  # the sidecar loaded it since the last poll
    assert (await r.choose("y")).url == B
    assert pods.polls == polls + 2  # one round: both pods
    assert clock.now == started + pool_module.MISS_REFRESH_SECONDS  # not sooner than a second after the last
    with pytest.raises(AdapterNotPlaced) as missed:
        await r.choose("z")  # placed nowhere: one more round, a second later, then the miss
    assert missed.value.served_name == "z" and pods.polls == polls + 4
    assert clock.now == started + 2 * pool_module.MISS_REFRESH_SECONDS


async def test_concurrent_misses_share_one_poll() -> None:
    clock = Clock()
    pods = FakePods({A: set()})
    r = router(pods, clock)
    await r.refresh()
    clock.now += 10
    results = await asyncio.gather(*(r.choose("z") for _ in range(5)), return_exceptions=True)
    assert all(isinstance(e, AdapterNotPlaced) for e in results)
    assert pods.polls == 2  # the start's poll and one for the five misses


async def test_a_pod_that_refused_a_connection_is_skipped_until_a_later_poll_succeeds() -> None:
    clock = Clock()
    pods = FakePods({A: {"x"}, B: {"x"}})
    r = router(pods, clock)
    await r.refresh()
    a, b = r.pods[A], r.pods[B]
    r.acquire(b)
    r.mark_down(a, "ConnectError('refused')")
    assert r.pick("x") is b  # A is idle but down
    assert r.status()["pods"][0] == {
        "address": A,
        "up": False,
        "adapters": ["x"],
        "inFlight": 0,
        "error": "connection failed: ConnectError('refused')",
    }
    with pytest.raises(AdapterNotPlaced):
        r.pick("x", exclude=[b])
    clock.now += 1
    await r.refresh()  # begun after the refusal, and A answers: up again
    assert r.pick("x") is a


async def test_a_pod_failing_its_poll_is_down_and_dns_failures_keep_the_pods_seen() -> None:
    pods = FakePods({A: {"x"}, B: {"x"}})
    r = router(pods)
    await r.refresh()
    pods.up.discard(A)
    await r.refresh()
    assert not r.pods[A].up and "ConnectError" in (r.pods[A].error or "")
    assert [r.pick("x").url for _ in range(3)] == [B, B, B]

    async def no_dns() -> list[str]:
        raise socket.gaierror(-2, "Name or service not known")

    r._resolve = no_dns
    await r.refresh()
    assert set(r.pods) == {A, B} and r.pods[B].up
    assert "Name or service not known" in r.status()["error"]


async def test_dns_mode_resolves_every_ready_pod_of_the_headless_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[str, int]] = []

    async def getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
        asked.append((host, port))
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.0.7", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.0.5", port)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fd00::9", port, 0, 0)),
        ]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    r = PoolRouter(VllmPool(dns="pool-vllm.ml.svc.cluster.local", port=8000), base_model="base")
    assert await r._resolve() == ["http://10.1.0.5:8000", "http://10.1.0.7:8000", "http://[fd00::9]:8000"]
    assert asked == [("pool-vllm.ml.svc.cluster.local", 8000)]


async def test_misses_are_recorded_for_the_operator() -> None:
    r = router(FakePods({A: set()}))
    r.record_miss("support", "teama-support-1a2b")
    r.record_miss("support", "teama-support-1a2b")
    misses = r.status()["misses"]
    assert misses["support"]["count"] == 2 and misses["support"]["servedName"] == "teama-support-1a2b"


# --- configuration -----------------------------------------------------------------------------------


def write(tmp_path: Any, config: dict[str, Any]) -> Any:
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(config))
    return path


def test_exactly_one_of_a_vllm_url_and_a_pool(tmp_path: Any) -> None:
    base = {"endpoint": {"namespace": "a", "name": "b"}, "routes": [{"name": "base"}]}
    with pytest.raises(ConfigError, match="set exactly one of vllmUrl and vllmPool"):
        load_config(write(tmp_path, base))
    both = {**base, "vllmUrl": "http://v", "vllmPool": {"pods": ["http://127.0.0.1:8001"]}}
    with pytest.raises(ConfigError, match="set exactly one of vllmUrl and vllmPool"):
        load_config(write(tmp_path, both))
    with pytest.raises(ConfigError, match="exactly one of pods"):
        load_config(write(tmp_path, {**base, "vllmPool": {"pods": ["http://x:1"], "dns": "p.ns.svc"}}))
    with pytest.raises(ConfigError, match="not an http"):
        load_config(write(tmp_path, {**base, "vllmPool": {"pods": ["127.0.0.1:8001"]}}))
    config = load_config(
        write(
            tmp_path,
            {
                **base,
                "vllmPool": {
                    "dns": "pool-vllm.ml.svc.cluster.local",
                    "pollSeconds": 2,
                    "retryAfterSeconds": 7,
                },
                "adapters": [{"name": "support", "path": "/a", "servedName": "teama-support-1a2b"}],
            },
        )
    )
    assert config.vllm_pool is not None and config.vllm_pool.port == 8000
    assert config.vllm_pool.poll_seconds == 2 and config.vllm_pool.retry_after_seconds == 7
    assert config.served_name("support") == "teama-support-1a2b" and config.served_name(None) == "base"


# --- the gateway with a pool of stub pods -------------------------------------------------------------

TEAM_A = "teama-support-1a2b"
TEAM_B = "teamb-support-9f9f"  # another endpoint's adapter, loaded in the same pool


def pool_config(**pool: Any) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "endpoint": {"namespace": "team-a", "name": "assistant"},
            "vllmPool": {"pods": [A, B], "retryAfterSeconds": 9, **pool},
            "routes": [
                {"name": "base", "retrieval": False},
                {"name": "support", "adapter": "support", "retrieval": False},
                {"name": "billing", "adapter": "billing", "retrieval": False},
            ],
            "adapters": [
                {"name": "support", "path": "/a/support", "servedName": TEAM_A},
                {"name": "billing", "path": "/a/billing", "servedName": "teama-billing-77aa"},
            ],
        }
    )


class StubPool:
    """Pods behind an httpx mock transport: /v1/models from `loaded`; chat calls recorded per pod."""

    def __init__(self, loaded: dict[str, set[str]]) -> None:
        self.loaded = loaded
        self.refusing: set[str] = set()
        self.unauthorized: set[str] = set()  # pods whose guard does not accept this gateway's key
        self.calls: list[tuple[str, str]] = []  # (pod, model asked for)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        pod = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        if pod in self.refusing:
            raise httpx.ConnectError("connection refused")
        if pod in self.unauthorized:
            return httpx.Response(401, json={"error": "Unauthorized"})
        if request.url.path == "/v1/models":
            ids = [{"id": "base", "parent": None}] + [{"id": a, "parent": "base"} for a in self.loaded[pod]]
            return httpx.Response(200, json={"object": "list", "data": ids})
        model = json.loads(request.content)["model"]
        self.calls.append((pod, model))
        if model != "base" and model not in self.loaded[pod]:
            message = f"The model `{model}` does not exist."
            return httpx.Response(404, json={"error": {"message": message}})
        return httpx.Response(
            200,
            json={
                "id": "x",
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1},
            },
        )


async def gateway_for(stub: StubPool, **pool: Any) -> tuple[Gateway, TestClient[Any, Any]]:
    gateway = Gateway(pool_config(**pool), {})
    gateway.vllm = httpx.AsyncClient(transport=httpx.MockTransport(stub))
    client = TestClient(TestServer(gateway.app()))
    await client.start_server()
    return gateway, client


def chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


async def test_a_tenant_reaches_its_endpoints_adapters_by_their_own_names_only() -> None:
    stub = StubPool({A: {TEAM_A, TEAM_B}, B: {TEAM_B}})
    _, client = await gateway_for(stub)
    try:
        response = await client.post("/v1/chat/completions", json=chat("support"))
        assert response.status == 200
        body = await response.json()
        assert body["model"] == "support" and TEAM_A not in json.dumps(body)
        assert stub.calls == [(A, TEAM_A)]  # the pool's name, on the pod that has it

        for other in (TEAM_B, TEAM_A):  # the pool's names are not models of this endpoint
            refused = await client.post("/v1/chat/completions", json=chat(other))
            assert refused.status == 404
            error = (await refused.json())["error"]
            assert (
                error["code"] == "model_not_found"
                and "choose one of: base, support, billing" in error["message"]
            )
        assert len(stub.calls) == 1
    finally:
        await client.close()


async def test_an_adapter_placed_nowhere_is_a_503_in_the_callers_names_counted_and_reported() -> None:
    stub = StubPool({A: {TEAM_A}, B: set()})
    gateway, client = await gateway_for(stub)
    try:
        response = await client.post("/v1/chat/completions", json=chat("billing"))
        assert response.status == 503 and response.headers["Retry-After"] == "9"
        error = (await response.json())["error"]
        assert error["code"] == "adapter_not_placed" and "'billing'" in error["message"]
        assert "teama-billing" not in error["message"] and "10.0.0" not in error["message"]
        assert stub.calls == []  # nothing was sent to a pod

        internal = TestClient(TestServer(gateway.metrics_app()))
        await internal.start_server()
        try:
            text = await (await internal.get("/metrics")).text()
        finally:
            await internal.close()
        assert 'tandem_gateway_adapter_misses_total{adapter="billing"} 1.0' in text
        assert 'tandem_gateway_errors_total{cause="not-placed"} 1.0' in text

        health = await (await client.get("/healthz/dependencies")).json()
        assert health["routes"] == {"base": True, "support": True, "billing": False}
        pool = health["pool"]
        assert [(p["address"], p["up"], p["adapters"]) for p in pool["pods"]] == [
            (A, True, [TEAM_A]),
            (B, True, []),
        ]
        assert pool["misses"]["billing"]["count"] == 1
        assert pool["misses"]["billing"]["servedName"] == "teama-billing-77aa"
    finally:
        await client.close()


async def test_a_pod_refusing_connections_is_marked_down_and_the_next_one_answers() -> None:
    stub = StubPool({A: {TEAM_A}, B: {TEAM_A}})
    gateway, client = await gateway_for(stub)
    try:
        assert gateway.pool is not None
        gateway.pool.acquire(gateway.pool.pods[B])  # B busier: A is tried first
        stub.refusing.add(A)
        response = await client.post("/v1/chat/completions", json=chat("support"))
        assert response.status == 200
        assert stub.calls == [(B, TEAM_A)]
        assert not gateway.pool.pods[A].up
        gateway.pool.release(gateway.pool.pods[B])
        assert gateway.pool.pods[B].in_flight == 0  # the request released its pod
        assert (await client.get("/readyz")).status == 200  # B still answers
    finally:
        await client.close()


async def test_an_adapter_unloaded_since_the_last_poll_is_tried_elsewhere() -> None:
    stub = StubPool({A: {TEAM_A}, B: {TEAM_A}})
    gateway, client = await gateway_for(stub)
    try:
        assert gateway.pool is not None
        gateway.pool.acquire(gateway.pool.pods[B])
        stub.loaded[A] = set()  # A's sidecar unloaded it; the router has not polled since
        response = await client.post("/v1/chat/completions", json=chat("support"))
        assert response.status == 200
        assert stub.calls == [(A, TEAM_A), (B, TEAM_A)]
        assert gateway.pool.pods[A].models == frozenset()
    finally:
        await client.close()


async def test_no_pod_answering_means_not_ready() -> None:
    stub = StubPool({A: set(), B: set()})
    stub.refusing |= {A, B}
    _, client = await gateway_for(stub, coldStartSeconds=0)  # no holding: the 503 at once
    try:
        readiness = await client.get("/readyz")
        assert readiness.status == 503
        health = await (await client.get("/healthz/dependencies")).json()
        assert health["vllm"] == {"ok": False, "error": "no pod of the vLLM pool answers (2 seen)"}
        response = await client.post("/v1/chat/completions", json=chat("base"))
        assert response.status == 503 and response.headers["Retry-After"] == "9"
    finally:
        await client.close()


async def test_the_only_pod_holding_an_adapter_lost_is_a_503_to_retry_and_a_miss() -> None:
    """Between a pod's death and the next poll, a request for an adapter only that pod had is answered 503
    with Retry-After (the placement moves the adapter) and counted as a miss, not 502."""
    stub = StubPool({A: {TEAM_A}, B: set()})
    gateway, client = await gateway_for(stub)
    try:
        stub.refusing.add(A)  # A dies; the router has not polled since
        response = await client.post("/v1/chat/completions", json=chat("support"))
        assert response.status == 503 and response.headers["Retry-After"] == "9"
        assert (await response.json())["error"]["code"] == "adapter_not_placed"
        assert gateway.pool is not None and gateway.pool.misses["support"].count == 1
    finally:
        await client.close()


async def test_a_pool_refusing_the_endpoints_key_is_said_so_and_not_counted_as_a_miss() -> None:
    """Detached from the pool (its key's digest no longer listed), every pod answers the polls 401: the
    caller is told the pool does not accept the endpoint, not that an adapter is missing."""
    stub = StubPool({A: {TEAM_A}, B: {TEAM_A}})
    stub.unauthorized |= {A, B}
    gateway, client = await gateway_for(stub)
    try:
        response = await client.post("/v1/chat/completions", json=chat("support"))
        assert response.status == 503 and response.headers["Retry-After"] == "9"
        error = (await response.json())["error"]
        assert (
            error["code"] == "pool_refused_endpoint" and "does not accept this endpoint" in error["message"]
        )
        assert gateway.pool is not None and not gateway.pool.misses and stub.calls == []
        stub.unauthorized.clear()  # attached again
        await gateway.pool.refresh()
        assert (await client.post("/v1/chat/completions", json=chat("support"))).status == 200
    finally:
        await client.close()


# --- a cold start: no pod up (a pool scaled to zero) -----------------------------------------------------


class ColdPool(StubPool):
    """Every pod refuses connections until `polls_to_wake` polls of /v1/models have been answered (the
    pool scaled up from zero meanwhile); None: never."""

    def __init__(self, loaded: dict[str, set[str]], polls_to_wake: int | None) -> None:
        super().__init__(loaded)
        self.polls_to_wake = polls_to_wake
        self.polls = 0
        self.refusing |= set(loaded)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            self.polls += 1
            if self.polls_to_wake is not None and self.polls > self.polls_to_wake:
                self.refusing.clear()
        return super().__call__(request)


def pool_requests(gateway: Gateway, state: str) -> float | None:
    return gateway.metrics.registry.get_sample_value(
        "tandem_gateway_pool_requests", {"pool": "local", "state": state}
    )


async def test_a_request_finding_no_pod_up_is_held_until_one_comes_up_and_served() -> None:
    stub = ColdPool({A: {TEAM_A}, B: {TEAM_A}}, polls_to_wake=6)
    gateway, client = await gateway_for(stub, pollSeconds=0.01, coldStartSeconds=5)
    try:
        assert gateway.pool is not None and not gateway.pool.any_up
        response = await client.post("/v1/chat/completions", json=chat("support"))
        assert response.status == 200
        assert stub.polls > 6 and stub.calls and stub.calls[0][1] == TEAM_A
        assert pool_requests(gateway, "waiting") == 0 and pool_requests(gateway, "in_flight") == 0
        assert gateway.pool.misses == {}  # held, not missed
    finally:
        await client.close()


async def test_with_pods_never_up_the_request_is_a_503_with_retry_after_after_the_limit() -> None:
    stub = ColdPool({A: {TEAM_A}, B: set()}, polls_to_wake=None)
    gateway, client = await gateway_for(stub, pollSeconds=0.01, coldStartSeconds=0.3)
    try:
        started = asyncio.get_running_loop().time()
        response = await client.post("/v1/chat/completions", json=chat("support"))
        held = asyncio.get_running_loop().time() - started
        assert response.status == 503 and response.headers["Retry-After"] == "9"
        assert 0.3 <= held < 3
        assert stub.calls == [] and pool_requests(gateway, "waiting") == 0
        base = await client.post("/v1/chat/completions", json=chat("base"))  # the base model too
        assert base.status == 503 and base.headers["Retry-After"] == "9"
    finally:
        await client.close()


async def test_the_waiting_gauge_counts_held_requests_and_returns_to_zero() -> None:
    stub = ColdPool({A: {TEAM_A}, B: {TEAM_A}}, polls_to_wake=None)
    gateway, client = await gateway_for(stub, pollSeconds=0.01, coldStartSeconds=10)
    try:
        assert pool_requests(gateway, "waiting") == 0  # exported before any request: KEDA reads a 0
        held = [
            asyncio.create_task(client.post("/v1/chat/completions", json=chat(m)))
            for m in ("support", "base")
        ]
        for _ in range(200):
            if pool_requests(gateway, "waiting") == 2:
                break
            await asyncio.sleep(0.01)
        assert pool_requests(gateway, "waiting") == 2  # what wakes a pool scaled to zero
        internal = TestClient(TestServer(gateway.metrics_app()))
        await internal.start_server()
        try:
            text = await (await internal.get("/metrics")).text()
        finally:
            await internal.close()
        assert 'tandem_gateway_pool_requests{pool="local",state="waiting"} 2.0' in text
        stub.polls_to_wake = stub.polls  # the pods come up
        responses = await asyncio.gather(*held)
        assert [r.status for r in responses] == [200, 200]
        assert pool_requests(gateway, "waiting") == 0 and pool_requests(gateway, "in_flight") == 0
    finally:
        await client.close()


async def test_no_holding_when_a_pod_is_up_or_the_pool_refuses_the_key() -> None:
    """A pod up without the adapter is a missing adapter, not a cold start: the 503 at once."""
    stub = StubPool({A: set(), B: set()})
    gateway, client = await gateway_for(stub, pollSeconds=0.01, coldStartSeconds=30)
    try:
        response = await asyncio.wait_for(client.post("/v1/chat/completions", json=chat("support")), 5)
        assert response.status == 503 and (await response.json())["error"]["code"] == "adapter_not_placed"
    finally:
        await client.close()
    stub = StubPool({A: {TEAM_A}, B: {TEAM_A}})
    stub.unauthorized |= {A, B}
    gateway, client = await gateway_for(stub, pollSeconds=0.01, coldStartSeconds=30)
    try:
        response = await asyncio.wait_for(client.post("/v1/chat/completions", json=chat("support")), 5)
        assert (await response.json())["error"]["code"] == "pool_refused_endpoint"
        assert pool_requests(gateway, "waiting") == 0
    finally:
        await client.close()


def test_the_pools_label_is_what_its_scaled_object_queries() -> None:
    assert VllmPool(dns="smollm-vllm.serving.svc.cluster.local").label == "serving/smollm-vllm"
    assert VllmPool(dns="smollm-vllm.serving.svc.cluster.local", name="x/y").label == "x/y"
    assert VllmPool(pods=[A]).label == "local"
    assert VllmPool(pods=[A]).cold_start_seconds == 60
