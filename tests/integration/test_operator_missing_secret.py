"""A tenant's API-key Secret that does not exist makes the endpoint Stalled SecretNotFound, naming the
Secret and the tenant, instead of Deploying forever (issue 14, around the CRDs). The operator cannot read
Secrets; it reads the gateway pods' status.

The emulator runs no kubelet: the pod status a kubelet writes for a container whose env needs a missing
Secret (CreateContainerConfigError, `secret "x" not found`) is written here, and so is the FailedMount
Event a kubelet posts for a secret volume whose Secret is missing (how the gateway gets its API keys).
Not covered: which Event fields a real API server lets a fieldSelector name (the emulator takes any).
"""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from tandem.platform.kubernetes.api import KubeApi
from tandem.platform.kubernetes.ownership import Owner
from tandem.platform.kubernetes.reconciler import Reconciler
from tandem.platform.kubernetes.settings import OperatorSettings
from tests.emulator.server import Emulator
from tests.integration.conftest import condition
from tests.manifests import example

pytestmark = pytest.mark.integration
NS = "team"
PODS = f"/api/v1/namespaces/{NS}/pods"


def gateway_pod(owner: Owner, waiting: dict[str, str] | None) -> dict[str, Any]:
    state = {"waiting": waiting} if waiting else {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "assistant-gateway-abc12", "namespace": NS, "labels": owner.labels("gateway")},
        "spec": {"containers": [{"name": "gateway", "image": "tandem-gateway"}]},
        "status": {
            "phase": "Pending" if waiting else "Running",
            "containerStatuses": [
                {"name": "gateway", "ready": False, "restartCount": 0, "image": "tandem-gateway",
                 "imageID": "", "state": state}
            ],
        },
    }  # fmt: skip


async def write_status(api: httpx.AsyncClient, pod: dict[str, Any]) -> None:
    response = await api.patch(
        f"{PODS}/{pod['metadata']['name']}/status",
        json={"status": pod["status"]},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status_code == 200, response.text


def endpoint(emulator: Emulator) -> dict[str, Any]:
    """The example endpoint without adapters or knowledge bases, stored as created."""
    he = copy.deepcopy(example("HybridEndpoint"))
    he["metadata"].update(namespace=NS, name="assistant")
    he["spec"].update(adapters=[], knowledgeBases=[])
    emulator.create(he)
    return he


async def test_a_missing_tenant_secret_stalls_the_endpoint(
    emulator: Emulator, kube: KubeApi, api: httpx.AsyncClient
) -> None:
    he = endpoint(emulator)
    reconciler = Reconciler(kube, OperatorSettings())

    def current() -> dict[str, Any]:
        return emulator.get("hybridendpoints", NS, "assistant") or {}

    result = await reconciler.reconcile(current())
    assert result.outcome.reason == "Deploying"  # no pods yet: nothing says a Secret is missing
    owner = Owner.from_body(current())
    secret = he["spec"]["tenants"][0]["apiKeySecretRef"]["name"]
    message = f'secret "{secret}" not found'
    waiting = gateway_pod(owner, {"reason": "CreateContainerConfigError", "message": message})
    created = await api.post(PODS, json={**waiting, "status": {}})
    assert created.status_code == 201, created.text
    await write_status(api, waiting)  # as the kubelet would (status is not taken on create)

    result = await reconciler.reconcile(current())
    assert (result.outcome.state, result.outcome.reason) == ("Stalled", "SecretNotFound")
    stalled = condition(current(), "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "SecretNotFound"
    tenants = [t["name"] for t in he["spec"]["tenants"] if t["apiKeySecretRef"]["name"] == secret]
    assert f"Secret {secret} (" in stalled["message"] and all(
        f"tenant {t}" in stalled["message"] for t in tenants
    )
    assert f"namespace {NS}" in stalled["message"]
    assert current()["status"]["phase"] == "Failed"

    # The Secret is created and the kubelet starts the container: no longer SecretNotFound.
    await write_status(api, gateway_pod(owner, None))
    result = await reconciler.reconcile(current())
    assert result.outcome.reason != "SecretNotFound"
    assert condition(current(), "Stalled")["status"] == "False"


async def test_a_missing_secret_volume_shows_in_the_pods_failedmount_event(
    emulator: Emulator, kube: KubeApi, api: httpx.AsyncClient
) -> None:
    """The gateway mounts the tenants' keys as a secret volume: the kubelet leaves the pod
    ContainerCreating and says why only in a FailedMount Event, which the operator lists."""
    he = endpoint(emulator)
    reconciler = Reconciler(kube, OperatorSettings())

    def current() -> dict[str, Any]:
        return emulator.get("hybridendpoints", NS, "assistant") or {}

    await reconciler.reconcile(current())
    owner = Owner.from_body(current())
    secret = he["spec"]["tenants"][0]["apiKeySecretRef"]["name"]
    creating = gateway_pod(owner, {"reason": "ContainerCreating"})
    creating["spec"]["volumes"] = [{"name": "api-key-0", "secret": {"secretName": secret}}]
    created = await api.post(PODS, json={**creating, "status": {}})
    assert created.status_code == 201, created.text
    await write_status(api, creating)
    result = await reconciler.reconcile(current())
    assert result.outcome.reason == "Deploying"  # nothing says why yet

    pod_name = creating["metadata"]["name"]
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{pod_name}.1", "namespace": NS},
        "involvedObject": {"kind": "Pod", "name": pod_name, "namespace": NS},
        "reason": "FailedMount",
        "type": "Warning",
        "message": f'MountVolume.SetUp failed for volume "api-key-0" : secret "{secret}" not found',
    }
    posted = await api.post(f"/api/v1/namespaces/{NS}/events", json=event)
    assert posted.status_code == 201, posted.text
    result = await reconciler.reconcile(current())
    assert (result.outcome.state, result.outcome.reason) == ("Stalled", "SecretNotFound")
    assert f"Secret {secret} (" in result.outcome.message and pod_name in result.outcome.message
