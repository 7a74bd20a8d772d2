"""Operator settings, read once from the environment (the Helm chart sets them)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

# The one vLLM version: the cluster's default image (vllm/vllm-openai:v<this>), the CPU build that
# scripts/install-vllm.sh installs for the tests and `tandem up` (it reads this line), and the chart's
# workloads.vllmImage.tag (tests/unit/test_images.py holds them together).
VLLM_VERSION = "0.32.0"


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default) or default


@dataclass(frozen=True)
class OperatorSettings:
    """Images and defaults the planners put into child objects."""

    worker_image: str = "ghcr.io/tandem-dev/tandem-worker:0.1.0"
    gateway_image: str = "ghcr.io/tandem-dev/tandem-gateway:0.1.0"
    vllm_image: str = f"vllm/vllm-openai:v{VLLM_VERSION}"
    ray_version: str = "2.60.0"
    default_milvus_uri: str = "http://milvus.milvus.svc:19530"
    image_pull_policy: str = "IfNotPresent"
    # How often every resource is re-reconciled even without events (drift repair).
    resync_seconds: float = 60.0
    namespaces: tuple[str, ...] = field(default=())  # empty: the whole cluster
    # Port of vLLM in its pods (its Service, the gateway's peer).
    vllm_port: int = 8000
    # The gateway pods' internal port (gateway.config.METRICS_PORT, which the clients' Service does not
    # expose), where the operator reads /healthz/dependencies to report a KnowledgeBase its routes cannot
    # reach.
    gateway_port: int = 9090
    # The adapter-sync sidecar's status port in vLLM pods (GET /v1/models: the adapters vLLM has loaded),
    # where the operator reads them: vLLM's own port requires its key, which the operator does not hold.
    adapter_status_port: int = 9091
    # The operator's own namespace: the only one whose operator pods a vLLM NetworkPolicy admits.
    operator_namespace: str = "tandem-system"
    # The Prometheus that scrapes the gateways (e.g. http://prometheus.monitoring.svc:9090): set, a pool's
    # `serving.autoscaling` makes a KEDA ScaledObject on the gateways' pending requests (which can scale the
    # pool to zero and wake it on the first request); None: an HPA, as without KEDA.
    keda_prometheus_url: str | None = None

    @classmethod
    def from_env(cls) -> OperatorSettings:
        d = cls()
        namespaces = tuple(n for n in _env("TANDEM_NAMESPACES", "").split(",") if n)
        return cls(
            worker_image=_env("TANDEM_WORKER_IMAGE", d.worker_image),
            gateway_image=_env("TANDEM_GATEWAY_IMAGE", d.gateway_image),
            vllm_image=_env("TANDEM_VLLM_IMAGE", d.vllm_image),
            ray_version=_env("TANDEM_RAY_VERSION", d.ray_version),
            default_milvus_uri=_env("TANDEM_DEFAULT_MILVUS_URI", d.default_milvus_uri),
            image_pull_policy=_env("TANDEM_IMAGE_PULL_POLICY", d.image_pull_policy),
            resync_seconds=float(_env("TANDEM_RESYNC_SECONDS", str(d.resync_seconds))),
            namespaces=namespaces,
            vllm_port=int(_env("TANDEM_VLLM_PORT", str(d.vllm_port))),
            gateway_port=int(_env("TANDEM_GATEWAY_PORT", str(d.gateway_port))),
            adapter_status_port=int(_env("TANDEM_ADAPTER_STATUS_PORT", str(d.adapter_status_port))),
            operator_namespace=_env("TANDEM_OPERATOR_NAMESPACE", d.operator_namespace),
            keda_prometheus_url=os.environ.get("TANDEM_KEDA_PROMETHEUS_URL") or None,
        )
