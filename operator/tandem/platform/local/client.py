"""Asking an endpoint `tandem up` serves, as any OpenAI client would (`tandem ask`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from .runner import WorkFailed
from .state import ResourceState, State


def find_endpoint(state: State, name: str | None) -> ResourceState:
    """The one HybridEndpoint recorded here (or the one named)."""
    endpoints = [r for r in state.resources.values() if r.kind == "HybridEndpoint"]
    if name:
        endpoints = [r for r in endpoints if r.name == name]
    if not endpoints:
        raise WorkFailed("NoEndpoint", "no HybridEndpoint is running here: run `tandem up -f DIR` first")
    if len(endpoints) > 1:
        raise WorkFailed("AmbiguousEndpoint", "several endpoints run here: name one with --endpoint")
    return endpoints[0]


def ask(
    endpoint: ResourceState,
    question: str,
    *,
    model: str | None = None,
    tenant: str | None = None,
    trace: bool = False,
    max_tokens: int = 200,
) -> dict[str, Any]:
    """One question through the gateway."""
    keys: dict[str, str] = endpoint.local.get("keyFiles") or {}
    headers = {"X-Tandem-Trace": "1"} if trace else {}
    if keys:
        chosen = tenant or next(iter(keys))
        if chosen not in keys:
            raise WorkFailed("UnknownTenant", f"tenant {chosen!r} is not one of {', '.join(keys)}")
        headers["Authorization"] = f"Bearer {Path(keys[chosen]).read_text().strip()}"
    routes: list[str] = endpoint.local.get("routes") or []
    route = model or ("hybrid" if "hybrid" in routes else routes[-1])
    response = httpx.post(
        f"{endpoint.figures['url']}/chat/completions",
        json={
            "model": route,
            "messages": [{"role": "user", "content": question}],
            "temperature": 0,
            "max_tokens": max_tokens,
        },
        headers=headers,
        timeout=300,
    )
    body: dict[str, Any] = response.json()
    if response.status_code != 200:
        raise WorkFailed(
            "RequestFailed", f"{response.status_code}: {body.get('error', {}).get('message', body)}"
        )
    return body
