"""A ServingPool's autoscaling with KEDA (issue 16, item 5): with a Prometheus for KEDA the pool gets a
ScaledObject (valid against KEDA's published schema, as carried by cloudcoil-models-keda) on the pending
requests its gateways report, which scales to zero and wakes on one waiting request; without, the HPA."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import kubernetes_validate
import pytest
from cloudcoil.models.keda.v1alpha1 import ScaledObject

from tandem.api.kinds import SERVING_POOL
from tandem.api.v1alpha1.servingpool import ServingPoolSpec
from tandem.core.pools import pool_service_host
from tandem.platform.kubernetes import api as kube_api
from tandem.platform.kubernetes.children import CHILD_KINDS, sync_children
from tandem.platform.kubernetes.ownership import Owner
from tandem.platform.kubernetes.planners.scaling import POOL_REQUESTS_METRIC
from tandem.platform.kubernetes.planners.servingpool import plan_serving_pool, pool_names
from tandem.platform.kubernetes.settings import OperatorSettings
from tandem.workloads.gateway.config import VllmPool

PROMETHEUS = "http://prometheus.monitoring.svc:9090"
KEDA = dataclasses.replace(OperatorSettings(), keda_prometheus_url=PROMETHEUS)
POOL = Owner("tandem.dev/v1alpha1", "ServingPool", "serving", "smollm", "uid-pool")
AUTOSCALING = {"minReplicas": 0, "maxReplicas": 6, "targetInFlightRequests": 4}


def spec(autoscaling: dict[str, Any] | None = AUTOSCALING) -> ServingPoolSpec:
    serving: dict[str, Any] = {"autoscaling": autoscaling} if autoscaling is not None else {}
    return ServingPoolSpec.model_validate(
        {"baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"}, "serving": serving}
    )


def children(settings: OperatorSettings, autoscaling: dict[str, Any] | None = AUTOSCALING) -> Any:
    return plan_serving_pool(POOL, spec(autoscaling), settings, [], ["p-1"]).children


def kinds(objs: list[dict[str, Any]]) -> list[str]:
    return sorted(o["kind"] for o in objs)


def scaled_object() -> dict[str, Any]:
    [found] = [c for c in children(KEDA) if c["kind"] == "ScaledObject"]
    return found


def test_keda_replaces_the_hpa_only_when_the_pool_autoscales() -> None:
    base = ["ConfigMap", "Deployment", "NetworkPolicy", "Service"]
    assert kinds(children(KEDA)) == sorted([*base, "ScaledObject"])
    assert kinds(children(OperatorSettings())) == sorted([*base, "HorizontalPodAutoscaler"])
    assert kinds(children(KEDA, None)) == base
    # Autoscaled either way: the Deployment leaves its replicas to the autoscaler.
    [deployment] = [c for c in children(KEDA) if c["kind"] == "Deployment"]
    assert "replicas" not in deployment["spec"]


def test_the_scaled_object_scales_the_pools_vllm_on_its_gateways_pending_requests() -> None:
    obj = scaled_object()
    vllm, _ = pool_names(POOL)
    assert obj["apiVersion"] == "keda.sh/v1alpha1"
    assert obj["metadata"]["name"] == vllm and obj["metadata"]["namespace"] == "serving"
    assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-pool"
    assert obj["metadata"]["labels"].items() >= POOL.selector().items()  # the child sync lists it
    s = obj["spec"]
    assert s["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": vllm}
    assert (s["minReplicaCount"], s["maxReplicaCount"]) == (0, 6)  # 0: KEDA really scales to zero
    [trigger] = s["triggers"]
    assert trigger["type"] == "prometheus"
    meta = trigger["metadata"]
    assert meta["serverAddress"] == PROMETHEUS
    assert meta["threshold"] == "4"  # targetInFlightRequests per replica
    assert meta["activationThreshold"] == "0"  # one waiting request wakes the fleet
    # Summed over every state and every gateway of the pool: the label each gateway derives from the
    # headless Service it resolves, as the endpoint planner configures it.
    gateway_side = VllmPool(dns=pool_service_host(POOL.namespace, vllm))
    assert gateway_side.label == f"serving/{vllm}"
    assert meta["query"] == f'sum({POOL_REQUESTS_METRIC}{{pool="{gateway_side.label}"}})'


def test_the_scaled_object_is_valid_against_kedas_schema_with_no_unknown_field() -> None:
    obj = scaled_object()
    model = ScaledObject.model_validate(obj)
    # The models ignore unknown fields: a field KEDA does not know would be dropped on the way back.
    assert model.model_dump(by_alias=True, exclude_unset=True, mode="json") == obj
    assert model.spec is not None and model.spec.triggers[0].metadata["activationThreshold"] == "0"


@pytest.mark.parametrize("broken", ["triggers", "scaleTargetRef"])
def test_kedas_schema_catches_a_missing_required_field(broken: str) -> None:
    obj = scaled_object()
    del obj["spec"][broken]
    with pytest.raises(ValueError):
        ScaledObject.model_validate(obj)


def test_the_hpa_without_keda_is_still_a_valid_kubernetes_object() -> None:
    [hpa] = [c for c in children(OperatorSettings()) if c["kind"] == "HorizontalPodAutoscaler"]
    kubernetes_validate.validate(hpa, "1.32", strict=True)


def test_settings_read_the_prometheus_for_keda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_KEDA_PROMETHEUS_URL", PROMETHEUS)
    assert OperatorSettings.from_env().keda_prometheus_url == PROMETHEUS
    monkeypatch.setenv("TANDEM_KEDA_PROMETHEUS_URL", "")
    assert OperatorSettings.from_env().keda_prometheus_url is None


def test_the_api_client_and_the_child_sync_know_the_kind() -> None:
    assert ("keda.sh/v1alpha1", "ScaledObject") in CHILD_KINDS[SERVING_POOL.kind]
    res = kube_api.resource_of("keda.sh/v1alpha1", "ScaledObject")
    path = "/apis/keda.sh/v1alpha1/namespaces/serving/scaledobjects/smollm-vllm"
    assert res.path("serving", "smollm-vllm") == path


class FakeApi:
    """The child sync's calls against objects in memory; a kind in `absent` is not installed (404)."""

    def __init__(self, absent: frozenset[str] = frozenset()) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.absent = absent
        self.deleted: list[tuple[str, str, str]] = []

    async def list(self, api_version: str, kind: str, namespace: str, labels: Any = None) -> list[Any]:
        if kind in self.absent:
            return []  # KubeApi.list: a kind that is not installed lists nothing
        return [o for k, o in self.objects.items() if k[:2] == (api_version, kind)]

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> Any:
        return self.objects.get((api_version, kind, name))

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.objects[(obj["apiVersion"], obj["kind"], obj["metadata"]["name"])] = obj
        return obj

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.deleted.append((api_version, kind, name))
        self.objects.pop((api_version, kind, name), None)


def test_the_child_sync_swaps_the_hpa_for_the_scaled_object_and_back() -> None:
    api = FakeApi()
    pool = POOL
    hpa_plan = plan_serving_pool(pool, spec(), OperatorSettings(), [], ["p-1"])
    asyncio.run(sync_children(api, pool, hpa_plan))  # type: ignore[arg-type]
    vllm, _ = pool_names(pool)
    assert ("autoscaling/v2", "HorizontalPodAutoscaler", vllm) in api.objects
    keda_plan = plan_serving_pool(pool, spec(), KEDA, [], ["p-1"])
    live, writes = asyncio.run(sync_children(api, pool, keda_plan))  # type: ignore[arg-type]
    assert ("keda.sh/v1alpha1", "ScaledObject", vllm) in live
    assert ("autoscaling/v2", "HorizontalPodAutoscaler", vllm) in api.deleted  # never both at once
    assert writes == 2  # the ScaledObject applied, the HPA pruned; nothing else changed
    _, steady = asyncio.run(sync_children(api, pool, keda_plan))  # type: ignore[arg-type]
    assert steady == 0
    asyncio.run(sync_children(api, pool, hpa_plan))  # type: ignore[arg-type]
    assert ("keda.sh/v1alpha1", "ScaledObject", vllm) in api.deleted


def test_a_cluster_without_keda_lists_no_scaled_objects_and_still_syncs() -> None:
    api = FakeApi(absent={"ScaledObject"})
    plan = plan_serving_pool(POOL, spec(), OperatorSettings(), [], ["p-1"])
    live, _ = asyncio.run(sync_children(api, POOL, plan))  # type: ignore[arg-type]
    assert not any(k[1] == "ScaledObject" for k in live)
