"""The job contracts each workload takes, built from a spec and what its references resolved to.

The platform says where things are in its world (a mount path in a pod, a file under `.tandem/`
locally); everything else (the collection, which Milvus, which embedding model, the version) is decided
here once.
"""

from __future__ import annotations

from tandem.api.v1alpha1 import AdapterTrainingSpec, KnowledgeBaseSpec
from tandem.workloads.jobs import IngestJob, KnowledgeBaseTarget, TrainingJob

from .naming import collection_name
from .references import ResolvedKnowledgeBase


def ingest_job(
    namespace: str,
    name: str,
    spec: KnowledgeBaseSpec,
    *,
    default_milvus_uri: str,
    revision: str,
    source_locations: dict[str, str],
    token_file: str | None,
) -> IngestJob:
    return IngestJob(
        namespace=namespace,
        name=name,
        collection=collection_name(namespace, name),
        milvus_uri=spec.milvus.uri or default_milvus_uri,
        token_file=token_file,
        revision=revision,
        source_locations=source_locations,
        spec=spec,
    )


def knowledge_base_target(kb: ResolvedKnowledgeBase, token_file: str | None) -> KnowledgeBaseTarget:
    """How a workload reads a referenced knowledge base: its own database, embedding model and token."""
    return KnowledgeBaseTarget(
        collection=kb.collection,
        milvus_uri=kb.milvus_uri,
        database=kb.database,
        token_file=token_file,
        embedding_model=kb.embedding_model,
    )


def training_job(
    namespace: str,
    name: str,
    spec: AdapterTrainingSpec,
    *,
    version: str,
    base_model: str,
    dataset: str | None,
    output: str,
    raft: KnowledgeBaseTarget | None,
    model_cache: str | None = None,
) -> TrainingJob:
    return TrainingJob(
        namespace=namespace,
        name=name,
        version=version,
        base_model=base_model,
        dataset=dataset,
        output=output,
        model_cache=model_cache,
        raft_knowledge_base=raft if spec.raft is not None else None,
        spec=spec,
    )


def adapter_folder(output_root: str, name: str, version: str) -> str:
    """The folder of one adapter version under the training's output store."""
    return f"{output_root.rstrip('/')}/{name}-{version}"
