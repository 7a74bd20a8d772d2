"""Hostile requests to the gateway (issue 15, items 5 and 7): one request costs one request's worth.

The real gateway application, with vLLM replaced by a recording stand-in (httpx's MockTransport), so
each test sees exactly what would reach vLLM: over-cap `n` and `max_tokens` are refused with 400 naming
the field; a caller over its concurrency limit is refused before its body is read; error bodies say
what is wrong without vLLM's or Milvus's addresses or exception text; /metrics is not on the clients'
port; a client's `cache_salt` never reaches vLLM, the tenant's does.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from aiohttp.test_utils import TestClient, TestServer

from tandem.workloads.gateway.app import Gateway
from tandem.workloads.gateway.config import GatewayConfig, TenantConfig
from tandem.workloads.gateway.knowledge import KnowledgeSearch, KnowledgeUnavailable

VLLM_URL = "http://vllm-internal.team.svc.cluster.local:8000"
KEYS = {"sk-alpha": TenantConfig(name="alpha", groups=["eng"], api_key_file="", max_concurrent_requests=1)}
KEYS["sk-beta"] = TenantConfig(name="beta", groups=[], api_key_file="")
ALPHA = {"Authorization": "Bearer sk-alpha"}
BETA = {"Authorization": "Bearer sk-beta"}
CHAT = {"model": "base", "messages": [{"role": "user", "content": "hello"}]}
ANSWER = {"choices": [{"message": {"role": "assistant", "content": "hi"}}], "usage": {}}


def config(**gateway: Any) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "endpoint": {"namespace": "team", "name": "assistant"},
            "vllmUrl": VLLM_URL,
            "maxModelLen": 2048,
            "routes": [{"name": "base", "retrieval": False}, {"name": "rag", "retrieval": True}],
            "knowledgeBases": [
                {
                    "namespace": "team",
                    "name": "handbook",
                    "collection": "c",
                    "milvusUri": "http://milvus:19530",
                }
            ],
            "tenants": [t.model_dump(by_alias=True) for t in KEYS.values()],
            "limits": gateway,
        }
    )


class DownKnowledge(KnowledgeSearch):
    """Milvus refusing with an error that names its address, as pymilvus's do."""

    def warm_up(self) -> None:
        pass

    async def search(self, query: str, top_k: int, principal: Any) -> Any:
        raise KnowledgeUnavailable(
            "KnowledgeBase team/handbook: search failed: <MilvusException: (code=2, message=Fail connecting "
            "to server on milvus:19530, illegal connection params or server unavailable)>"
        )


class Upstream:
    """The stand-in for vLLM: records each chat request; `hold` keeps requests in flight until set."""

    def __init__(self, reply: Any = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.hold: asyncio.Event | None = None
        self.reply = reply

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/chat/completions":
            self.bodies.append(json.loads(request.content))
            if self.hold is not None:
                await self.hold.wait()
        if callable(self.reply):
            return self.reply(request)  # type: ignore[no-any-return]
        return httpx.Response(200, json=ANSWER)


async def client_for(upstream: Upstream, **limits: Any) -> TestClient[Any, Any]:
    built = config(**limits)
    gateway = Gateway(built, KEYS, DownKnowledge(built.knowledge_bases))
    gateway.vllm = httpx.AsyncClient(transport=httpx.MockTransport(upstream), base_url=VLLM_URL)
    client = TestClient(TestServer(gateway.app()))
    await client.start_server()
    return client


async def chat(client: TestClient[Any, Any], body: Any, headers: dict[str, str] = ALPHA) -> tuple[int, Any]:
    response = await client.post("/v1/chat/completions", json=body, headers=headers)
    return response.status, await response.json()


# --- item 7: caps ------------------------------------------------------------------------------------


async def test_n_and_max_tokens_over_the_caps_are_refused_naming_the_field() -> None:
    upstream = Upstream()
    client = await client_for(upstream, maxTokens=256, maxN=2)
    try:
        for field, value, setting in [
            ("n", 3, "gateway.maxN"),
            ("best_of", 50, "gateway.maxN"),
            ("max_tokens", 257, "gateway.maxTokens"),
            ("max_completion_tokens", 100000, "gateway.maxTokens"),
            ("min_tokens", 1000, "gateway.maxTokens"),
        ]:
            status, body = await chat(client, {**CHAT, field: value})
            assert status == 400, (field, body)
            error = body["error"]
            assert error["type"] == "invalid_request_error"
            assert error["message"].startswith(f"{field}: {value} ") and setting in error["message"]
        status, body = await chat(client, {**CHAT, "n": "2; DROP"})
        assert status == 400 and body["error"]["message"].startswith("n: must be an integer")
        assert upstream.bodies == []  # nothing over the cap reached vLLM
        # At the caps it passes; without a limit the cap is sent, so vLLM cannot run to the context length.
        assert (await chat(client, {**CHAT, "n": 2, "max_tokens": 256}))[0] == 200
        assert (await chat(client, CHAT))[0] == 200
        assert [(b.get("n"), b["max_tokens"]) for b in upstream.bodies] == [(2, 256), (None, 256)]
    finally:
        await client.close()


async def test_the_caps_default_to_4096_tokens_and_4_completions() -> None:
    upstream = Upstream()
    client = await client_for(upstream)
    try:
        assert (await chat(client, {**CHAT, "max_tokens": 4097}))[0] == 400
        assert (await chat(client, {**CHAT, "n": 5}))[0] == 400
        assert (await chat(client, {**CHAT, "max_tokens": 4096, "n": 4}))[0] == 200
        # Sent without a limit: the cap, but never above the context length vLLM would refuse it over.
        assert (await chat(client, CHAT))[0] == 200
        assert upstream.bodies[-1]["max_tokens"] == 2048
    finally:
        await client.close()


# --- item 7: admitted before the body is read -------------------------------------------------------


async def test_a_caller_over_its_limit_is_refused_before_its_body_is_read() -> None:
    upstream = Upstream()
    upstream.hold = asyncio.Event()
    client = await client_for(upstream)
    try:
        first = asyncio.ensure_future(chat(client, CHAT))  # alpha's one slot, held in vLLM
        while not upstream.bodies:
            await asyncio.sleep(0.01)
        # Not JSON at all: read first, this would be a 400; admitted first, it is a 429 unread.
        response = await client.post("/v1/chat/completions", data=b"{not json" * 1000, headers=ALPHA)
        assert response.status == 429 and response.headers["Retry-After"] == "1"
        assert (await response.json())["error"]["code"] == "rate_limit_exceeded"
        upstream.hold.set()
        assert (await first)[0] == 200
    finally:
        await client.close()


async def test_a_declared_body_over_the_limit_is_refused_unread() -> None:
    client = await client_for(Upstream(), maxRequestBytes=2048)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-alpha\r\n"
            b"Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n{"
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)  # answered without the 50 MB
        assert b" 413 " in status_line
        writer.close()
    finally:
        await client.close()


# --- item 7: errors without internals ---------------------------------------------------------------


def leaks(body: Any) -> list[str]:
    text = json.dumps(body)
    return [
        s for s in ("vllm-internal", "8000", "milvus:19530", "Exception", "Traceback", "/opt/") if s in text
    ]


async def test_an_unreachable_vllm_is_reported_without_its_address() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"[Errno 111] Connection refused to {VLLM_URL}")

    client = await client_for(Upstream(refuse))
    try:
        status, body = await chat(client, CHAT)
        assert status == 502 and body["error"]["message"] == "vLLM is unreachable" and leaks(body) == []
    finally:
        await client.close()


async def test_a_failing_vllm_is_reported_without_its_error_text() -> None:
    def crash(request: httpx.Request) -> httpx.Response:
        detail = 'Traceback (most recent call last):\n  File "/opt/vllm/engine.py", RuntimeError: CUDA'
        return httpx.Response(500, json={"error": {"message": detail}})

    client = await client_for(Upstream(crash))
    try:
        status, body = await chat(client, CHAT)
        assert status == 502 and body["error"]["message"] == "vLLM failed (500)" and leaks(body) == []
    finally:
        await client.close()


async def test_vllm_refusing_the_gateways_key_is_the_gateways_fault_not_the_callers() -> None:
    def unauthorized(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "Unauthorized"})

    client = await client_for(Upstream(unauthorized))
    try:
        status, body = await chat(client, CHAT)
        assert status == 502 and body["error"]["type"] == "server_error"
    finally:
        await client.close()


async def test_a_milvus_outage_names_the_knowledge_base_not_milvus() -> None:
    client = await client_for(Upstream())
    try:
        status, body = await chat(client, {**CHAT, "model": "rag"})
        assert status == 503 and leaks(body) == []
        message = body["error"]["message"]
        assert message == "retrieval is unavailable: KnowledgeBase team/handbook cannot be searched now"
    finally:
        await client.close()


# --- item 7: metrics where only Prometheus scrapes -------------------------------------------------


async def test_metrics_are_not_served_on_the_clients_port() -> None:
    built = config()
    gateway = Gateway(built, KEYS, DownKnowledge(built.knowledge_bases))
    clients = TestClient(TestServer(gateway.app()))
    scraper = TestClient(TestServer(gateway.metrics_app()))
    await clients.start_server()
    await scraper.start_server()
    try:
        assert (await clients.get("/metrics")).status == 404
        assert (await clients.get("/metrics", headers=ALPHA)).status == 404
        response = await scraper.get("/metrics")
        assert response.status == 200 and "tandem_gateway_in_flight" in await response.text()
    finally:
        await clients.close()
        await scraper.close()


# --- item 5: the tenant's cache salt, never the caller's -------------------------------------------


async def test_the_gateway_sets_each_tenants_cache_salt_and_drops_the_callers() -> None:
    upstream = Upstream()
    client = await client_for(upstream)
    try:
        assert (await chat(client, {**CHAT, "cache_salt": "beta-guess"}, ALPHA))[0] == 200
        assert (await chat(client, CHAT, ALPHA))[0] == 200
        assert (await chat(client, {**CHAT, "cache_salt": "beta-guess"}, BETA))[0] == 200
        alpha_1, alpha_2, beta = (b["cache_salt"] for b in upstream.bodies)
        assert alpha_1 == alpha_2 != beta and "beta-guess" not in (alpha_1, beta)
        # vLLM accepts at most 128 characters, none of '@', '/', '\\'.
        assert len(alpha_1) == 64 and all(c in "0123456789abcdef" for c in alpha_1 + beta)
    finally:
        await client.close()


def test_the_salt_differs_by_acl_groups_and_by_endpoint_not_by_group_order() -> None:
    gateway = Gateway(config(), KEYS, DownKnowledge([]))
    other_endpoint = Gateway(
        config().model_copy(update={"endpoint": config().endpoint.model_copy(update={"name": "other"})}),
        KEYS,
        DownKnowledge([]),
    )
    eng = TenantConfig(name="alpha", groups=["eng", "hr"], api_key_file="")
    assert gateway.cache_salt(eng) == gateway.cache_salt(eng.model_copy(update={"groups": ["hr", "eng"]}))
    assert gateway.cache_salt(eng) != gateway.cache_salt(eng.model_copy(update={"groups": ["eng"]}))
    assert gateway.cache_salt(eng) != other_endpoint.cache_salt(eng)
    # With the endpoint's vLLM key, the salt cannot be computed from names alone.
    keyed = Gateway(config(), KEYS, DownKnowledge([]), vllm_key="k-1")
    assert keyed.cache_salt(eng) != gateway.cache_salt(eng)
    assert keyed.cache_salt(eng) != Gateway(config(), KEYS, DownKnowledge([]), vllm_key="k-2").cache_salt(eng)
