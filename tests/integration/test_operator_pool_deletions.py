"""Deleting one side of a ServingPool attachment, with the operator (kopf) running against the emulator.

Each kind holds kopf's finalizer (kopf keeps one on every resource with a timer: the resync), so kopf runs
the operator's delete handler, which tells the other side: within seconds, well before the 60 s resync, a
deleted endpoint leaves its pool (its adapters and key digest gone from the pool's placement) and a
deleted pool leaves its endpoints not Ready with ServingPoolNotFound. The emulator runs no pods, so
nothing is placed on the pool's pods here: the attachment is what is tested.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from tests.emulator.server import Emulator
from tests.integration.conftest import condition, eventually
from tests.integration.test_operator_serving_pool import GRANT, POOL, POOL_NS, endpoint

pytestmark = pytest.mark.integration

POOL_PATH = f"/apis/tandem.dev/v1alpha1/namespaces/{POOL_NS}/servingpools/smollm"
ENDPOINT_PATH = "/apis/tandem.dev/v1alpha1/namespaces/team-a/hybridendpoints/assistant"
SOON = 15.0  # seconds: well under the 60 s resync that would otherwise be the first to notice


def pool_status(emulator: Emulator) -> dict[str, Any]:
    return (emulator.get("servingpools", POOL_NS, "smollm") or {}).get("status") or {}


def placement_keys(emulator: Emulator) -> list[str]:
    for config in emulator.list_objects("v1/configmaps", POOL_NS):
        if config["metadata"]["name"] == "smollm-placement":
            return list(json.loads(config["data"]["keys.json"]))
    return []


async def attached(emulator: Emulator) -> None:
    emulator.create(POOL)
    emulator.create(GRANT)
    emulator.create(endpoint("team-a", "assistant"))
    await eventually(
        lambda: pool_status(emulator).get("endpoints") == ["team-a/assistant"] and placement_keys(emulator),
        timeout=30,
        what="the endpoint attached to the pool with its key",
    )


async def test_a_deleted_endpoint_leaves_its_pool_at_once(
    emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    await attached(emulator)
    deleted = await api.delete(ENDPOINT_PATH)
    assert deleted.status_code == 200, deleted.text
    started = time.monotonic()
    await eventually(
        lambda: pool_status(emulator).get("endpoints") == [] and placement_keys(emulator) == [],
        timeout=SOON,
        what="the pool dropped the deleted endpoint and its key",
    )
    assert pool_status(emulator)["adapters"] == []
    assert time.monotonic() - started < SOON


async def test_a_deleted_pool_leaves_its_endpoints_saying_so_at_once(
    emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    await attached(emulator)
    deleted = await api.delete(POOL_PATH)
    assert deleted.status_code == 200, deleted.text

    def told() -> dict[str, Any] | None:
        ready = condition(emulator.get("hybridendpoints", "team-a", "assistant"), "Ready")
        return ready if ready and ready.get("reason") == "ServingPoolNotFound" else None

    ready = await eventually(told, timeout=SOON, what="the endpoint saying its pool is gone")
    assert ready["status"] == "False" and ready["message"] == "ServingPool serving/smollm does not exist"
