"""What is true now, observed rather than recorded: a HybridEndpoint's condition from its gateway's
`/healthz/dependencies` (vLLM, and one search of each KnowledgeBase), and what `tandem status` shows for
each resource and process.

The condition a HybridEndpoint gets from it is `tandem.core.endpoint_health`'s, as in the cluster.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from tandem.core.endpoint_health import Condition, condition_of, read_dependencies

from . import servers
from .state import ResourceState, State, pool_server_name

# /healthz/dependencies checks each dependency with a 5 s limit; this covers them and the answer.
DEPENDENCIES_TIMEOUT = 15.0
# A retrieval failure is confirmed this many times, a second apart, before it is reported: a Milvus that
# was just restarted is answering, but the gateway's connection needs a moment to find it again.
RETRIEVAL_ATTEMPTS = 3
# The reasons of an endpoint whose servers were started for its current inputs: which of them holds is a
# matter of what answers now.
SERVING = ("Serving", "RetrievalUnavailable", "VllmUnavailable", "GatewayUnavailable")


def dependencies(gateway_url: str) -> dict[str, Any] | str:
    """The gateway's /healthz/dependencies body, or why it could not be read."""
    try:
        response = httpx.get(f"{gateway_url}/healthz/dependencies", timeout=DEPENDENCIES_TIMEOUT)
        body = response.json()
    except (httpx.HTTPError, ValueError) as e:
        return f"the gateway at {gateway_url} does not answer ({type(e).__name__}: {e or 'no detail'})"
    return read_dependencies(gateway_url, response.status_code, body)


def endpoint_condition(gateway_url: str) -> Condition:
    """The endpoint's condition now; a retrieval failure is confirmed before it is reported."""
    for attempt in range(RETRIEVAL_ATTEMPTS):
        found = condition_of(gateway_url, dependencies(gateway_url))
        if found.reason != "RetrievalUnavailable" or attempt == RETRIEVAL_ATTEMPTS - 1:
            return found
        time.sleep(1.0)
    raise AssertionError("unreachable")  # pragma: no cover


def observed(state: State) -> dict[str, tuple[bool, str, str]]:
    """Per resource key: (ready, reason, message) as observed now where that differs from the record."""
    health = {name: servers.check(server) for name, server in state.servers.items()}
    out: dict[str, tuple[bool, str, str]] = {}
    for key, resource in state.resources.items():
        found = _observe(resource, state, health)
        if found is not None and found != (resource.ready, resource.reason, resource.message):
            out[key] = found
    return out


def _observe(
    resource: ResourceState, state: State, health: dict[str, servers.Health]
) -> tuple[bool, str, str] | None:
    if resource.kind == "KnowledgeBase" and resource.ready and resource.local.get("milvusServer"):
        milvus = health.get(resource.local["milvusServer"])
        if milvus is None or not milvus.ok:
            why = f"milvus-lite server {milvus}" if milvus else "the milvus-lite server is not running"
            return False, "MilvusUnavailable", f"{why} (now); `tandem up` restarts it"
    if resource.kind == "ServingPool" and resource.ready:
        for pod in resource.local.get("pods") or {}:
            name = pool_server_name(resource.namespace, resource.name, pod)
            server = health.get(name)
            if server is None or not server.ok:
                return False, "VllmUnavailable", f"{name}: {server or 'not running'} (now)"
    if resource.kind == "HybridEndpoint" and resource.reason in SERVING and resource.figures.get("url"):
        # An endpoint on a ServingPool has no vLLM of its own: its gateway reports the pool's pods.
        kinds = ("gateway",) if resource.figures.get("servingPool") else ("vllm", "gateway")
        for name in (f"{kind}:{resource.namespace}/{resource.name}" for kind in kinds):
            server = health.get(name)
            if server is None or not server.ok:
                reason = "VllmUnavailable" if name.startswith("vllm") else "GatewayUnavailable"
                return False, reason, f"{name}: {server or 'not running'} (now)"
        url = str(resource.figures["url"]).removesuffix("/v1")
        found = condition_of(url, dependencies(url))
        return found.ready, found.reason, found.message
    return None
