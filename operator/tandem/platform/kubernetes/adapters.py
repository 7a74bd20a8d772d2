"""Which LoRA adapters each ready vLLM pod has loaded, as its own /v1/models says.

Status reports an adapter loaded on a pod only when that pod lists it under the expected path: the
path carries the version, so a pod still serving the previous version does not count.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx

from .pod_answers import get_json

MAX_ERROR = 500  # characters of a pod's error kept for status (the sync sends at most as many)


def pod_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    if pod.get("metadata", {}).get("deletionTimestamp") or not status.get("podIP"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


@dataclass(frozen=True)
class PodAdapters:
    """What one pod's adapter sync reports: adapter name -> the path vLLM loaded it from, and adapter
    name -> why its last round could not load it (the sync's own words: a store that refused, a digest
    that did not match)."""

    loaded: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


async def _models(client: httpx.AsyncClient, ip: str, port: int, seconds: float) -> PodAdapters:
    try:
        code, body = await get_json(client, f"http://{ip}:{port}/v1/models", seconds=seconds)
        if code != 200:
            return PodAdapters()
        data = body.get("data") or []
        errors = body.get("errors") or {}
    except (httpx.HTTPError, ValueError, AttributeError, TimeoutError):
        # unreachable, not answering in time, too much or not JSON: counts as having nothing loaded
        return PodAdapters()
    loaded = {str(m["id"]): str(m.get("root") or "") for m in data if isinstance(m, dict) and m.get("parent")}
    if not isinstance(errors, dict):
        errors = {}
    return PodAdapters(loaded, {str(k): str(v)[:MAX_ERROR] for k, v in errors.items()})


async def observe_pods(pods: list[dict[str, Any]], port: int, timeout: float = 3.0) -> dict[str, PodAdapters]:
    """Ready pod name -> what its adapter sync reports (nothing, when the pod does not answer: nothing is
    claimed for it)."""
    ready = [p for p in pods if pod_ready(p)]
    async with httpx.AsyncClient(timeout=timeout) as client:
        found = await asyncio.gather(*(_models(client, p["status"]["podIP"], port, timeout) for p in ready))
    return {p["metadata"]["name"]: f for p, f in zip(ready, found, strict=True)}


def adapter_statuses(expected: list[dict[str, Any]], observed: list[dict[str, str]]) -> list[dict[str, Any]]:
    """`expected`: name, path and version of each adapter; ready = loaded from its path on every ready pod."""
    out = []
    for adapter in expected:
        loaded = sum(1 for pod in observed if pod.get(adapter["name"]) == adapter["path"])
        entry: dict[str, Any] = {
            "name": adapter["name"],
            "loadedReplicas": loaded,
            "ready": bool(observed) and loaded == len(observed),
        }
        if adapter.get("version"):
            entry["version"] = adapter["version"]
        out.append(entry)
    return out
