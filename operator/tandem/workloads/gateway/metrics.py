"""The gateway's Prometheus metrics, on a registry of its own (several gateways can live in one test)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass
class GatewayMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "tandem_gateway_requests",
            "Chat requests by route and HTTP status.",
            ["route", "code"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "tandem_gateway_stage_seconds",
            "Latency per stage: embed, search, generation (vLLM), total.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "tandem_gateway_tokens",
            "Tokens by kind (prompt, completion) and route.",
            ["kind", "route"],
            registry=r,
        )
        self.retrieval = Counter(
            "tandem_gateway_retrieval",
            "Retrieval outcomes: used, below-threshold, no-passages, off.",
            ["outcome"],
            registry=r,
        )
        self.errors = Counter(
            "tandem_gateway_errors",
            "Failed requests by cause (auth, busy, invalid, not-found, not-placed, vllm, vllm-key, "
            "vllm-timeout, milvus, timeout).",
            ["cause"],
            registry=r,
        )
        self.adapter_misses = Counter(
            "tandem_gateway_adapter_misses",
            "Requests for an adapter that no pod of the shared serving pool had loaded (answered 503), by "
            "the endpoint's adapter name.",
            ["adapter"],
            registry=r,
        )
        self.in_flight = Gauge("tandem_gateway_in_flight", "Requests being served.", registry=r)
        self.pool_requests = Gauge(
            "tandem_gateway_pool_requests",
            "Requests for the shared serving pool, by pool (<namespace>/<service>) and state: in_flight (on "
            "a pod) and waiting (held while no pod is up, a cold start); what a KEDA ScaledObject scales the "
            "pool on.",
            ["pool", "state"],
            registry=r,
        )
