"""A ServingPool's autoscaler: a KEDA ScaledObject when the operator is given a Prometheus for KEDA
(settings.keda_prometheus_url), else the HPA every vLLM Deployment gets (hybridendpoint.autoscaler).

KEDA scales the pool's vLLM Deployment on what its attached gateways report in
`tandem_gateway_pool_requests{pool="<namespace>/<service>"}`: the requests each holds on a pod (`in_flight`)
plus those held while no pod is up (`waiting`, see the gateway's `vllmPool.coldStartSeconds`). Unlike an
HPA, which needs the alpha HPAScaleToZero gate for `minReplicas: 0` and then has no metric to wake on (the
pods that would report it are gone), KEDA scales to zero by itself and back to one as soon as the sum is
above its activation threshold (0: one waiting request wakes the fleet).
"""

from __future__ import annotations

from typing import Any

from tandem.api.v1alpha1.hybridendpoint import Autoscaling
from tandem.core.pools import pool_service_host
from tandem.workloads.gateway.config import pool_label_of_host

from ..ownership import Owner
from ..settings import OperatorSettings
from .hybridendpoint import autoscaler

KEDA_API_VERSION = "keda.sh/v1alpha1"
# The gateways' gauge (tandem.workloads.gateway.metrics): requests by pool and state (in_flight, waiting).
POOL_REQUESTS_METRIC = "tandem_gateway_pool_requests"


def pool_requests_query(owner: Owner, service: str) -> str:
    """The PromQL of the pool's pending requests, summed over every gateway attached to it; the `pool`
    label is what each gateway derives from the headless Service it resolves (VllmPool.label)."""
    label = pool_label_of_host(pool_service_host(owner.namespace, service))
    return f'sum({POOL_REQUESTS_METRIC}{{pool="{label}"}})'


def scaled_object(
    owner: Owner, auto: Autoscaling, deployment: str, service: str, prometheus_url: str
) -> dict[str, Any]:
    """KEDA's ScaledObject of the pool's vLLM Deployment: replicas = pending requests / the target per
    replica, between minReplicas (0 allowed) and maxReplicas, and active as soon as one is pending."""
    return {
        "apiVersion": KEDA_API_VERSION,
        "kind": "ScaledObject",
        "metadata": owner.metadata(deployment, "vllm"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
            "minReplicaCount": auto.min_replicas,
            "maxReplicaCount": auto.max_replicas,
            "triggers": [
                {
                    "type": "prometheus",
                    "metricType": "AverageValue",
                    "metadata": {
                        "serverAddress": prometheus_url,
                        "query": pool_requests_query(owner, service),
                        "threshold": str(auto.target_in_flight_requests),
                        "activationThreshold": "0",
                    },
                }
            ],
        },
    }


def pool_autoscaler(
    owner: Owner, auto: Autoscaling | None, settings: OperatorSettings, deployment: str, service: str
) -> dict[str, Any] | None:
    """The pool's ScaledObject with KEDA, its HPA without; None when it does not autoscale."""
    if auto is None:
        return None
    if settings.keda_prometheus_url:
        return scaled_object(owner, auto, deployment, service, settings.keda_prometheus_url)
    return autoscaler(owner, auto, deployment)
