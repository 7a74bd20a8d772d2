"""ServingPool: one vLLM fleet for a base model, shared by the HybridEndpoints of many namespaces.

Each attached endpoint keeps its own gateway, tenants, keys, knowledge bases and routes; the pool runs
the vLLM pods and places every attached endpoint's adapters on `placement.adapterReplicas` of them
(rendezvous hashing: stable when pods come and go, within each pod's `maxCpuLoras`). An endpoint in
another namespace attaches only if a ReferenceGrant in the pool's namespace allows it.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from .adaptertraining import ModelSource
from .common import (
    DNS_LABEL,
    CelRule,
    CommonStatus,
    LocalObjectReference,
    StatusModel,
    TandemModel,
    nested,
)
from .hybridendpoint import Serving


class PoolServing(Serving):
    """The pool's vLLM pods."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        *Serving.cel_rules,
        CelRule(
            "!has(self.maxLoras) || self.maxCpuLoras >= self.maxLoras",
            "maxCpuLoras must be at least maxLoras (vLLM refuses to start otherwise)",
            ".maxCpuLoras",
        ),
    )

    max_cpu_loras: int = Field(
        default=8,
        ge=1,
        le=1024,
        description=(
            "Adapters each pod holds (vLLM's --max-cpu-loras); the placement never assigns a pod more. "
            "Default 8."
        ),
    )

    max_lora_rank: Literal[8, 16, 32, 64, 128, 256, 320, 512] = Field(
        default=16,
        description=(
            "Largest LoRA rank the pods serve (vLLM's --max-lora-rank, one of its sizes); an adapter of a "
            "larger rank is refused. Fixed per pool: changing it restarts every pod. Default 16."
        ),
    )


class Placement(TandemModel):
    """Where adapters are loaded."""

    adapter_replicas: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description=(
            "Pods each adapter is loaded on (k); every pod if omitted. An adapter that does not fit is "
            "reported in status.unplaced, never silently dropped."
        ),
    )


# An adapter store location: oci://HOST[:PORT][/REPO-PATH] or s3://BUCKET[/KEY-PATH], path segments of
# registry and key characters that never are "." or ".." (a segment boundary is what the pool owner grants).
STORE_PREFIX = (
    r"^(oci|s3)://[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*/?$"
)


class AdapterStore(TandemModel):
    """Credentials the pool's pods use to fetch some namespaces' adapters from one store location.

    The pool's pods cannot mount a team's Secret, and credentials of the pool's own would let any attached
    endpoint fetch whatever they can read (the pool acting for a team that may not). So the pool's owner
    says which namespaces may use which credentials, for which location: an adapter is fetched with a
    store's Secret only when its URI lies under the store's prefix (whole path segments) and its endpoint's
    namespace is listed; an adapter under a prefix whose store does not list its namespace is refused.
    """

    name: str = Field(
        min_length=1,
        max_length=48,  # its volume in the pod is store-<name>, a DNS label
        pattern=DNS_LABEL,
        description="The store's name.",
    )
    prefix: str = Field(
        max_length=512,
        pattern=STORE_PREFIX,
        description=(
            "Where the adapters are: oci://HOST[:PORT]/REPO-PATH or s3://BUCKET/KEY-PATH. It covers the "
            "URIs below it by whole path segments (oci://reg/team-a covers oci://reg/team-a/x, not "
            "oci://reg/team-ab/x); no '.' or '..' segment."
        ),
    )
    credentials_secret_ref: LocalObjectReference = Field(
        description=(
            "Secret of the pool's namespace with the store's credentials (keys username and password, or "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, optionally endpoint_url and region), mounted in "
            "the pool pods' adapter-sync container only."
        )
    )
    namespaces: list[Annotated[str, Field(max_length=63, pattern=DNS_LABEL)]] = Field(
        min_length=1,
        max_length=256,
        description="Namespaces whose endpoints' adapters may be fetched with these credentials.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    insecure: bool = Field(
        default=False,
        description="Fetch over plain HTTP from a store that is not on loopback (an in-cluster registry).",
    )


class ServingPoolSpec(TandemModel):
    """The base model, the vLLM fleet and how adapters are placed on it."""

    base_model: ModelSource = Field(description="The base model every pod of the pool serves.")
    serving: PoolServing = nested(PoolServing, "The vLLM pods.")
    placement: Placement = nested(Placement, "How adapters are spread over the pods.")
    adapter_stores: list[AdapterStore] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "Credentials for private adapter stores, each granted to some namespaces for one location. "
            "Adapters under no store's prefix are fetched anonymously."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


class PooledAdapterStatus(StatusModel):
    """One attached endpoint's adapter: where it is placed and where it is loaded, as observed."""

    endpoint: str = Field(description="The HybridEndpoint, as namespace/name.")
    adapter: str = Field(description="The adapter's name in that endpoint.")
    served_name: str = Field(description="Its name in the pool's vLLM pods (unique in the pool).")
    placed: list[str] = Field(default_factory=list, description="Pods the placement assigns it to.")
    loaded: list[str] = Field(
        default_factory=list, description="Ready pods whose vLLM lists it now (never more than observed)."
    )
    errors: list[str] = Field(
        default_factory=list,
        description=(
            "Why it is not loaded on a pod it is placed on, as that pod's adapter sync last said (pod: "
            "error); the sync tries again with backoff."
        ),
    )


class ServingPoolStatus(CommonStatus):
    """The fleet as observed."""

    phase: Literal["Pending", "Progressing", "Ready", "Failed", "Terminating"] | None = Field(
        default=None, description="Summary of the conditions: Failed whenever Stalled is True."
    )
    replicas: int | None = Field(default=None, description="vLLM pods.")
    ready_replicas: int | None = Field(default=None, description="vLLM pods ready.")
    ready: str | None = Field(default=None, description="vLLM pods ready of those desired, as 1/3.")
    endpoint_count: int | None = Field(default=None, description="Attached HybridEndpoints.")
    endpoints: list[str] = Field(
        default_factory=list, description="Attached HybridEndpoints (namespace/name) the pool serves."
    )
    refused: list[str] = Field(
        default_factory=list,
        description="HybridEndpoints that name the pool without a ReferenceGrant, with the reason.",
    )
    adapters: list[PooledAdapterStatus] = Field(default_factory=list, description="Per-adapter placement.")
    unplaced: list[str] = Field(
        default_factory=list, description="Adapters placed on fewer pods than asked, and why."
    )
