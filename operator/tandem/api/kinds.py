"""The registry of Tandem kinds: names, models and table columns, in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel

from .v1alpha1 import (
    GROUP,
    VERSION,
    AdapterTrainingSpec,
    AdapterTrainingStatus,
    EvaluationSpec,
    EvaluationStatus,
    HybridEndpointSpec,
    HybridEndpointStatus,
    KnowledgeBaseSpec,
    KnowledgeBaseStatus,
    ReferenceGrantSpec,
    ServingPoolSpec,
    ServingPoolStatus,
)
from .v1alpha1.common import CRONJOB_NAME_MAX, DNS1035_LABEL, LABEL_VALUE_MAX, CelRule

CATEGORY = "tandem"
READY_COLUMN: dict[str, object] = {
    "name": "Ready",
    "type": "string",
    "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    "description": "Whether the resource is Ready",
}
STATUS_COLUMN: dict[str, object] = {
    "name": "Status",
    "type": "string",
    "jsonPath": '.status.conditions[?(@.type=="Ready")].message',
    "priority": 1,
    "description": "What the Ready condition says",
}
AGE_COLUMN: dict[str, object] = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


@dataclass(frozen=True)
class Kind:
    """One custom resource kind of group tandem.dev."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    description: str
    spec: type[BaseModel]
    status: type[BaseModel] | None
    columns: tuple[dict[str, object], ...] = field(default=())
    # The schema of metadata.name beyond the API server's own rule (an RFC 1123 subdomain): what the names
    # of the children made from it need (their labels carry it: at most 63 characters).
    name: Mapping[str, object] = field(default_factory=lambda: dict(_CHILD_LABELS))
    # Rules on the whole object (CEL, `self` is the object: self.metadata.name, self.spec...).
    rules: tuple[CelRule, ...] = ()
    # The scale subresource (specReplicasPath, statusReplicasPath, labelSelectorPath), if the kind has one.
    scale: Mapping[str, str] | None = None

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def group(self) -> str:
        return GROUP

    @property
    def version(self) -> str:
        return VERSION

    @property
    def api_version(self) -> str:
        return f"{GROUP}/{VERSION}"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


_CHILD_LABELS: dict[str, object] = {
    "maxLength": LABEL_VALUE_MAX,
    "description": (
        f"At most {LABEL_VALUE_MAX} characters: the operator's children carry it as a label value."
    ),
}
_REFRESH_NAME_MAX = CRONJOB_NAME_MAX - len("-refresh")


def _column(name: str, type_: str, path: str, description: str, priority: int = 0) -> dict[str, object]:
    col: dict[str, object] = {"name": name, "type": type_, "jsonPath": path, "description": description}
    if priority:
        col["priority"] = priority
    return col


KNOWLEDGE_BASE = Kind(
    kind="KnowledgeBase",
    plural="knowledgebases",
    short_names=("kb",),
    description=(
        "KnowledgeBase indexes documents from its sources into a Milvus collection, incrementally, with "
        "per-source access labels, for HybridEndpoints to retrieve from."
    ),
    spec=KnowledgeBaseSpec,
    status=KnowledgeBaseStatus,
    rules=(
        CelRule(
            # (a name over 63 characters is reported by its maxLength alone)
            f"!has(self.spec.refresh) || !has(self.spec.refresh.schedule) || "
            f"size(self.metadata.name) <= {_REFRESH_NAME_MAX} || "
            f"size(self.metadata.name) > {LABEL_VALUE_MAX}",
            f"with refresh.schedule set, the name must be at most {_REFRESH_NAME_MAX} characters: the "
            f"CronJob <name>-refresh must be at most {CRONJOB_NAME_MAX}",
            ".metadata.name",
            message_expression=(
                f"'is %d characters; with refresh.schedule set, at most {_REFRESH_NAME_MAX} (the CronJob "
                f"<name>-refresh must be at most {CRONJOB_NAME_MAX})'.format([size(self.metadata.name)])"
            ),
        ),
    ),
    columns=(
        READY_COLUMN,
        _column("Phase", "string", ".status.phase", "Pending, Indexing, Ready, Failed or Terminating"),
        _column("Documents", "integer", ".status.documents", "Documents indexed"),
        _column("Chunks", "integer", ".status.chunks", "Chunks in the collection"),
        _column("Revision", "string", ".status.indexedRevision", "Indexed revision", priority=1),
        STATUS_COLUMN,
        AGE_COLUMN,
    ),
)

ADAPTER_TRAINING = Kind(
    kind="AdapterTraining",
    plural="adaptertrainings",
    short_names=("at",),
    description=(
        "AdapterTraining fine-tunes a base model with LoRA or QLoRA (PEFT on Ray) and produces a versioned "
        "adapter, optionally from RAFT examples drawn from a KnowledgeBase."
    ),
    spec=AdapterTrainingSpec,
    status=AdapterTrainingStatus,
    columns=(
        READY_COLUMN,
        _column("Phase", "string", ".status.phase", "Pending, Running, Succeeded, Failed or Terminating"),
        _column("Step", "integer", ".status.step", "Optimiser steps done"),
        _column("Of", "integer", ".status.totalSteps", "Steps planned", priority=1),
        _column("Loss", "number", ".status.loss", "Last training loss"),
        _column("ETA", "integer", ".status.etaSeconds", "Estimated seconds to finish", priority=1),
        _column("Version", "string", ".status.adapterVersion", "Adapter version"),
        STATUS_COLUMN,
        AGE_COLUMN,
    ),
)

HYBRID_ENDPOINT = Kind(
    kind="HybridEndpoint",
    plural="hybridendpoints",
    short_names=("he",),
    description=(
        "HybridEndpoint serves a base model with LoRA adapters on vLLM behind a gateway that retrieves "
        "from KnowledgeBases and answers on an OpenAI-compatible API with citations."
    ),
    spec=HybridEndpointSpec,
    status=HybridEndpointStatus,
    name={
        "maxLength": LABEL_VALUE_MAX,
        "pattern": DNS1035_LABEL,
        "description": (
            f"A DNS-1035 label (a letter first) of at most {LABEL_VALUE_MAX} characters: the gateway Service "
            "is named after the endpoint."
        ),
    },
    # `kubectl scale he NAME --replicas=2` and a HorizontalPodAutoscaler aimed at the endpoint set the
    # vLLM replicas; with spec.serving.autoscaling set, the spec's rule (replicas or autoscaling, not both)
    # refuses that, since the operator's own autoscaler scales the vLLM Deployment then.
    scale={
        "specReplicasPath": ".spec.serving.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    },
    columns=(
        # READY as a Deployment shows it (ready/desired vLLM pods); Phase says whether it is Ready.
        _column("Ready", "string", ".status.ready", "vLLM pods ready of those desired, as 1/3"),
        _column("Phase", "string", ".status.phase", "Pending, Progressing, Ready, Failed or Terminating"),
        _column("Gateway", "integer", ".status.gatewayReadyReplicas", "Gateway pods ready", priority=1),
        _column("URL", "string", ".status.url", "OpenAI-compatible URL", priority=1),
        STATUS_COLUMN,
        AGE_COLUMN,
    ),
)

EVALUATION = Kind(
    kind="Evaluation",
    plural="evaluations",
    # Not "ev": that is the core Events' short name, and `kubectl get ev` would then warn and list Events.
    short_names=("teval",),
    description=(
        "Evaluation compares a HybridEndpoint's routes (prompt only, RAG, adapter, hybrid) on a question "
        "set and writes one scorecard: correctness, citations, groundedness, refusals, latency, tokens "
        "and the cost of updating a fact, with a recommendation derived from the numbers."
    ),
    spec=EvaluationSpec,
    status=EvaluationStatus,
    columns=(
        READY_COLUMN,
        _column("Phase", "string", ".status.phase", "Pending, Running, Succeeded, Failed or Terminating"),
        _column("Questions", "integer", ".status.questions", "Questions in the set"),
        _column("Answered", "integer", ".status.answered", "Answers received, all strategies"),
        _column("Recommendation", "string", ".status.recommendation", "What the numbers say", priority=1),
        STATUS_COLUMN,
        AGE_COLUMN,
    ),
)

REFERENCE_GRANT = Kind(
    kind="ReferenceGrant",
    plural="referencegrants",
    short_names=("trg",),
    description=(
        "ReferenceGrant allows resources in other namespaces to refer to Tandem objects in this namespace "
        "(a namespace is a tenant boundary; references across it must be granted by the target)."
    ),
    spec=ReferenceGrantSpec,
    status=None,
    name={},  # no children
    columns=(AGE_COLUMN,),
)

SERVING_POOL = Kind(
    kind="ServingPool",
    plural="servingpools",
    short_names=("pool",),
    description=(
        "ServingPool runs one vLLM fleet for a base model that the HybridEndpoints of many namespaces "
        "share: each keeps its own gateway, tenants and knowledge bases, and its adapters are placed on "
        "the pool's pods and routed to by affinity."
    ),
    spec=ServingPoolSpec,
    status=ServingPoolStatus,
    name={
        "maxLength": LABEL_VALUE_MAX,
        "pattern": DNS1035_LABEL,
        "description": (
            f"A DNS-1035 label (a letter first) of at most {LABEL_VALUE_MAX} characters: the pool's "
            "headless Service is named after it."
        ),
    },
    columns=(
        _column("Ready", "string", ".status.ready", "vLLM pods ready of those desired, as 1/3"),
        _column("Phase", "string", ".status.phase", "Pending, Progressing, Ready, Failed or Terminating"),
        _column("Endpoints", "integer", ".status.endpointCount", "Attached HybridEndpoints"),
        STATUS_COLUMN,
        AGE_COLUMN,
    ),
)

ALL_KINDS: tuple[Kind, ...] = (
    KNOWLEDGE_BASE,
    ADAPTER_TRAINING,
    HYBRID_ENDPOINT,
    EVALUATION,
    REFERENCE_GRANT,
    SERVING_POOL,
)
RECONCILED_KINDS: tuple[Kind, ...] = (
    KNOWLEDGE_BASE,
    ADAPTER_TRAINING,
    HYBRID_ENDPOINT,
    EVALUATION,
    SERVING_POOL,
)


def by_kind(kind: str) -> Kind:
    for k in ALL_KINDS:
        if k.kind == kind:
            return k
    raise KeyError(f"unknown Tandem kind {kind!r}")
