"""Events are posted by the operator under its own name (issue 14, around the CRDs).

Bug: every Event said `From: kopf` (source.component and reportingComponent were kopf's defaults), so
`kubectl describe` and event filters (`--field-selector source=...`) could not tell Tandem's events from
any other kopf operator's. The emulator stores the Event the operator POSTs as it was sent.
"""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest

from tests.emulator.server import Emulator
from tests.integration.conftest import eventually
from tests.integration.test_operator_refused_children import CASES, NS

pytestmark = pytest.mark.integration


async def test_events_come_from_the_tandem_operator(
    emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    owner, _ = CASES["Job"]  # a KnowledgeBase with one inline source: the operator posts Reconciling
    emulator.create(owner)

    def events() -> list[dict[str, Any]]:
        return [
            e
            for e in emulator.list_objects("events", NS)
            if (e.get("involvedObject") or {}).get("kind") == "KnowledgeBase"
        ]

    posted = await eventually(events, what="an Event about the KnowledgeBase")
    for event in posted:
        assert event["source"]["component"] == "tandem-operator", event  # kubectl describe's "From"
        assert event["reportingComponent"] == "tandem-operator"
        assert event["reportingInstance"] == socket.gethostname()  # the replica (its pod name in a cluster)
        assert event["metadata"]["name"].startswith("tandem-")
