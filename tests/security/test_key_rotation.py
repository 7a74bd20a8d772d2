"""A revoked key stops working (issue 15, item 6): the gateway reads its key files again while serving.

The real gateway application answers `/v1/models` (authenticated, no vLLM needed) while the key files
change under it the two ways they change in practice: local mode rewrites the file, and the kubelet
swaps a Secret volume's `..data` symlink to a new timestamped folder. The old key must be refused within
KEY_RELOAD_SECONDS of the change, the new one accepted.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from tandem.workloads.gateway.app import Gateway
from tandem.workloads.gateway.config import KEY_RELOAD_SECONDS, GatewayConfig, KeyRing

# Scheduling slack on a busy two-core machine on top of the stated bound.
SLACK_SECONDS = 1.0


def gateway_config(key_files: dict[str, Path]) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "endpoint": {"namespace": "team", "name": "assistant"},
            "vllmUrl": "http://127.0.0.1:9",
            "routes": [{"name": "base", "retrieval": False}],
            "tenants": [{"name": n, "apiKeyFile": str(f)} for n, f in key_files.items()],
        }
    )


async def serve(key_files: dict[str, Path]) -> TestClient[Any, Any]:
    config = gateway_config(key_files)
    client = TestClient(TestServer(Gateway(config, KeyRing(config.tenants)).app()))
    await client.start_server()
    return client


async def status(client: TestClient[Any, Any], key: str) -> int:
    response = await client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    return response.status


async def seconds_until_refused(client: TestClient[Any, Any], key: str) -> float:
    """Ask with `key` every 100 ms from now until it is refused; how long that took."""
    changed = time.monotonic()
    while await status(client, key) != 401:
        assert time.monotonic() - changed < KEY_RELOAD_SECONDS + SLACK_SECONDS, f"{key} still accepted"
        await asyncio.sleep(0.1)
    return time.monotonic() - changed


async def test_a_rewritten_key_file_revokes_the_old_key_within_the_bound(tmp_path: Path) -> None:
    key_file = tmp_path / "alpha"
    key_file.write_text("sk-old-1111")
    client = await serve({"alpha": key_file})
    try:
        assert await status(client, "sk-old-1111") == 200
        # Local mode's way: the file is replaced (write a new file, rename over the old one).
        (tmp_path / "alpha.new").write_text("sk-new-2222")
        os.replace(tmp_path / "alpha.new", key_file)
        took = await seconds_until_refused(client, "sk-old-1111")
        assert took <= KEY_RELOAD_SECONDS + SLACK_SECONDS
        assert await status(client, "sk-new-2222") == 200
    finally:
        await client.close()


async def test_a_kubelet_style_secret_update_revokes_the_old_key(tmp_path: Path) -> None:
    """The kubelet's atomic writer: <dir>/api-key -> ..data/api-key, ..data -> ..<timestamp>; an update
    writes a new timestamped folder and swaps ..data with a rename."""
    volume = tmp_path / "key-alpha"
    (volume / "..2026_12_04_14_00_00.1").mkdir(parents=True)
    (volume / "..2026_12_04_14_00_00.1" / "api-key").write_text("sk-old-1111")
    (volume / "..data").symlink_to("..2026_12_04_14_00_00.1")
    (volume / "api-key").symlink_to("..data/api-key")
    client = await serve({"alpha": volume / "api-key"})
    try:
        assert await status(client, "sk-old-1111") == 200
        (volume / "..2026_12_04_14_05_00.2").mkdir()
        (volume / "..2026_12_04_14_05_00.2" / "api-key").write_text("sk-new-2222")
        (volume / "..data_tmp").symlink_to("..2026_12_04_14_05_00.2")
        os.replace(volume / "..data_tmp", volume / "..data")
        took = await seconds_until_refused(client, "sk-old-1111")
        assert took <= KEY_RELOAD_SECONDS + SLACK_SECONDS
        assert await status(client, "sk-new-2222") == 200
    finally:
        await client.close()


async def test_a_removed_key_file_fails_closed_not_open(tmp_path: Path) -> None:
    """A tenant whose key file disappears authenticates with nothing; the endpoint does not fall back to
    anonymous access because no key could be read."""
    key_file = tmp_path / "alpha"
    key_file.write_text("sk-old-1111")
    client = await serve({"alpha": key_file})
    try:
        key_file.unlink()
        await seconds_until_refused(client, "sk-old-1111")
        response = await client.get("/v1/models")  # no key at all
        assert response.status == 401
    finally:
        await client.close()


async def test_two_tenants_given_the_same_key_both_lose_it(tmp_path: Path) -> None:
    (tmp_path / "alpha").write_text("sk-alpha")
    (tmp_path / "beta").write_text("sk-beta")
    client = await serve({"alpha": tmp_path / "alpha", "beta": tmp_path / "beta"})
    try:
        (tmp_path / "beta").write_text("sk-alpha")  # a mistake: which tenant would the caller be?
        await seconds_until_refused(client, "sk-alpha")
        assert await status(client, "sk-beta") == 401
    finally:
        await client.close()
