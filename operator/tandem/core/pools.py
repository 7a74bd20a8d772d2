"""Facts about ServingPools that both platforms and the gateway's configuration share: the names an
attached endpoint's adapters are loaded under, where a pool's pods are found, and which adapters a pool
can serve at all."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tandem.api.v1alpha1.servingpool import AdapterStore
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
    store: AdapterStore | None = None  # the pool's credentials to fetch it with; None: anonymously

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


# The pin or tag at the end of an artifact URI: not part of the location a store covers.
_PIN = re.compile(r"@sha256:[0-9a-f]{64}$")
_TAG = re.compile(r":[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


def store_location(uri: str) -> tuple[str, str, tuple[str, ...]] | None:
    """(scheme, host or bucket in lower case, path segments) of an oci:// or s3:// URI or store prefix,
    without its tag or pin; None for anything else, or a path with an empty, "." or ".." segment (such a
    URI is covered by no store: it could name another location than its text suggests)."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in ("oci", "s3"):
        return None
    rest = _PIN.sub("", rest)
    authority, _, path = rest.partition("/")
    segments = tuple(path.rstrip("/").split("/")) if path.rstrip("/") else ()
    if segments and scheme == "oci":
        segments = (*segments[:-1], _TAG.sub("", segments[-1]))
    if not authority or any(s in ("", ".", "..") for s in segments):
        return None
    return scheme, authority.lower(), segments


def store_for(where: str, uri: str, namespace: str, stores: Sequence[AdapterStore]) -> AdapterStore | None:
    """The pool's store whose credentials fetch `uri` for an endpoint of `namespace`: among the stores
    whose prefix covers the URI (same scheme and host or bucket, its path segments a leading part of the
    URI's) and that list the namespace, the one with the longest prefix. None when no store covers the URI
    (fetched anonymously); PlanError AdapterStoreNotGranted when stores cover it but none lists the
    namespace: the pool's credentials are never used for a namespace its owner did not name."""
    location = store_location(uri)
    covering = []
    for store in stores:
        prefix = store_location(store.prefix)
        if location is None or prefix is None:
            continue
        if prefix[:2] == location[:2] and location[2][: len(prefix[2])] == prefix[2]:
            covering.append((len(prefix[2]), store))
    granted = [(depth, s) for depth, s in covering if namespace in s.namespaces]
    if granted:
        return max(granted, key=lambda item: item[0])[1]
    if covering:
        names = ", ".join(sorted(s.name for _, s in covering))
        raise PlanError(
            "AdapterStoreNotGranted",
            f"{where}: {uri} is under the ServingPool's adapterStores {names}, which do not list namespace "
            f"{namespace}: the pool's owner grants a store's credentials per namespace "
            "(spec.adapterStores[].namespaces)",
        )
    return None
