"""A HybridEndpoint scales as a Deployment does and shows READY as one (issue 14, around the CRDs).

`kubectl scale he NAME --replicas=2` goes through the scale subresource (autoscaling/v1 Scale, the spec's
vLLM replicas; a HorizontalPodAutoscaler aimed at the endpoint uses the same and the selector); with
spec.serving.autoscaling set, the operator's own HorizontalPodAutoscaler owns the replicas and the spec's
rule refuses a manual scale. `kubectl get he` shows READY as ready/desired vLLM pods.

The emulator serves the scale subresource as the apiextensions server does (the paths of the CRD, the
object's validation and CEL rules on the update); it runs no Deployment controller, so the vLLM
Deployment's status is written here as one would.
"""

from __future__ import annotations

import asyncio
import copy
import os
import pathlib
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
HE = f"/apis/tandem.dev/v1alpha1/namespaces/{NS}/hybridendpoints"
KUBECTL = os.environ.get("KUBECTL", "/usr/bin/kubectl")
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


def endpoint(name: str, **serving: Any) -> dict[str, Any]:
    obj = copy.deepcopy(example("HybridEndpoint"))
    obj["metadata"].update(namespace=NS, name=name)
    obj["spec"].update(adapters=[], knowledgeBases=[])
    obj["spec"].setdefault("serving", {}).update(serving)
    obj["spec"]["serving"].pop("autoscaling" if "replicas" in serving else "replicas", None)
    return obj


async def test_ready_column_and_scale(emulator: Emulator, kube: KubeApi, api: httpx.AsyncClient) -> None:
    emulator.create(endpoint("assistant", replicas=3))
    reconciler = Reconciler(kube, OperatorSettings())
    await reconciler.reconcile(emulator.get("hybridendpoints", NS, "assistant") or {})
    deployments = "/apis/apps/v1/namespaces/team/deployments"
    vllm = next(d for d in emulator.list_objects("deployments", NS) if d["spec"].get("replicas") == 3)
    name = vllm["metadata"]["name"]
    # One of three vLLM pods ready, as the Deployment controller would report it.
    status = {
        "status": {"observedGeneration": vllm["metadata"]["generation"], "replicas": 3, "readyReplicas": 1}
    }
    response = await api.patch(
        f"{deployments}/{name}/status", json=status, headers={"Content-Type": "application/merge-patch+json"}
    )
    assert response.status_code == 200, response.text
    await reconciler.reconcile(emulator.get("hybridendpoints", NS, "assistant") or {})
    obj = emulator.get("hybridendpoints", NS, "assistant") or {}
    assert obj["status"]["ready"] == "1/3" and obj["status"]["replicas"] == 3
    selector = obj["status"]["selector"]
    assert selector == ",".join(
        f"{k}={v}" for k, v in sorted(vllm["spec"]["selector"]["matchLabels"].items())
    )

    table = (await api.get(HE, headers={"Accept": TABLE})).json()
    header = [c["name"] for c in table["columnDefinitions"]]
    [row] = table["rows"]
    assert row["cells"][header.index("Ready")] == "1/3"

    scale = (await api.get(f"{HE}/assistant/scale")).json()
    assert (scale["apiVersion"], scale["kind"]) == ("autoscaling/v1", "Scale")
    assert scale["spec"]["replicas"] == 3 and scale["status"] == {"replicas": 3, "selector": selector}

    # As `kubectl scale` sends it: a merge patch of the Scale.
    response = await api.patch(
        f"{HE}/assistant/scale",
        json={"spec": {"replicas": 2}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["spec"]["replicas"] == 2
    obj = emulator.get("hybridendpoints", NS, "assistant") or {}
    assert obj["spec"]["serving"]["replicas"] == 2 and obj["metadata"]["generation"] == 2
    await reconciler.reconcile(obj)
    assert (emulator.get("deployments", NS, name) or {})["spec"]["replicas"] == 2  # the operator follows

    # A Scale out of the field's bounds is refused by the endpoint's own schema.
    response = await api.put(
        f"{HE}/assistant/scale",
        json={**scale, "metadata": {"name": "assistant", "namespace": NS}, "spec": {"replicas": 1001}},
    )
    assert response.status_code == 422 and "spec.serving.replicas" in response.json()["message"]


async def test_an_autoscaled_endpoint_refuses_a_manual_scale(
    emulator: Emulator, api: httpx.AsyncClient
) -> None:
    """Its replicas belong to the operator's HorizontalPodAutoscaler (on the vLLM Deployment): a manual
    scale would fight it, so the spec's rule refuses it with its message."""
    emulator.create(endpoint("auto", autoscaling={"minReplicas": 1, "maxReplicas": 3}))
    response = await api.patch(
        f"{HE}/auto/scale",
        json={"spec": {"replicas": 2}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status_code == 422
    assert "set replicas or autoscaling, not both" in response.json()["message"]
    assert "replicas" not in (emulator.get("hybridendpoints", NS, "auto") or {})["spec"]["serving"]


@pytest.mark.skipif(not pathlib.Path(KUBECTL).exists(), reason="kubectl is not available")
async def test_kubectl_scale_he(emulator: Emulator, tmp_path: pathlib.Path) -> None:
    emulator.create(endpoint("assistant", replicas=1))
    kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--kubeconfig", str(kubeconfig), "scale", "he", "assistant", "--replicas=2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    assert "scaled" in out.decode()
    assert (emulator.get("hybridendpoints", NS, "assistant") or {})["spec"]["serving"]["replicas"] == 2
