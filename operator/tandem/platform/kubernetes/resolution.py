"""What a resource's references resolve to: the objects they name, checked against ReferenceGrants.

A reference that cannot be followed now (missing, not permitted, not Ready yet) raises `Blocked` with
the outcome the referring resource's status reports. Knowledge bases resolve as both platforms resolve
them (`tandem.core.references`): from the KnowledgeBase's spec and status, without running its planner.
"""

from __future__ import annotations

from typing import Any

from tandem.api.kinds import (
    ADAPTER_TRAINING,
    EVALUATION,
    HYBRID_ENDPOINT,
    KNOWLEDGE_BASE,
    REFERENCE_GRANT,
    Kind,
)
from tandem.api.v1alpha1 import (
    AdapterTrainingSpec,
    CrossNamespaceReference,
    EvaluationSpec,
    HybridEndpointSpec,
    KnowledgeBaseSpec,
)
from tandem.core.references import (
    ResolvedAdapter,
    ResolvedKnowledgeBase,
    resolve_knowledge_base,
    trained_adapter,
    trained_location,
    uri_adapter,
)

from .api import KubeApi
from .blocked import Blocked
from .conditions import READY, Outcome, condition, is_ready
from .ownership import Owner
from .planners.evaluation import ResolvedEndpoint, ResolvedTraining
from .references import reference_allowed


class Resolver:
    """Follows references through the API server; `default_milvus_uri` is where a KnowledgeBase without
    its own Milvus URI keeps its collection."""

    def __init__(self, api: KubeApi, default_milvus_uri: str) -> None:
        self.api = api
        self.default_milvus_uri = default_milvus_uri

    async def resolve(
        self, referrer: Kind, owner: Owner, target: Kind, ref: CrossNamespaceReference
    ) -> dict[str, Any]:
        """The referenced object; Blocked when it does not exist or no grant allows the reference."""
        obj = await self.lookup(referrer, owner, target, ref)
        if obj is None:
            where = f"{target.kind} {ref.namespace or owner.namespace}/{ref.name}"
            raise Blocked(Outcome.stalled(f"{target.kind}NotFound", f"{where} does not exist"))
        return obj

    async def lookup(
        self, referrer: Kind, owner: Owner, target: Kind, ref: CrossNamespaceReference
    ) -> dict[str, Any] | None:
        """The referenced object (None when it does not exist); Blocked when no grant allows the reference."""
        namespace = ref.namespace or owner.namespace
        where = f"{target.kind} {namespace}/{ref.name}"
        if namespace != owner.namespace:
            grants = await self.api.list(REFERENCE_GRANT.api_version, REFERENCE_GRANT.kind, namespace)
            if not reference_allowed(
                from_kind=referrer.kind,
                from_namespace=owner.namespace,
                to_kind=target.kind,
                to_namespace=namespace,
                to_name=ref.name,
                grants=grants,
            ):
                raise Blocked(
                    Outcome.stalled(
                        "ReferenceNotPermitted",
                        f"{where} is in another namespace and no ReferenceGrant there allows "
                        f"{referrer.kind}s from namespace {owner.namespace}",
                    )
                )
        return await self.api.get(target.api_version, target.kind, namespace, ref.name)

    async def endpoint(self, owner: Owner, spec: EvaluationSpec) -> ResolvedEndpoint:
        """The endpoint an Evaluation asks, once it is Ready, with what its references resolve to."""
        ref = spec.endpoint_ref
        where = f"HybridEndpoint {ref.namespace or owner.namespace}/{ref.name}"
        endpoint = await self.lookup(EVALUATION, owner, HYBRID_ENDPOINT, ref)
        # Both are waits, not failures: manifests applied together create the endpoint after the
        # Evaluation, and an endpoint takes minutes to become Ready. The resync timer looks again.
        if endpoint is None:
            raise Blocked(Outcome.progressing("WaitingForEndpoint", f"{where} does not exist yet"))
        if not is_ready(endpoint):
            said = (condition(endpoint.get("status"), READY) or {}).get("message") or "no status yet"
            raise Blocked(Outcome.progressing("WaitingForEndpoint", f"{where} is not Ready yet: {said}"))
        he_spec = HybridEndpointSpec.model_validate(endpoint.get("spec") or {})
        he_owner = Owner.from_body(endpoint)
        trainings: dict[str, ResolvedTraining] = {}
        for adapter in he_spec.adapters:
            if adapter.adapter_training_ref is None:
                continue
            # Resolved as the endpoint resolves it (its namespace, its grants); a training gone since
            # only makes the retrain figure unknown.
            training = await self.lookup(
                HYBRID_ENDPOINT, he_owner, ADAPTER_TRAINING, adapter.adapter_training_ref
            )
            if training is None:
                continue
            at_status = training.get("status") or {}
            trainings[adapter.name] = ResolvedTraining(
                raft=bool((training.get("spec") or {}).get("raft")),
                start_time=at_status.get("startTime"),
                completion_time=at_status.get("completionTime"),
            )
        kbs = [
            await self.knowledge_base(HYBRID_ENDPOINT, he_owner, kb_ref, False)
            for kb_ref in he_spec.knowledge_bases
        ]
        return ResolvedEndpoint(he_owner.namespace, he_owner.name, he_spec, trainings, kbs)

    async def knowledge_base(
        self, referrer: Kind, owner: Owner, ref: CrossNamespaceReference, must_be_ready: bool
    ) -> ResolvedKnowledgeBase:
        """The collection a KnowledgeBase reference reads (at the revision its status says is indexed)."""
        kb = await self.resolve(referrer, owner, KNOWLEDGE_BASE, ref)
        status = kb.get("status") or {}
        if must_be_ready and not is_ready(kb):
            raise Blocked(
                Outcome.progressing(
                    "WaitingForKnowledgeBase",
                    f"KnowledgeBase {kb['metadata']['namespace']}/{ref.name} is not Ready yet",
                )
            )
        spec = KnowledgeBaseSpec.model_validate(kb.get("spec") or {})
        return resolve_knowledge_base(
            kb["metadata"]["namespace"],
            ref.name,
            spec,
            default_milvus_uri=self.default_milvus_uri,
            revision=status.get("indexedRevision"),
            collection=status.get("collection"),
        )

    async def adapters(
        self, owner: Owner, spec: HybridEndpointSpec
    ) -> tuple[list[ResolvedAdapter], list[str]]:
        """The endpoint's adapters that can be served, and the names of those whose training has not
        written an adapter yet."""
        resolved, waiting = [], []
        for adapter in spec.adapters:
            if adapter.uri:
                resolved.append(uri_adapter(adapter))
                continue
            assert adapter.adapter_training_ref is not None
            training = await self.resolve(
                HYBRID_ENDPOINT, owner, ADAPTER_TRAINING, adapter.adapter_training_ref
            )
            status = training.get("status") or {}
            location = trained_location(status)  # its published artifact, when it has one
            if location is None:
                waiting.append(adapter.name)
                continue
            rank = AdapterTrainingSpec.model_validate(training["spec"]).lora.r
            resolved.append(
                trained_adapter(
                    adapter,
                    location,
                    rank,
                    status.get("adapterVersion"),
                    digest=status.get("adapterDigest"),
                    namespace=training["metadata"]["namespace"],
                )
            )
        return resolved, waiting
