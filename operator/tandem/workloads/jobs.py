"""The job contracts: the one JSON file each workload takes (`--spec FILE`), as typed models.

The core builds them, both platforms write them (a ConfigMap in a cluster, a file under `.tandem/jobs`
locally), and the workload parses them with the same model, so writer and reader agree on every field
and an unknown or missing field fails at the start of the run with its name, not halfway through.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from tandem.api.v1alpha1 import AdapterTrainingSpec, KnowledgeBaseSpec


class JobContract(BaseModel):
    """camelCase on the wire, like the API; strict about unknown fields, so a writer and a reader of
    different versions disagree loudly."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def to_json(self) -> str:
        return json.dumps(self.model_dump(by_alias=True, exclude_none=True, mode="json"), indent=2)


class JobSpecError(Exception):
    """The job file is missing or does not match its contract; the message names the file and field."""

    reason = "JobSpecInvalid"


Contract = TypeVar("Contract", bound=JobContract)


def load_job(path: str | Path, contract: type[Contract]) -> Contract:
    try:
        return contract.model_validate_json(Path(path).read_text())
    except OSError as e:
        raise JobSpecError(f"{path}: cannot read the job spec: {e.strerror}") from None
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in e.errors(include_url=False)
        )
        raise JobSpecError(f"{path}: not a {contract.__name__}: {problems}") from None


def read_token(path: str | None) -> str | None:
    """A credential mounted from a Secret key (a file); None when there is none."""
    return Path(path).read_text().strip() if path else None


class KnowledgeBaseTarget(JobContract):
    """Where a KnowledgeBase's chunks are and how to reach them, for a workload that reads them."""

    collection: str
    milvus_uri: str
    database: str | None = None
    token_file: str | None = Field(default=None, description="The Milvus token, mounted from a Secret key.")
    embedding_model: str = "all-MiniLM-L6-v2"


class IngestJob(JobContract):
    """`python -m tandem.workloads.ingest` (and, with --drop-collection, the cleanup Job)."""

    namespace: str
    name: str
    collection: str
    milvus_uri: str
    token_file: str | None = Field(default=None, description="The Milvus token, mounted from a Secret key.")
    revision: str = ""
    source_locations: dict[str, str] = Field(
        default_factory=dict, description="Source name -> where the workload reads it (a path)."
    )
    spec: KnowledgeBaseSpec

    def target(self) -> KnowledgeBaseTarget:
        return KnowledgeBaseTarget(
            collection=self.collection,
            milvus_uri=self.milvus_uri,
            database=self.spec.milvus.database,
            token_file=self.token_file,
            embedding_model=self.spec.embedding.model,
        )


class TrainingJob(JobContract):
    """`python -m tandem.workloads.train` (and, with --delete-artifacts, the cleanup Job)."""

    namespace: str
    name: str
    version: str
    base_model: str = Field(description="A path in the pod, or a URI the workload fetches.")
    dataset: str | None = None
    output: str = Field(description="The adapter folder this version is written to.")
    model_cache: str | None = None
    raft_knowledge_base: KnowledgeBaseTarget | None = None
    spec: AdapterTrainingSpec
