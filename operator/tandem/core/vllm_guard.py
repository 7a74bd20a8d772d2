"""An ASGI middleware vLLM loads (`--middleware=tandem_vllm_guard.RequireKey`): its key on every route.

vLLM's own `--api-key`/VLLM_API_KEY guards only the /v1, /v2, /inference and /cohere prefixes; its
SageMaker route `/invocations` generates without a key (measured with vLLM 0.32's CPU build:
tests/security/test_vllm_peers.py), as may any route a later version adds. This guard refuses every
HTTP and WebSocket request without `Authorization: Bearer <VLLM_API_KEY>`, except `/health` (the probes)
and `/metrics` (Prometheus, the autoscaler's metric), which generate nothing.

Standard library only, and copied next to vLLM as a module of its own (`tandem_vllm_guard.py`): vLLM
runs in its own environment or image, without Tandem installed. Without VLLM_API_KEY it guards nothing,
as vLLM's own check does.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

KEY_ENV = "VLLM_API_KEY"
OPEN_PATHS = frozenset({"/health", "/metrics"})


class RequireKey:
    def __init__(self, app: App) -> None:
        self.app = app
        key = os.environ.get(KEY_ENV, "")
        self.digest = hashlib.sha256(key.encode()).digest() if key else None

    def allowed(self, scope: Scope) -> bool:
        if self.digest is None or scope.get("path") in OPEN_PATHS:
            return True
        headers = dict(scope.get("headers") or [])
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        presented = hashlib.sha256(token.strip()).digest()
        return scheme.lower() == b"bearer" and hmac.compare_digest(presented, self.digest)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.allowed(scope):
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": b'{"error": "Unauthorized"}'})
            return
        if scope["type"] == "websocket" and not self.allowed(scope):
            await send({"type": "websocket.close", "code": 1008})  # policy violation
            return
        await self.app(scope, receive, send)
