"""The gateway's health endpoints (issue 18): `/readyz`, the readiness probe, is vLLM only, so a Milvus
outage keeps the routes that do not retrieve in service; `/healthz/dependencies` checks each dependency
now (vLLM, one search per KnowledgeBase through the routes' own connection) and says which routes
answer. vLLM is a stub transport; the knowledge bases are stub retrievers."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tandem.workloads.gateway import app
from tandem.workloads.gateway.app import Gateway
from tandem.workloads.gateway.config import GatewayConfig, KnowledgeBaseConfig
from tandem.workloads.gateway.knowledge import KnowledgeSearch, KnowledgeUnavailable


class StubRetriever:
    def __init__(self, error: str | None) -> None:
        self.error = error

    def search(self, query: str, top_k: int, principal: Any) -> Any:
        if self.error == "hang":
            time.sleep(1.0)  # a Milvus that accepts the connection and does not answer
        elif self.error:
            raise RuntimeError(self.error)
        return None


class StubKnowledge(KnowledgeSearch):
    """`down`: label -> how its Milvus fails (connecting, or searching)."""

    def __init__(self, bases: list[KnowledgeBaseConfig], down: dict[str, str]) -> None:
        super().__init__(bases)
        self.down = down

    def warm_up(self) -> None:
        pass

    def _retriever(self, base: KnowledgeBaseConfig) -> Any:
        error = self.down.get(base.label, "")
        if error.startswith("connect:"):
            raise KnowledgeUnavailable(f"KnowledgeBase {base.label}: {error.removeprefix('connect:')}")
        return StubRetriever(error or None)


def config() -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "endpoint": {"namespace": "default", "name": "assistant"},
            "vllmUrl": "http://vllm",
            "routes": [
                {"name": "base", "retrieval": False},
                {"name": "rag", "retrieval": True},
            ],
            "knowledgeBases": [
                {"namespace": "default", "name": "handbook", "collection": "c1", "milvusUri": "http://m:1"},
                {"namespace": "default", "name": "finance", "collection": "c2", "milvusUri": "http://m:1"},
            ],
        }
    )


async def client_for(down: dict[str, str], vllm_up: bool = True) -> TestClient[Any, Any]:
    gateway = Gateway(config(), {}, StubKnowledge(config().knowledge_bases, down))

    def vllm(request: httpx.Request) -> httpx.Response:
        if not vllm_up:
            raise httpx.ConnectError("connection refused")
        return httpx.Response(200)

    gateway.vllm = httpx.AsyncClient(transport=httpx.MockTransport(vllm), base_url="http://vllm")
    client = TestClient(TestServer(gateway.app()))
    await client.start_server()
    return client


async def test_everything_answering_is_ready() -> None:
    client = await client_for({})
    try:
        response = await client.get("/healthz/dependencies")
        assert response.status == 200
        assert await response.json() == {
            "ready": True,
            "vllm": {"ok": True},
            "knowledgeBases": {"default/handbook": {"ok": True}, "default/finance": {"ok": True}},
            "routes": {"base": True, "rag": True},
        }
    finally:
        await client.close()


async def test_a_milvus_outage_names_the_knowledge_base_and_spares_the_readiness_probe() -> None:
    client = await client_for({"default/finance": "connect:cannot connect to Milvus at http://m:1"})
    try:
        readiness = await client.get("/readyz")
        assert readiness.status == 200 and await readiness.json() == {"vllm": True}
        response = await client.get("/healthz/dependencies")
        assert response.status == 503
        body = await response.json()
        assert body["ready"] is False and body["vllm"] == {"ok": True}
        assert body["knowledgeBases"]["default/handbook"] == {"ok": True}
        assert body["knowledgeBases"]["default/finance"] == {
            "ok": False,
            "error": "KnowledgeBase default/finance: cannot connect to Milvus at http://m:1",
        }
        assert body["routes"] == {"base": True, "rag": False}  # only the retrieving route fails
    finally:
        await client.close()


async def test_a_search_that_fails_on_a_reachable_milvus_counts_as_down() -> None:
    released = "Collection 'c1' is in state 'released'"
    client = await client_for({"default/handbook": released})
    try:
        body = await (await client.get("/healthz/dependencies")).json()
        error = body["knowledgeBases"]["default/handbook"]["error"]
        assert error == f"KnowledgeBase default/handbook: search failed: {released}"
    finally:
        await client.close()


async def test_without_vllm_nothing_answers_and_the_pod_is_not_ready() -> None:
    client = await client_for({}, vllm_up=False)
    try:
        assert (await client.get("/readyz")).status == 503
        body = await (await client.get("/healthz/dependencies")).json()
        assert body["vllm"]["ok"] is False and "vLLM is unreachable at http://vllm" in body["vllm"]["error"]
        assert body["routes"] == {"base": False, "rag": False}
    finally:
        await client.close()


async def test_a_hung_milvus_is_reported_within_the_probe_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app, "PROBE_TIMEOUT", 0.2)
    client = await client_for({"default/handbook": "hang"})
    try:
        started = time.monotonic()
        body = await (await client.get("/healthz/dependencies")).json()
        assert time.monotonic() - started < 0.9
        error = body["knowledgeBases"]["default/handbook"]["error"]
        assert error == "KnowledgeBase default/handbook: a search took longer than 0.2s"
        assert body["routes"] == {"base": True, "rag": False}
    finally:
        await client.close()
