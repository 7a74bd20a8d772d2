"""What a gateway pod's clients can reach (issue 15, item 7): its /healthz/dependencies answer names vLLM's
address and Milvus's errors, so in a pod (an internal port set) it is served beside /metrics on that port,
which the clients' Service does not expose, and the clients' port answers 404 for it. Local mode (no
internal port, loopback only) keeps it on the one port `tandem up` reads.

Run through `serve`, the gateway process's own server setup, on two loopback ports.
"""

from __future__ import annotations

import asyncio
import socket

import httpx

from tandem.workloads.gateway.__main__ import serve
from tandem.workloads.gateway.app import Gateway
from tests.unit.test_gateway_health import StubKnowledge, config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def answers(port: int, path: str) -> tuple[int, str]:
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(100):  # until the server listens
            try:
                response = await client.get(f"http://127.0.0.1:{port}{path}")
                return response.status_code, response.text
            except httpx.ConnectError:
                await asyncio.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


async def serving(metrics_port: int) -> tuple[int, asyncio.Task[None]]:
    down = {"default/finance": "connect:cannot connect to Milvus at http://milvus.internal:19530"}
    gateway = Gateway(config(), {}, StubKnowledge(config().knowledge_bases, down))
    port = free_port()
    return port, asyncio.create_task(serve(gateway, "127.0.0.1", port, metrics_port))


async def test_a_pods_clients_port_does_not_serve_the_dependencies() -> None:
    internal = free_port()
    port, task = await serving(internal)
    try:
        status, body = await answers(port, "/healthz/dependencies")
        assert status == 404 and "milvus.internal" not in body
        assert (await answers(port, "/healthz"))[0] == 200  # the kubelet's probes stay where they were
        status, body = await answers(internal, "/healthz/dependencies")
        assert status == 503 and "milvus.internal" in body  # the operator reads it on the internal port
        assert (await answers(internal, "/metrics"))[0] == 200
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_without_an_internal_port_local_mode_reads_them_on_the_one_port() -> None:
    port, task = await serving(0)
    try:
        status, body = await answers(port, "/healthz/dependencies")
        assert status == 503 and "finance" in body
        assert (await answers(port, "/metrics"))[0] == 404
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
