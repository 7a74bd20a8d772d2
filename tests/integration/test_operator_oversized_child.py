"""A KnowledgeBase the CRD admits but whose ingest ConfigMap the API server refuses (what `make
demo-cluster` shows): inline documents are each within their bound (1,000,000 characters) and the
request within the API server's 3 MiB, but the ConfigMap that carries them to the Job would be over a
ConfigMap's 1 MiB. The owner turns Stalled (ChildRefused) with the API server's message, phase Failed.

The refusal is the emulator's own (built-in validation of the ConfigMap), not an injected one.
"""

from __future__ import annotations

import httpx
import pytest

from tandem.platform.kubernetes.api import KubeApi
from tandem.platform.kubernetes.reconciler import Reconciler
from tandem.platform.kubernetes.settings import OperatorSettings
from tests.emulator.server import Emulator
from tests.integration.conftest import condition

pytestmark = pytest.mark.integration
NS = "team"


async def test_inline_documents_over_a_config_maps_size_stall_the_knowledge_base(
    emulator: Emulator, api: httpx.AsyncClient, kube: KubeApi
) -> None:
    page = "Every employee has 27 days of paid leave. " * 14_000  # 588,000 characters
    kb = {
        "apiVersion": "tandem.dev/v1alpha1",
        "kind": "KnowledgeBase",
        "metadata": {"name": "big", "namespace": NS},
        "spec": {
            "sources": [
                {"name": "pages", "inline": {"documents": [{"id": f"p{i}", "text": page} for i in (1, 2)]}}
            ]
        },
    }
    created = await api.post(f"/apis/tandem.dev/v1alpha1/namespaces/{NS}/knowledgebases", json=kb)
    assert created.status_code == 201, created.text[:500]  # the CRD admits it
    events: list[tuple[str, str, str]] = []
    reconciler = Reconciler(kube, OperatorSettings(), events=lambda body, t, r, m: events.append((t, r, m)))
    result = await reconciler.reconcile(emulator.get("knowledgebases", NS, "big") or {})
    assert result.outcome.reason == "ChildRefused"
    obj = emulator.get("knowledgebases", NS, "big") or {}
    stalled = condition(obj, "Stalled")
    assert stalled["status"] == "True" and "ConfigMap" in stalled["message"]
    assert "Too long: must have at most 1048576 bytes" in stalled["message"]
    assert obj["status"]["phase"] == "Failed"
    assert [(t, r) for t, r, _ in events] == [("Warning", "ChildRefused")]
    assert not emulator.list_objects("jobs", NS)  # nothing ran on a partial spec
