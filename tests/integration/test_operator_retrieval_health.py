"""A HybridEndpoint in the cluster shows a KnowledgeBase its gateway cannot search (issue 18, item 4).

The emulator runs no pods, so the test records one Ready gateway pod whose IP is 127.0.0.1, where a
stand-in answers `/healthz/dependencies` as the gateway does (the real gateway's answer is covered by the
local tests, which run it); the operator reads that pod as it would in a cluster. Not covered: the
network path from the operator to a gateway pod (NetworkPolicy, CNI).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tandem.platform.kubernetes.ownership import Owner
from tests.cluster_controllers import roll_out_deployments, run_ready_pod
from tests.emulator.server import Emulator
from tests.integration.conftest import condition, eventually
from tests.integration.test_operator import NS
from tests.integration.test_operator_evaluation import deploy_endpoint

pytestmark = pytest.mark.integration

UP = {
    "ready": True,
    "vllm": {"ok": True},
    "knowledgeBases": {"team/handbook": {"ok": True}},
    "routes": {"base": True, "rag": True},
}
MILVUS_DOWN = {
    "ready": False,
    "vllm": {"ok": True},
    "knowledgeBases": {"team/handbook": {"ok": False, "error": "KnowledgeBase team/handbook: Milvus down"}},
    "routes": {"base": True, "rag": False},
}


class Gateway:
    """What the gateway pod's /healthz/dependencies answers now (200 or 503 with the body, as the gateway)."""

    def __init__(self) -> None:
        self.body: dict[str, Any] = UP
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status = (
                    404 if self.path != "/healthz/dependencies" else 200 if gateway.body["ready"] else 503
                )
                data = json.dumps(gateway.body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]


@pytest.fixture()
def gateway(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    """Started before the `operator` fixture, which reads TANDEM_GATEWAY_PORT."""
    found = Gateway()
    thread = threading.Thread(target=found.server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("TANDEM_GATEWAY_PORT", str(found.port))
    try:
        yield found
    finally:
        found.server.shutdown()
        found.server.server_close()
        thread.join(timeout=5)


def ready_condition(emulator: Emulator) -> dict[str, Any]:
    return condition(emulator.get("hybridendpoints", NS, "assistant"), "Ready")


async def test_a_knowledge_base_the_gateway_cannot_search_turns_the_endpoint_not_ready_then_back(
    gateway: Gateway, emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    await deploy_endpoint(emulator, api)

    def kubelet() -> None:
        with httpx.Client(base_url=emulator.url, timeout=10) as client:
            roll_out_deployments(client, NS)
            labels = Owner("tandem.dev/v1alpha1", "HybridEndpoint", NS, "assistant", "").labels("gateway")
            run_ready_pod(client, NS, "assistant-gateway-0", labels, "127.0.0.1")

    await asyncio.to_thread(kubelet)
    serving = await eventually(lambda: ready_condition(emulator).get("status") == "True", what="Serving")
    assert serving

    gateway.body = MILVUS_DOWN  # Milvus stops: the pods stay Ready (their probe checks vLLM only)
    down = await eventually(
        lambda: (c := ready_condition(emulator)).get("reason") == "RetrievalUnavailable" and c,
        what="RetrievalUnavailable",
        timeout=30,
    )
    assert down["status"] == "False"
    assert down["message"].startswith("KnowledgeBase team/handbook: Milvus down. Routes rag fail")
    assert "base still answers at http://assistant.team.svc" in down["message"]
    he = emulator.get("hybridendpoints", NS, "assistant")
    assert condition(he, "Stalled")["reason"] == "RetrievalUnavailable"

    gateway.body = UP
    back = await eventually(
        lambda: (c := ready_condition(emulator)).get("status") == "True" and c,
        what="Serving again",
        timeout=30,
    )
    assert back["reason"] == "Serving"
