"""Pure planners: a resource's spec (plus resolved references and settings) in, child manifests out.

Planners do no I/O, so they are tested by comparing dicts, and applying the same plan twice changes
nothing. Children whose spec must not change in place (Jobs, RayJobs) are named after a digest of what
they run, so a spec change makes a new child and the old one is pruned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tandem.workloads.gateway.config import AdapterConfig

# Bump when the pods planners render change shape (env, volumes, security): immutable work (Jobs,
# RayJobs) is then recreated under a new name instead of being patched, which the API server refuses.
# 4: the Milvus token reaches ingest, cleanup and RAFT training as a mounted file (it was an env var).
POD_SCHEMA = "4"


@dataclass(frozen=True)
class KnowledgeBaseFacts:
    collection: str
    revision: str  # what the ingest Job indexes: status reports it as indexedRevision once it is done


@dataclass(frozen=True)
class TrainingFacts:
    version: str
    adapter_uri: str  # where the adapter of this version is written (the output store's URI)
    revision: str


@dataclass(frozen=True)
class EndpointFacts:
    url: str
    vllm_deployment: str
    gateway_deployment: str
    # Where each adapter lies inside the vLLM pods: what /v1/models must report for it to count.
    adapters: list[AdapterConfig]


@dataclass(frozen=True)
class EvaluationFacts:
    report_uri: str | None
    gateway: str


Facts = TypeVar("Facts")


@dataclass
class Plan(Generic[Facts]):
    """The children a resource should have, the work item the operator watches for completion, and the
    facts the planner derived that status reports (e.g. the collection name)."""

    facts: Facts
    children: list[dict[str, Any]] = field(default_factory=list)
    # The Job or RayJob whose completion makes the resource Ready (None for long-running kinds).
    work: dict[str, Any] | None = None
