"""What only the operator can refuse: the API server admits these manifests (tests/invalid_manifests.py,
OPERATOR_ONLY), and the operator makes each Stalled with a reason naming the cause."""

from __future__ import annotations

import httpx
import pytest

from tandem.api.admission.manifests import review
from tandem.api.kinds import by_kind
from tests.emulator.server import Emulator
from tests.integration.conftest import condition, eventually
from tests.invalid_manifests import OPERATOR_ONLY, OperatorCase

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("case", OPERATOR_ONLY, ids=lambda c: c.id)
async def test_admitted_then_stalled_with_a_reason(
    case: OperatorCase, emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    body = case.build()
    assert review(body).admitted  # `tandem validate` cannot know either
    kind = by_kind(body["kind"])
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    response = await api.post(
        f"/apis/{kind.api_version}/namespaces/{ns}/{kind.plural}",
        params={"fieldValidation": "Strict"},
        json=body,
    )
    assert response.status_code == 201, response.text
    stalled = await eventually(
        lambda: (
            condition(emulator.get(kind.plural, ns, name), "Stalled").get("status") == "True"
            and condition(emulator.get(kind.plural, ns, name), "Stalled")
        ),
        what="Stalled",
    )
    assert stalled["reason"] == case.reason, stalled
    assert stalled["message"]
