"""An ASGI middleware vLLM loads (`--middleware=tandem_vllm_guard.RequireKey`): its key on every route.

vLLM's own `--api-key`/VLLM_API_KEY guards only the /v1, /v2, /inference and /cohere prefixes; its
SageMaker route `/invocations` generates without a key (measured with vLLM 0.32's CPU build:
tests/security/test_vllm_peers.py), as may any route a later version adds. This guard refuses every
HTTP and WebSocket request without `Authorization: Bearer <key>`, except `/health` (the probes) and
`/metrics` (Prometheus, the autoscaler's metric), which generate nothing. Loading and unloading adapters
is further kept to peers on the pod's own loopback (the adapter-sync sidecar): the gateway holds the key
to generate, not to change what every tenant of the pod is served.

The key comes from VLLM_API_KEY (local mode, read once) and/or the file TANDEM_VLLM_KEY_FILE names (a
mounted Secret in a pod): the file is read again when its last read is older than RELOAD_SECONDS, so a
rotated key takes effect within that time without a restart (vLLM's own check, reading its variable
once, cannot; in a pod, vLLM therefore gets the file only). A named file that cannot be read or is
empty fails closed: nothing but the open paths is served until it can be.

A ServingPool's pods are shared by the gateways of many endpoints, each with a key of its own that the
pool's pods cannot mount (it is a Secret of the endpoint's namespace): TANDEM_VLLM_KEY_DIGESTS_FILE names
a JSON list of the SHA-256 hex digests of the keys accepted besides (the pool's ConfigMap, written by the
operator, which knows each digest from when it created the key), re-read like the key file. An endpoint
detached from the pool loses its digest there, and with it access, within RELOAD_SECONDS of the kubelet's
update.

Standard library only, and copied next to vLLM as a module of its own (`tandem_vllm_guard.py`): vLLM
runs in its own environment or image, without Tandem installed. With neither variable set it guards
nothing, as vLLM's own check does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

KEY_ENV = "VLLM_API_KEY"
KEY_FILE_ENV = "TANDEM_VLLM_KEY_FILE"
DIGESTS_FILE_ENV = "TANDEM_VLLM_KEY_DIGESTS_FILE"
RELOAD_SECONDS = 2.0
OPEN_PATHS = frozenset({"/health", "/metrics"})
ADMIN_PATHS = frozenset({"/v1/load_lora_adapter", "/v1/unload_lora_adapter"})
LOOPBACK = frozenset({"127.0.0.1", "::1"})


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


class RequireKey:
    def __init__(
        self,
        app: App,
        *,
        environ: MutableMapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        env = os.environ if environ is None else environ
        key = env.get(KEY_ENV, "")
        self.fixed = _digest(key.encode()) if key else None
        self.key_file = env.get(KEY_FILE_ENV) or None
        self.digests_file = env.get(DIGESTS_FILE_ENV) or None
        self.clock = clock
        self.read_at = float("-inf")
        self.from_file: bytes | None = None
        self.listed: list[bytes] = []

    def _read_files(self) -> None:
        """Read the key file and the digests file again once RELOAD_SECONDS have passed. Unreadable,
        empty or malformed files accept nothing (fail closed)."""
        now = self.clock()
        if now - self.read_at < RELOAD_SECONDS:
            return
        self.read_at = now
        if self.key_file is not None:
            try:
                with open(self.key_file, "rb") as f:
                    key = f.read().strip()
            except OSError:
                key = b""
            self.from_file = _digest(key) if key else None
        if self.digests_file is not None:
            try:
                with open(self.digests_file, "rb") as f:
                    listed = json.load(f)
                self.listed = [bytes.fromhex(d) for d in listed if isinstance(d, str) and len(d) == 64]
            except (OSError, ValueError, TypeError):
                self.listed = []

    def allowed(self, scope: Scope) -> bool:
        path = scope.get("path")
        if path in OPEN_PATHS or (self.fixed is None and self.key_file is None and self.digests_file is None):
            return True
        if path in ADMIN_PATHS and (scope.get("client") or ("",))[0] not in LOOPBACK:
            return False
        self._read_files()
        accepted = [d for d in (self.fixed, self.from_file, *self.listed) if d is not None]
        headers = dict(scope.get("headers") or [])
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        presented = _digest(token.strip())
        # Every accepted digest is compared, so the time taken does not say which one matched.
        matches = [hmac.compare_digest(presented, d) for d in accepted]
        return scheme.lower() == b"bearer" and any(matches)

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
