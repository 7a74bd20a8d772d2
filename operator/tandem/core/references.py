"""What a reference resolves to, as far as the resource that refers needs it; the same in both platforms.

The operator fills these from the referenced objects' specs and status, local mode from its manifests and
state. Neither runs the referenced resource's planner to learn a fact about it: a broken KnowledgeBase
must not make the resource that refers to it fail.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tandem.api.v1alpha1 import KnowledgeBaseSpec
from tandem.api.v1alpha1.common import SecretKeyReference
from tandem.api.v1alpha1.hybridendpoint import REMOTE_ADAPTER_SCHEMES, Adapter

from .naming import collection_name

# The rank vLLM is told to expect for an adapter served from a URI whose rank the spec does not give
# (`adapters[].rank`): 16 also holds the smaller common ranks (8, 4).
DEFAULT_URI_ADAPTER_RANK = 16


@dataclass(frozen=True)
class ResolvedKnowledgeBase:
    """A referenced KnowledgeBase: where its chunks are, and how ingest embedded them."""

    namespace: str
    name: str
    collection: str
    milvus_uri: str
    revision: str | None
    # What a consumer (gateway, RAFT, evaluation) needs to search it as ingest indexed it.
    embedding_model: str = "all-MiniLM-L6-v2"
    search: dict[str, Any] = field(default_factory=dict)
    database: str | None = None
    credentials: SecretKeyReference | None = None  # a Secret key in the KnowledgeBase's namespace
    spec: KnowledgeBaseSpec | None = None  # how it chunks and embeds (an evaluation times a re-index with it)


def resolve_knowledge_base(
    namespace: str,
    name: str,
    spec: KnowledgeBaseSpec,
    *,
    default_milvus_uri: str,
    revision: str | None = None,
    collection: str | None = None,
) -> ResolvedKnowledgeBase:
    """A KnowledgeBase as its consumers see it: the collection its status names (or the one its name
    maps to, before the first ingest) and its spec's connection and embedding."""
    return ResolvedKnowledgeBase(
        namespace=namespace,
        name=name,
        collection=collection or collection_name(namespace, name),
        milvus_uri=spec.milvus.uri or default_milvus_uri,
        revision=revision,
        embedding_model=spec.embedding.model,
        search=spec.search.model_dump(by_alias=True, mode="json"),
        database=spec.milvus.database,
        credentials=spec.milvus.credentials_secret_ref,
        spec=spec,
    )


@dataclass(frozen=True)
class ResolvedAdapter:
    """An adapter ready to be served: where its folder is (a URI the platform turns into a path), its rank,
    and its version (None for an adapter served from a URI)."""

    name: str
    uri: str
    rank: int
    version: str | None
    # What its training recorded (adapterDigest), or the digest a URI adapter declares: the folder vLLM
    # loads must have it (a fetched artifact is refused otherwise).
    digest: str | None = None
    namespace: str | None = None  # where its AdapterTraining is; None for a URI adapter
    # Fetching it from an oci:// or s3:// store: a Secret of the endpoint's namespace, plain HTTP allowed.
    credentials: str | None = None
    insecure: bool = False

    @property
    def remote(self) -> bool:
        """Whether it is fetched from a store (by digest) rather than read from a folder."""
        return self.uri.partition("://")[0] in REMOTE_ADAPTER_SCHEMES


def uri_adapter(adapter: Adapter, uri: str | None = None) -> ResolvedAdapter:
    """An adapter the endpoint names by URI (`uri` overrides where the platform found it)."""
    assert adapter.uri is not None
    return ResolvedAdapter(
        adapter.name,
        uri or adapter.uri,
        adapter.rank or DEFAULT_URI_ADAPTER_RANK,
        None,
        adapter.digest,
        credentials=adapter.credentials_secret_ref.name if adapter.credentials_secret_ref else None,
        insecure=adapter.insecure,
    )


def trained_location(figures: Mapping[str, Any]) -> str | None:
    """Where an AdapterTraining's adapter is served from, by its status (`figures`): the artifact it
    published when it has one (fetched by digest, so an endpoint of any namespace can serve it), else the
    folder it wrote; None before it wrote one."""
    artifact = figures.get("artifact")
    if isinstance(artifact, Mapping) and artifact.get("uri") and figures.get("adapterDigest"):
        return str(artifact["uri"])
    uri = figures.get("adapterUri")
    return str(uri) if uri else None


def trained_adapter(
    adapter: Adapter,
    uri: str,
    trained_rank: int,
    version: str | None,
    *,
    digest: str | None = None,
    namespace: str | None = None,
) -> ResolvedAdapter:
    """An adapter an AdapterTraining in `namespace` produced (its rank unless the endpoint overrides it)."""
    return ResolvedAdapter(
        adapter.name,
        uri,
        adapter.rank or trained_rank,
        version,
        digest,
        namespace,
        credentials=adapter.credentials_secret_ref.name if adapter.credentials_secret_ref else None,
        insecure=adapter.insecure,
    )
