"""The name rules of the CRDs leave room for the children (issue 14, item 2): a KnowledgeBase named with
the longest name its refresh CronJob allows, and a HybridEndpoint with the longest name a label and its
gateway Service allow, get children the API server (the emulator validates built-in kinds) accepts."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.emulator.server import Emulator
from tests.integration.conftest import condition, eventually
from tests.integration.test_operator import MANAGED, NS, create, in_namespace, inline_knowledge_base
from tests.manifests import example

pytestmark = pytest.mark.integration


def owned(emulator: Emulator, resource: str, owner: str) -> list[dict[str, Any]]:
    return emulator.list(resource, NS, label_selector=f"{MANAGED},tandem.dev/name={owner}")


async def test_the_longest_names_get_children_the_api_server_accepts(
    emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    kb_name = "k" * 44  # its CronJob, <name>-refresh, is 52 characters: the most a CronJob name may be
    kb = inline_knowledge_base(kb_name)
    kb["spec"]["refresh"] = {"schedule": "0 6 * * MON-FRI"}
    kb["spec"]["resources"] = {"limits": {"memory": "2Gi", "cpu": "500m"}}
    await create(api, kb)

    he_name = "a" * 62 + "z"  # 63 characters starting with a letter: a label value and a Service name
    endpoint = in_namespace(example("HybridEndpoint"))
    endpoint["metadata"]["name"] = he_name
    endpoint["spec"].update(adapters=[], knowledgeBases=[{"name": kb_name}])
    await create(api, endpoint)

    [cronjob] = await eventually(lambda: owned(emulator, "cronjobs", kb_name), what="the refresh CronJob")
    assert cronjob["metadata"]["name"] == f"{kb_name}-refresh"
    assert await eventually(lambda: owned(emulator, "jobs", kb_name), what="the ingest Job")
    names = await eventually(
        lambda: (
            {str(s["metadata"]["name"]) for s in owned(emulator, "services", he_name)} >= {he_name}
            and {str(s["metadata"]["name"]) for s in owned(emulator, "services", he_name)}
        ),
        what="the gateway Service, named after the endpoint",
    )
    assert all(len(n) <= 63 and n[0].isalpha() for n in names), names
    for name, plural in ((kb_name, "knowledgebases"), (he_name, "hybridendpoints")):
        stalled = condition(emulator.get(plural, NS, name), "Stalled")
        assert stalled.get("reason") != "ChildRefused", stalled
