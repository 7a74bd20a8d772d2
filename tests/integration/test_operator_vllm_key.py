"""Each HybridEndpoint's vLLM key Secret (issue 15, item 1), against the API emulator: created once with a
random key before the pods that mount it, never re-created while it exists (the operator can only create
Secrets, so a 409 is how it learns that), created anew when deleted (how the key is rotated), owned by the
endpoint for the garbage collector, and never read by the operator.

The emulator folds a Secret's stringData into data as the API server does. Not covered: the kubelet
updating the mounted copies (vLLM's guard, the adapter sync and the gateway re-read their file:
tests/security/test_vllm_guard.py and test_vllm_key.py), and RBAC itself (the emulator authorizes
everything; tests/unit/test_chart.py holds the chart to `create` on secrets, and the code to that call).
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import httpx
import pytest

from tandem.platform.kubernetes.api import KubeApi
from tandem.platform.kubernetes.reconciler import Reconciler
from tandem.platform.kubernetes.settings import OperatorSettings
from tests.emulator.server import Emulator
from tests.manifests import example

pytestmark = pytest.mark.integration
NS = "team"
SECRET = "assistant-vllm-key"


def key_of(secret: dict[str, Any]) -> str:
    assert "stringData" not in secret
    return base64.b64decode(secret["data"]["api-key"]).decode()


async def test_the_key_is_created_once_kept_and_created_again_when_deleted(
    emulator: Emulator, kube: KubeApi, api: httpx.AsyncClient
) -> None:
    he = copy.deepcopy(example("HybridEndpoint"))
    he["metadata"].update(namespace=NS, name="assistant")
    he["spec"].update(adapters=[], knowledgeBases=[])
    stored = emulator.create(he)
    reconciler = Reconciler(kube, OperatorSettings())

    def current() -> dict[str, Any]:
        return emulator.get("hybridendpoints", NS, "assistant") or {}

    await reconciler.reconcile(current())
    secret = emulator.get("v1/secrets", NS, SECRET)
    assert secret is not None, "the vLLM key Secret was not created"
    first = key_of(secret)
    assert len(first) >= 40  # 256 random bits
    [owner] = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("HybridEndpoint", stored["metadata"]["uid"])

    # Later reconciles keep it: same key, same resourceVersion (the create is refused with a 409).
    await reconciler.reconcile(current())
    again = emulator.get("v1/secrets", NS, SECRET)
    assert again is not None and key_of(again) == first
    assert again["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]

    # A second endpoint gets a key of its own.
    other = copy.deepcopy(he)
    other["metadata"]["name"] = "other"
    emulator.create(other)
    await reconciler.reconcile(emulator.get("hybridendpoints", NS, "other") or {})
    other_secret = emulator.get("v1/secrets", NS, "other-vllm-key")
    assert other_secret is not None and key_of(other_secret) != first

    # Deleting the Secret rotates the key: the next reconcile creates a new one.
    deleted = await api.delete(f"/api/v1/namespaces/{NS}/secrets/{SECRET}")
    assert deleted.status_code == 200, deleted.text
    await reconciler.reconcile(current())
    rotated = emulator.get("v1/secrets", NS, SECRET)
    assert rotated is not None and key_of(rotated) != first

    # The garbage collector takes it with its endpoint.
    gone = await api.delete(f"/apis/tandem.dev/v1alpha1/namespaces/{NS}/hybridendpoints/assistant")
    assert gone.status_code == 200, gone.text
    assert emulator.get("hybridendpoints", NS, "assistant") is None
    assert emulator.get("v1/secrets", NS, SECRET) is None


async def test_a_refused_create_other_than_409_is_not_taken_for_an_existing_key(
    emulator: Emulator, kube: KubeApi
) -> None:
    """Only a 409 means "the key is there": any other refusal (here a name the API server rejects, 422)
    surfaces as an error instead of leaving the pods to wait for a Secret that will never exist."""
    from tandem.platform.kubernetes.api import ApiError
    from tandem.platform.kubernetes.ownership import Owner
    from tandem.platform.kubernetes.vllm_key import ensure_vllm_key

    owner = Owner("tandem.dev/v1alpha1", "HybridEndpoint", NS, "UPPER-case", "uid-1")  # not a valid name
    with pytest.raises(ApiError) as refused:
        await ensure_vllm_key(kube, owner)
    assert refused.value.status == 422
