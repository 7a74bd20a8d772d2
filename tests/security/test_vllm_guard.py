"""The vLLM guard middleware (tandem.core.vllm_guard) called as ASGI, without vLLM: which requests pass,
from which peers, with which key, and how a rotated key file takes effect. The real vLLM behind it:
tests/security/test_vllm_peers.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tandem.core.vllm_guard import KEY_ENV, KEY_FILE_ENV, RELOAD_SECONDS, RequireKey

GATEWAY_PEER = ("10.0.3.7", 51000)
SIDECAR_PEER = ("127.0.0.1", 51001)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def status_of(guard: RequireKey, path: str, key: str | None, client: tuple[str, int]) -> int:
    headers = [(b"authorization", f"Bearer {key}".encode())] if key is not None else []
    scope: dict[str, Any] = {"type": "http", "path": path, "headers": headers, "client": client}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    guard.app = app
    await guard(scope, receive, send)
    return int(sent[0]["status"])


def guard_with_file(path: Path, clock: Clock) -> RequireKey:
    async def unused(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError

    return RequireKey(unused, environ={KEY_FILE_ENV: str(path)}, clock=clock)


async def test_a_rotated_key_file_replaces_the_old_key_within_the_reload_time(tmp_path: Path) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("old-key\n")
    clock = Clock()
    guard = guard_with_file(key_file, clock)
    assert await status_of(guard, "/v1/chat/completions", "old-key", GATEWAY_PEER) == 200
    key_file.write_text("new-key")  # the kubelet swaps the Secret volume's files
    clock.now += RELOAD_SECONDS
    assert await status_of(guard, "/v1/chat/completions", "old-key", GATEWAY_PEER) == 401
    assert await status_of(guard, "/v1/chat/completions", "new-key", GATEWAY_PEER) == 200


async def test_an_unreadable_or_empty_key_file_fails_closed(tmp_path: Path) -> None:
    clock = Clock()
    guard = guard_with_file(tmp_path / "never-written", clock)
    for key in (None, "", "anything"):
        assert await status_of(guard, "/v1/completions", key, GATEWAY_PEER) == 401
    (tmp_path / "never-written").write_text("  \n")
    clock.now += RELOAD_SECONDS
    assert await status_of(guard, "/v1/completions", "", GATEWAY_PEER) == 401
    # The probes and Prometheus still answer: a pod whose Secret is late is not restarted for it.
    assert await status_of(guard, "/health", None, GATEWAY_PEER) == 200
    assert await status_of(guard, "/metrics", None, GATEWAY_PEER) == 200


async def test_loading_and_unloading_adapters_is_for_the_pods_own_loopback(tmp_path: Path) -> None:
    (tmp_path / "api-key").write_text("k")
    guard = guard_with_file(tmp_path / "api-key", Clock())
    for route in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
        # The gateway holds the key to generate; from its pod IP it cannot change what vLLM serves.
        assert await status_of(guard, route, "k", GATEWAY_PEER) == 401
        assert await status_of(guard, route, "k", ("::1", 1)) == 200
        assert await status_of(guard, route, "k", SIDECAR_PEER) == 200
        assert await status_of(guard, route, None, SIDECAR_PEER) == 401
    assert await status_of(guard, "/v1/models", "k", GATEWAY_PEER) == 200


async def test_the_variable_and_the_file_are_both_accepted_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "api-key").write_text("from-file")

    async def unused(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError

    guard = RequireKey(unused, environ={KEY_ENV: "from-env", KEY_FILE_ENV: str(tmp_path / "api-key")})
    assert await status_of(guard, "/invocations", "from-env", GATEWAY_PEER) == 200
    assert await status_of(guard, "/invocations", "from-file", GATEWAY_PEER) == 200
    assert await status_of(guard, "/invocations", "from-filex", GATEWAY_PEER) == 401
    open_guard = RequireKey(unused, environ={})
    assert await status_of(open_guard, "/invocations", None, GATEWAY_PEER) == 200


async def test_a_pool_accepts_the_listed_digests_and_drops_a_detached_endpoints_key(tmp_path: Path) -> None:
    """A ServingPool's pods accept each attached endpoint's own key by its digest (the keys are Secrets of
    other namespaces); an endpoint removed from the list is refused within the reload time."""
    import hashlib
    import json

    from tandem.core.vllm_guard import DIGESTS_FILE_ENV

    listed = tmp_path / "keys.json"
    listed.write_text(
        json.dumps([hashlib.sha256(k.encode()).hexdigest() for k in ("team-a-key", "team-b-key")])
    )
    (tmp_path / "pool-key").write_text("pool-sidecar-key")
    clock = Clock()

    async def unused(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError

    environ = {DIGESTS_FILE_ENV: str(listed), KEY_FILE_ENV: str(tmp_path / "pool-key")}
    guard = RequireKey(unused, environ=environ, clock=clock)
    for key in ("team-a-key", "team-b-key", "pool-sidecar-key"):
        assert await status_of(guard, "/v1/chat/completions", key, GATEWAY_PEER) == 200, key
    assert await status_of(guard, "/v1/chat/completions", "team-c-key", GATEWAY_PEER) == 401
    # The digest itself is not a key.
    digest = hashlib.sha256(b"team-a-key").hexdigest()
    assert await status_of(guard, "/v1/chat/completions", digest, GATEWAY_PEER) == 401
    listed.write_text(json.dumps([hashlib.sha256(b"team-b-key").hexdigest()]))  # team-a detached
    clock.now += RELOAD_SECONDS
    assert await status_of(guard, "/v1/chat/completions", "team-a-key", GATEWAY_PEER) == 401
    assert await status_of(guard, "/v1/chat/completions", "team-b-key", GATEWAY_PEER) == 200
    listed.write_text("{not json")
    clock.now += RELOAD_SECONDS
    assert await status_of(guard, "/v1/chat/completions", "team-b-key", GATEWAY_PEER) == 401  # fails closed
    assert await status_of(guard, "/v1/chat/completions", "pool-sidecar-key", GATEWAY_PEER) == 200
