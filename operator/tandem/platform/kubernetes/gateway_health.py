"""What each ready gateway pod says of its dependencies (`/healthz/dependencies`: vLLM and one search of each
KnowledgeBase), read by the operator as `tandem up` reads its local gateway.

The gateway pods' readiness probe checks vLLM only, so a Milvus outage does not take down the routes that
do not retrieve; this is where the operator learns of it, to report `RetrievalUnavailable` on the
HybridEndpoint (see status.hybrid_endpoint_status).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tandem.core.endpoint_health import read_dependencies

from .adapters import pod_ready
from .pod_answers import get_json

# The gateway checks each dependency with a 5 s limit; this covers them and the answer.
PROBE_TIMEOUT = 10.0


async def _dependencies(
    client: httpx.AsyncClient, name: str, ip: str, port: int, seconds: float
) -> dict[str, Any] | str:
    where = f"pod {name} ({ip}:{port})"
    try:
        code, body = await get_json(client, f"http://{ip}:{port}/healthz/dependencies", seconds=seconds)
        return read_dependencies(where, code, body)
    except (httpx.HTTPError, ValueError, TimeoutError) as e:
        return f"the gateway {where} does not answer ({type(e).__name__})"


async def dependencies_per_pod(
    pods: list[dict[str, Any]], port: int, timeout: float = PROBE_TIMEOUT
) -> list[dict[str, Any] | str]:
    """For each ready gateway pod: its dependencies, or why they could not be read."""
    ready = [p for p in pods if pod_ready(p)]
    async with httpx.AsyncClient(timeout=timeout) as client:
        return list(
            await asyncio.gather(
                *(
                    _dependencies(client, p["metadata"]["name"], p["status"]["podIP"], port, timeout)
                    for p in ready
                )
            )
        )
