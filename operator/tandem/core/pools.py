"""Facts about ServingPools that both platforms and the gateway's configuration share: the names an
attached endpoint's adapters are loaded under, where a pool's pods are found, and which adapters a pool
can serve at all."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tandem.workloads.gateway.config import AdapterConfig

from .errors import PlanError
from .placement import Placement
from .references import ResolvedAdapter


def served_name(namespace: str, endpoint: str, adapter: str) -> str:
    """The adapter's name inside the pool's vLLM pods: unique in the pool, so two endpoints may both call
    an adapter `support`. Callers never see it: each gateway maps its own endpoint's names to these, and
    only those, so a tenant cannot reach another endpoint's adapter by guessing this name."""
    return f"{namespace}/{endpoint}/{adapter}"


def pool_service_host(namespace: str, service: str) -> str:
    """The DNS name of the pool's headless Service: one address per ready vLLM pod."""
    return f"{service}.{namespace}.svc.cluster.local"


@dataclass(frozen=True)
class PooledAdapter:
    """One attached endpoint's adapter, as the pool places and loads it."""

    endpoint: str  # namespace/name
    adapter: str  # its name in the endpoint
    config: AdapterConfig  # name = the served name; path = where the pool pod's sidecar puts it
    rank: int

    def for_gateway(self) -> AdapterConfig:
        """The adapter as its endpoint's gateway knows it: by the endpoint's name, sent as the pool's."""
        return AdapterConfig(
            name=self.adapter,
            served_name=self.config.name,
            path=self.config.path,
            version=self.config.version,
            digest=self.config.digest,
        )


@dataclass(frozen=True)
class AttachedEndpoint:
    namespace: str
    name: str
    # SHA-256 hex of the endpoint's gateway key (tandem.core.vllm_guard accepts it by digest); None while
    # the endpoint has not recorded one (its gateway is then refused by the pool, and its status says so).
    key_digest: str | None
    adapters: list[PooledAdapter] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"


def check_portable(where: str, adapter: ResolvedAdapter) -> None:
    """Refuse an adapter a pool's pods could not fetch and verify. They load adapters by digest from an
    artifact store (oci://, s3://): they cannot mount a claim of each team's namespace (a claim of the
    pool's own namespace would work, and would silently break the day the endpoint moves: refused too)."""
    if not adapter.remote:
        scheme = adapter.uri.partition("://")[0]
        raise PlanError(
            "AdapterNotPortable",
            f"{where}: {adapter.uri}: a ServingPool's pods load adapters from an artifact store by digest "
            f"(oci:// or s3://), not {scheme}://; publish it (AdapterTraining spec.output.publish)",
        )
    if not adapter.digest:
        raise PlanError(
            "AdapterDigestMissing",
            f"{where}: {adapter.uri}: no adapter digest to verify it by; a pool loads only verified adapters",
        )


def placement_of(status: dict[str, Any]) -> Placement | None:
    """The placement the pool's status last recorded (each adapter's `placed` pods): what the next
    placement keeps where it can, so that a reconcile moves no adapter without a reason."""
    entries = status.get("adapters") or []
    if not entries:
        return None
    by_adapter = {
        e["servedName"]: tuple(sorted(e.get("placed") or [])) for e in entries if e.get("servedName")
    }
    by_pod: dict[str, list[str]] = {}
    for adapter, pods in by_adapter.items():
        for pod in pods:
            by_pod.setdefault(pod, []).append(adapter)
    return Placement(
        by_pod={pod: tuple(sorted(adapters)) for pod, adapters in by_pod.items()},
        by_adapter=by_adapter,
        unplaced={},
    )
