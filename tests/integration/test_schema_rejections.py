"""Invalid manifests are refused by the CRD schema (as the API server enforces it), naming the field."""

from __future__ import annotations

import httpx
import pytest

from tests.emulator.server import Emulator
from tests.invalid_manifests import INVALID, Case

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
async def test_api_server_rejects_naming_the_field(
    case: Case, emulator: Emulator, api: httpx.AsyncClient
) -> None:
    body = case.build()
    body["metadata"]["namespace"] = "default"
    plural = body["kind"].lower() + "s"
    response = await api.post(f"/apis/tandem.dev/v1alpha1/namespaces/default/{plural}", json=body)
    assert response.status_code == 422, response.text
    status = response.json()
    assert status["reason"] == "Invalid"
    assert case.field in status["message"], status["message"]
    assert any(cause.get("field", "").startswith(case.field) for cause in status["details"]["causes"]), status


async def test_the_valid_examples_are_accepted(emulator: Emulator, api: httpx.AsyncClient) -> None:
    from tests.manifests import load_all

    for doc in load_all():
        if not doc["apiVersion"].startswith("tandem.dev/"):
            continue
        plural = doc["kind"].lower() + "s"
        ns = doc["metadata"]["namespace"]
        response = await api.post(f"/apis/tandem.dev/v1alpha1/namespaces/{ns}/{plural}", json=doc)
        assert response.status_code == 201, response.text
