"""A ServingPool scaled by KEDA, against the API emulator with a ScaledObject CRD (issue 16, item 5).

The suite's emulator is a cluster without KEDA (test_operator_serving_pool.py: the pool stalls with
KindNotInstalled). Here `emulator` is overridden for this module only: the same CRDs plus KEDA's own
ScaledObject CRD (tests/emulator/keda.py, upstream/optional/), so conftest's `kube` and `api` talk to a
cluster with KEDA.

The emulator runs no KEDA: nothing makes the HPA KEDA would make, nothing reads Prometheus, nothing scales.
What is covered is what the operator writes and whether KEDA's schema takes it; KEDA's admission webhook
is not emulated.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tandem.platform.kubernetes.api import KubeApi
from tandem.platform.kubernetes.ownership import Owner
from tandem.platform.kubernetes.planners.scaling import pool_requests_query
from tandem.platform.kubernetes.planners.servingpool import pool_names
from tandem.platform.kubernetes.reconciler import Reconciler
from tandem.platform.kubernetes.settings import OperatorSettings
from tests.emulator.keda import keda_crd
from tests.emulator.runner import run_emulator
from tests.emulator.server import Emulator
from tests.integration.conftest import _crd_documents, condition
from tests.integration.test_operator_serving_pool import POOL, POOL_NS

pytestmark = pytest.mark.integration

PROMETHEUS = "http://prometheus.monitoring.svc:9090"
SCALED_OBJECTS = f"/apis/keda.sh/v1alpha1/namespaces/{POOL_NS}/scaledobjects"


@pytest_asyncio.fixture()
async def emulator() -> AsyncIterator[Emulator]:
    """A cluster with KEDA's ScaledObject CRD (overrides conftest's `emulator` in this module only)."""
    async with run_emulator(crds=(*_crd_documents(), keda_crd())) as emu:
        yield emu


def autoscaled_pool() -> dict[str, Any]:
    pool: dict[str, Any] = copy.deepcopy(POOL)
    pool["spec"]["serving"] = {
        "autoscaling": {"minReplicas": 0, "maxReplicas": 3, "targetInFlightRequests": 4}
    }
    return pool


async def reconcile_pool(kube: KubeApi, emulator: Emulator, settings: OperatorSettings) -> Any:
    return await Reconciler(kube, settings).reconcile(emulator.get("servingpools", POOL_NS, "smollm") or {})


async def test_a_pool_scaled_by_keda_gets_a_scaled_object_the_schema_accepts_and_no_hpa(
    emulator: Emulator, kube: KubeApi
) -> None:
    emulator.create(autoscaled_pool())
    pool = emulator.get("servingpools", POOL_NS, "smollm") or {}
    owner = Owner("tandem.dev/v1alpha1", "ServingPool", POOL_NS, "smollm", pool["metadata"]["uid"])
    vllm, _ = pool_names(owner)

    # Without a Prometheus for KEDA, the pool's vLLM has an HPA: on a cluster with KEDA nothing changes.
    plain = await reconcile_pool(kube, emulator, OperatorSettings())
    assert plain.outcome.state != "Stalled", plain.outcome
    assert emulator.get("horizontalpodautoscalers", POOL_NS, vllm) is not None
    assert emulator.list_objects("scaledobjects", POOL_NS) == []

    # With one, the ScaledObject replaces the HPA.
    keda = OperatorSettings(keda_prometheus_url=PROMETHEUS)
    result = await reconcile_pool(kube, emulator, keda)
    assert result.outcome.state != "Stalled" and result.outcome.reason != "KindNotInstalled", result.outcome
    stored_pool = emulator.get("servingpools", POOL_NS, "smollm")
    assert condition(stored_pool, "Stalled").get("status") != "True", stored_pool
    assert emulator.list_objects("autoscaling/v2/horizontalpodautoscalers", POOL_NS) == []

    [scaled] = emulator.list_objects("scaledobjects", POOL_NS)
    assert scaled["metadata"]["name"] == vllm
    [ref] = scaled["metadata"]["ownerReferences"]
    assert (ref["apiVersion"], ref["kind"], ref["name"], ref["uid"]) == (
        "tandem.dev/v1alpha1",
        "ServingPool",
        "smollm",
        pool["metadata"]["uid"],
    )
    assert ref.get("controller") is True
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": vllm}
    assert emulator.get("deployments", POOL_NS, vllm) is not None  # the pool's vLLM, which it scales
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 3)
    [trigger] = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"] == {
        "serverAddress": PROMETHEUS,
        "query": 'sum(tandem_gateway_pool_requests{pool="serving/smollm-vllm"})',
        "threshold": "4",
        "activationThreshold": "0",
    }
    assert trigger["metadata"]["query"] == pool_requests_query(owner, vllm)
    assert scaled.get("status") is None  # no KEDA runs here to write one

    # The schema kept every field the operator sent: the next pass finds it as planned and writes nothing
    # (a field the schema pruned would be written again at every pass).
    emulator.reset_write_counts()
    again = await reconcile_pool(kube, emulator, keda)
    assert again.outcome.state != "Stalled", again.outcome
    assert emulator.writes("scaledobjects") == 0
    assert emulator.writes("horizontalpodautoscalers") == 0

    # And back: without KEDA the HPA returns and the ScaledObject goes.
    await reconcile_pool(kube, emulator, OperatorSettings())
    assert emulator.list_objects("scaledobjects", POOL_NS) == []
    assert emulator.get("horizontalpodautoscalers", POOL_NS, vllm) is not None


def valid_scaled_object(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": POOL_NS},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "smollm-vllm"},
            "minReplicaCount": 0,
            "maxReplicaCount": 3,
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {"serverAddress": PROMETHEUS, "query": "sum(x)", "threshold": "4"},
                }
            ],
        },
    }


def _drop(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda spec: spec.pop(key)


@pytest.mark.parametrize(
    ("break_it", "field", "says"),
    [
        (_drop("scaleTargetRef"), "spec.scaleTargetRef", "spec.scaleTargetRef: Required value"),
        (_drop("triggers"), "spec.triggers", "spec.triggers: Required value"),
        (
            lambda spec: spec.update(minReplicaCount="none"),
            "spec.minReplicaCount",
            'spec.minReplicaCount in body must be of type integer: "string"',
        ),
        (
            lambda spec: spec["triggers"][0]["metadata"].update(threshold=4),
            "spec.triggers[0].metadata[threshold]",
            "must be of type string",
        ),
    ],
    ids=["no-scale-target", "no-triggers", "string-replicas", "number-in-trigger-metadata"],
)
async def test_the_emulator_refuses_a_scaled_object_keda_would_refuse(
    emulator: Emulator,
    api: httpx.AsyncClient,
    break_it: Callable[[dict[str, Any]], Any],
    field: str,
    says: str,
) -> None:
    """KEDA's schema is enforced: a hostile or careless write through the API is a 422 naming the
    field, and nothing is stored; the same object whole is accepted."""
    body = valid_scaled_object("hostile")
    break_it(body["spec"])
    refused = await api.post(SCALED_OBJECTS, json=body)
    assert refused.status_code == 422, refused.text
    status = refused.json()
    assert status["reason"] == "Invalid"
    # The API server adds that the CRD's CEL rule was not checked on an invalid object ("<nil>").
    assert [c["field"] for c in status["details"]["causes"] if c["field"] != "<nil>"] == [field]
    assert status["message"].startswith('ScaledObject.keda.sh "hostile" is invalid: ')
    assert says in status["message"]
    assert emulator.get("scaledobjects", POOL_NS, "hostile") is None
    accepted = await api.post(SCALED_OBJECTS, json=valid_scaled_object("careful"))
    assert accepted.status_code == 201, accepted.text


async def test_unknown_scaled_object_fields_are_refused_when_strict_and_pruned_otherwise(
    emulator: Emulator, api: httpx.AsyncClient
) -> None:
    body = valid_scaled_object("typo")
    body["spec"]["maxReplicas"] = 9  # an HPA's name for maxReplicaCount
    strict = await api.post(SCALED_OBJECTS, params={"fieldValidation": "Strict"}, json=body)
    assert strict.status_code == 400, strict.text
    assert 'unknown field "spec.maxReplicas"' in strict.json()["message"]
    assert emulator.get("scaledobjects", POOL_NS, "typo") is None
    pruned = await api.post(SCALED_OBJECTS, json=body)
    assert pruned.status_code == 201, pruned.text
    assert pruned.headers.get("warning") == r'299 - "unknown field \"spec.maxReplicas\""'
    stored = emulator.get("scaledobjects", POOL_NS, "typo") or {}
    assert "maxReplicas" not in stored["spec"] and stored["spec"]["maxReplicaCount"] == 3
