"""Hostile network peers of vLLM (issue 15, item 1): nothing but the gateway and the adapter sync gets in.

vLLM (the real CPU build) runs as a vLLM pod does: Tandem's guard middleware reads the key from a file
(the pod's mounted Secret; `tandem up` gives it in VLLM_API_KEY from a 0600 file, the same guard), and re-
reads it when it changes: a rotated key is refused within the guard's RELOAD_SECONDS. A peer without the
key (the situation of any pod that slips past the NetworkPolicy, or of a cluster whose network plugin
ignores NetworkPolicy) is refused 401 on generation (also vLLM's /invocations, which its own key check
leaves open: Tandem's guard middleware closes it), on the model list and on loading or unloading adapters;
a wrong key too. The gateway, given the key file, answers its tenant; the adapter sync, given the key,
loads and unloads.

Slow: starts one vLLM for the module (about a minute on two cores, more on a busy machine).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tandem.core.vllm_guard import RELOAD_SECONDS
from tandem.platform.local.vllm import VllmServer
from tandem.workloads.gateway.app import Gateway
from tandem.workloads.gateway.config import GatewayConfig, KeyRing, load_vllm_key
from tests.integration.vllm_server import (  # noqa: F401  (session fixtures: the model and an adapter)
    MAX_LORA_RANK,
    MAX_LORAS,
    MAX_MODEL_LEN,
    STARTUP_TIMEOUT,
    identity_adapter_fixture,
    require_vllm,
)

pytestmark = pytest.mark.integration

VLLM_KEY = "vllm-key-for-this-test-only-5b2f"
CHAT = {"model": "base", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 2}


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vllm-key") / "api-key"
    path.write_text(VLLM_KEY)
    return path


@pytest.fixture(scope="module")
def keyed_vllm(
    tmp_path_factory: pytest.TempPathFactory, served_model_dir: Path, key_file: Path
) -> Iterator[VllmServer]:
    server = VllmServer(
        served_model_dir,
        log=tmp_path_factory.mktemp("keyed-vllm") / "vllm.log",
        python=require_vllm(),
        max_model_len=MAX_MODEL_LEN,
        max_lora_rank=MAX_LORA_RANK,
        max_loras=MAX_LORAS,
        api_key_file=key_file,
    )
    server.start(timeout=STARTUP_TIMEOUT)
    try:
        yield server
    finally:
        server.stop()


def test_a_peer_without_the_key_is_refused_everything_that_matters(
    keyed_vllm: VllmServer, identity_adapter: Path
) -> None:
    url = keyed_vllm.url
    load = {"lora_name": "planted", "lora_path": str(identity_adapter)}
    for headers in ({}, {"Authorization": "Bearer guessed"}, {"Authorization": f"Basic {VLLM_KEY}"}):
        assert (
            httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=headers, timeout=60).status_code
            == 401
        )
        assert httpx.get(f"{url}/v1/models", headers=headers, timeout=10).status_code == 401
        assert (
            httpx.post(f"{url}/v1/load_lora_adapter", json=load, headers=headers, timeout=60).status_code
            == 401
        )
        unload = httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": "planted"}, headers=headers)
        assert unload.status_code == 401
    # The adapter sync holds the key: it loads and unloads; nothing the refused peers sent was loaded.
    keyed_vllm.load_adapter("synced", identity_adapter)
    assert [m["id"] for m in keyed_vllm.models() if m.get("parent")] == ["synced"]
    keyed_vllm.unload_adapter("synced")
    assert [m["id"] for m in keyed_vllm.models() if m.get("parent")] == []
    # Outside vLLM's own guarded prefixes: /invocations generates (SageMaker's route) and was open with
    # vLLM's --api-key alone (200, measured); Tandem's guard middleware closes it and the rest.
    for route, body in [("/invocations", CHAT), ("/tokenize", {"model": "base", "prompt": "hi"})]:
        assert httpx.post(f"{url}{route}", json=body, timeout=60).status_code == 401, route
    # What generates nothing stays open: the probes and Prometheus.
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    assert "vllm:" in httpx.get(f"{url}/metrics", timeout=10).text


async def test_the_gateway_with_the_key_file_answers_its_tenant(
    keyed_vllm: VllmServer, tmp_path: Path
) -> None:
    (tmp_path / "vllm-key").write_text(VLLM_KEY)
    (tmp_path / "alpha").write_text("sk-alpha")
    config = GatewayConfig.model_validate(
        {
            "endpoint": {"namespace": "team", "name": "keyed"},
            "vllmUrl": keyed_vllm.url,
            "vllmApiKeyFile": str(tmp_path / "vllm-key"),
            "routes": [{"name": "base", "retrieval": False}],
            "tenants": [{"name": "alpha", "apiKeyFile": str(tmp_path / "alpha")}],
        }
    )
    gateway = Gateway(config, KeyRing(config.tenants), vllm_key=load_vllm_key(config))
    client = TestClient(TestServer(gateway.app()))
    await client.start_server()
    try:
        response = await client.post(
            "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-alpha"}
        )
        assert response.status == 200, await response.text()
        assert (await client.get("/readyz")).status == 200
        # Without the key file the same gateway would be refused by vLLM: a 502, never vLLM's 401 passed on.
        keyless = Gateway(config.model_copy(update={"vllm_api_key_file": None}), KeyRing(config.tenants))
        keyless_client = TestClient(TestServer(keyless.app()))
        await keyless_client.start_server()
        try:
            refused = await keyless_client.post(
                "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-alpha"}
            )
            assert refused.status == 502, json.dumps(await refused.json())
        finally:
            await keyless_client.close()
    finally:
        await client.close()


def test_a_rotated_key_is_refused_within_the_reload_time(keyed_vllm: VllmServer, key_file: Path) -> None:
    """The Secret is replaced (the kubelet rewrites the file): the old key stops working and the new one
    works within RELOAD_SECONDS, without restarting vLLM. Runs last in the module: it restores the key."""
    url = f"{keyed_vllm.url}/v1/models"
    old = {"Authorization": f"Bearer {VLLM_KEY}"}
    new = {"Authorization": "Bearer rotated-key-9c41"}
    assert httpx.get(url, headers=old, timeout=10).status_code == 200
    try:
        key_file.write_text("rotated-key-9c41\n")
        rotated_at = time.monotonic()
        while httpx.get(url, headers=old, timeout=10).status_code == 200:
            assert time.monotonic() - rotated_at < RELOAD_SECONDS + 1.0, "the old key still works"
            time.sleep(0.1)
        assert httpx.get(url, headers=new, timeout=10).status_code == 200
        assert httpx.get(url, headers=old, timeout=10).status_code == 401
    finally:
        key_file.write_text(VLLM_KEY)
