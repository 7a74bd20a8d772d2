"""The key between the gateway and vLLM (issue 15, item 1), without starting vLLM: who sends it, where it
is kept. tests/security/test_vllm_peers.py shows the real vLLM refusing a peer without it."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import httpx
import pytest

from tandem.platform.local.platform import LocalPlatform
from tandem.workloads.adapter_sync import VllmAdmin
from tandem.workloads.gateway.app import Gateway
from tandem.workloads.gateway.config import ConfigError, GatewayConfig, load_vllm_key


def recorded(seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": []})

    return httpx.MockTransport(handle)


def test_the_adapter_sync_sends_the_key_from_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sidecar gets VLLM_API_KEY from the Secret, as the vLLM container does; no argument holds it."""
    seen: list[httpx.Request] = []
    monkeypatch.setenv("VLLM_API_KEY", "k-from-secret")
    with VllmAdmin("http://127.0.0.1:8000", transport=recorded(seen)) as admin:
        admin.loaded_adapters()
        admin.unload("old")
    assert [r.headers.get("Authorization") for r in seen] == ["Bearer k-from-secret"] * 2
    seen.clear()
    with VllmAdmin("http://127.0.0.1:8000", transport=recorded(seen), api_key="given") as admin:
        admin.loaded_adapters()
    assert seen[0].headers["Authorization"] == "Bearer given"


def test_the_gateway_reads_the_key_file_and_sends_it(tmp_path: Path) -> None:
    (tmp_path / "vllm-key").write_text("k-123\n")
    config = GatewayConfig.model_validate(
        {
            "endpoint": {"namespace": "team", "name": "a"},
            "vllmUrl": "http://127.0.0.1:8000",
            "vllmApiKeyFile": str(tmp_path / "vllm-key"),
            "routes": [{"name": "base", "retrieval": False}],
        }
    )
    key = load_vllm_key(config)
    assert key == "k-123"
    assert Gateway(config, {}, vllm_key=key).vllm.headers["Authorization"] == "Bearer k-123"
    (tmp_path / "vllm-key").write_text("")
    with pytest.raises(ConfigError, match=r"vLLM.s API key in .* is empty"):
        load_vllm_key(config)


def test_local_mode_makes_the_key_once_private_and_random(tmp_path: Path) -> None:
    directory = tmp_path / "endpoints" / "default-assistant"
    path = LocalPlatform.vllm_key(directory)
    key = path.read_text()
    assert len(key) >= 40  # token_urlsafe(32): 256 random bits
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert LocalPlatform.vllm_key(directory).read_text() == key  # kept: a running vLLM holds it
    assert LocalPlatform.vllm_key(tmp_path / "endpoints" / "default-other").read_text() != key


async def guarded_status(monkeypatch: pytest.MonkeyPatch, key: str, path: str, header: bytes | None) -> int:
    """The status the guard middleware answers (200: passed on to vLLM's application)."""
    from tandem.core.vllm_guard import RequireKey

    monkeypatch.setenv("VLLM_API_KEY", key)
    sent: list[dict[str, Any]] = []

    async def vllm_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    headers = [(b"authorization", header)] if header is not None else []
    # From the pod's loopback, where the adapter sync calls from (load/unload are refused from elsewhere).
    scope = {"type": "http", "path": path, "headers": headers, "client": ("127.0.0.1", 40000)}
    await RequireKey(vllm_app)(scope, receive, send)
    return int(sent[0]["status"])


async def test_the_guard_requires_the_key_on_every_route_but_health_and_metrics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for path in ("/invocations", "/v1/chat/completions", "/v1/load_lora_adapter", "/tokenize", "/anything"):
        assert await guarded_status(monkeypatch, "k", path, None) == 401, path
        assert await guarded_status(monkeypatch, "k", path, b"Bearer wrong") == 401, path
        assert await guarded_status(monkeypatch, "k", path, b"Basic k") == 401, path
        assert await guarded_status(monkeypatch, "k", path, b"Bearer k") == 200, path
    for path in ("/health", "/metrics"):
        assert await guarded_status(monkeypatch, "k", path, None) == 200, path
    # No key configured: vLLM serves as it would without the guard.
    assert await guarded_status(monkeypatch, "", "/invocations", None) == 200


def test_the_adapter_sync_reads_a_rotated_key_file(tmp_path: Path) -> None:
    """In a pod the sidecar reads the mounted Secret's file, again after KEY_RELOAD_SECONDS: a rotated key
    is sent without a restart (the guard in vLLM reads the same file as often)."""
    from tandem.workloads.key_file import KEY_RELOAD_SECONDS, FileBearer

    key_file = tmp_path / "api-key"
    key_file.write_text("first\n")
    now = [0.0]
    seen: list[httpx.Request] = []
    admin = VllmAdmin("http://127.0.0.1:8000", transport=recorded(seen), api_key_file=key_file)
    assert isinstance(admin.client.auth, FileBearer)
    admin.client.auth.clock = lambda: now[0]
    admin.loaded_adapters()
    key_file.write_text("second")
    admin.loaded_adapters()  # within the reload time: the key read before
    now[0] += KEY_RELOAD_SECONDS
    admin.loaded_adapters()
    key_file.unlink()
    now[0] += KEY_RELOAD_SECONDS
    admin.loaded_adapters()
    assert [r.headers.get("Authorization") for r in seen] == [
        "Bearer first",
        "Bearer first",
        "Bearer second",
        None,
    ]


def test_the_sidecar_status_port_lists_the_adapters_and_serves_nothing_else(tmp_path: Path) -> None:
    """What the operator reads instead of vLLM's own /v1/models (it holds no vLLM key): the adapters vLLM
    lists right now, asked with the key; no generation, no loading, and 503 while vLLM is down."""
    from tandem.workloads.adapter_sync import serve_status

    (tmp_path / "api-key").write_text("pod-key")
    seen: list[httpx.Request] = []
    up = [True]

    def vllm(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if not up[0]:
            raise httpx.ConnectError("refused")
        models = [{"id": "base"}, {"id": "support", "parent": "base", "root": "/adapters/support/v2"}]
        return httpx.Response(200, json={"data": models})

    admin = VllmAdmin(
        "http://127.0.0.1:8000", transport=httpx.MockTransport(vllm), api_key_file=tmp_path / "api-key"
    )
    server = serve_status(admin, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        listed = httpx.get(f"{url}/v1/models", timeout=5)
        assert listed.status_code == 200
        assert listed.json()["data"] == [{"id": "support", "parent": "base", "root": "/adapters/support/v2"}]
        assert seen[-1].headers["Authorization"] == "Bearer pod-key"
        asked = len(seen)
        for method, path in [
            ("POST", "/v1/chat/completions"),
            ("POST", "/v1/load_lora_adapter"),
            ("GET", "/"),
        ]:
            assert httpx.request(method, f"{url}{path}", json={}, timeout=5).status_code in (404, 501), path
        assert len(seen) == asked  # none of them reached vLLM
        up[0] = False
        assert httpx.get(f"{url}/v1/models", timeout=5).status_code == 503
    finally:
        server.shutdown()
        server.server_close()


async def test_the_gateway_sends_a_rotated_vllm_key_without_a_restart(tmp_path: Path) -> None:
    """The gateway reads vLLM's key file again (as vLLM's guard does): after the Secret is replaced, its
    calls carry the new key within KEY_RELOAD_SECONDS, instead of 401s until the pod restarts."""
    from tandem.workloads.key_file import KEY_RELOAD_SECONDS, FileBearer

    key_file = tmp_path / "vllm-key"
    key_file.write_text("before")
    config = GatewayConfig.model_validate(
        {
            "endpoint": {"namespace": "team", "name": "a"},
            "vllmUrl": "http://127.0.0.1:8000",
            "vllmApiKeyFile": str(key_file),
            "routes": [{"name": "base", "retrieval": False}],
        }
    )
    gateway = Gateway(config, {}, vllm_key=load_vllm_key(config), vllm_key_file=key_file)
    seen: list[httpx.Request] = []
    gateway.vllm._transport = recorded(seen)  # the client's own transport: keeps its auth
    assert isinstance(gateway.vllm.auth, FileBearer)
    now = [0.0]
    gateway.vllm.auth.clock = lambda: now[0]
    await gateway.vllm.get("/v1/models")
    key_file.write_text("after")
    now[0] += KEY_RELOAD_SECONDS
    await gateway.vllm.get("/v1/models")
    await gateway.vllm.aclose()
    assert [r.headers["Authorization"] for r in seen] == ["Bearer before", "Bearer after"]
