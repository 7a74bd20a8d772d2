"""One Milvus collection per KnowledgeBase: schema, capability checks, incremental writes, ACL'd search.

Works with milvus-lite (a local `.db` path) and a Milvus server (`http://host:19530`). What differs
between them is detected, not assumed: the server version decides whether BM25 keyword search runs in
Milvus (2.5+, milvus-lite) or falls back to lexical scoring of the dense candidates in the client.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymilvus import DataType, Function, FunctionType, MilvusClient
from pymilvus.exceptions import MilvusException

from tandem.api.v1alpha1.knowledgebase import VectorIndex

OUTPUT_FIELDS = [
    "text",
    "doc_id",
    "chunk_index",
    "source",
    "uri",
    "title",
    "heading",
    "start",
    "end",
    "page",
    "access_labels",
    "metadata",
]
# The collection schema's field lengths (VARCHAR max_length), said once: the indexer cuts the free-form
# fields (text, uri, title, heading) to them and refuses documents with more than MAX_LABELS labels.
MAX_ID = 64
MAX_TEXT = 65_535
MAX_DOC_ID = 1024
MAX_DOC_HASH = 64
MAX_SOURCE = 63
MAX_URI = 2048
MAX_TITLE = 512
MAX_HEADING = 1024
MAX_LABELS = 64  # access labels per chunk (the array's capacity)
MAX_LABEL = 256  # the length of one access label
SCAN_ATTEMPTS = 5
# Index types each kind of server builds (an unsupported type is accepted at create time by milvus-lite
# and fails later, so it is checked here first).
LITE_INDEXES = {"HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8", "FLAT", "AUTOINDEX"}
SERVER_23_INDEXES = {"HNSW", "IVF_FLAT", "IVF_SQ8", "FLAT", "AUTOINDEX"}
SERVER_25_INDEXES = LITE_INDEXES


class StoreError(Exception):
    """Milvus refused or cannot do what the spec asks; `reason` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class StoredDocument:
    doc_hash: str
    chunk_count: int  # chunks the document was split into
    present: int  # chunks of that hash actually stored (less: an interrupted write)

    @property
    def complete(self) -> bool:
        return self.present == self.chunk_count


@dataclass
class Passage:
    """A retrieved chunk with everything a citation needs, and how it was found."""

    id: str
    text: str
    doc_id: str
    source: str
    uri: str
    title: str
    heading: str
    start: int
    end: int
    page: int | None
    access_labels: list[str]
    metadata: dict[str, Any]
    score: float = 0.0  # fused rank score
    similarity: float | None = None  # dense similarity (the metric's value), when found by dense search
    keyword_rank: int | None = None  # rank among keyword hits, when found by keyword search
    chunk_index: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def chunk_id(doc_id: str, doc_hash: str, index: int) -> str:
    """Deterministic: re-running an interrupted ingest overwrites, never duplicates."""
    return f"{hashlib.sha1(doc_id.encode()).hexdigest()[:16]}-{doc_hash[:16]}-{index}"


_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def literal(value: str) -> str:
    """A string literal for a Milvus boolean expression, read back as `value` by milvus-lite and the server.

    Not JSON: milvus-lite's parser knows only the escapes of a backslash, a quote, newline, carriage
    return and tab, and refused the backslash-u escape json.dumps writes for every non-ASCII character (a
    filter or a delete naming "café" failed on milvus-lite).
    Everything else stands for itself in both parsers.
    """
    return '"' + value.translate(_ESCAPES) + '"'


def acl_filter(groups: Iterable[str] | None) -> str:
    """Chunks without labels are public; labelled chunks need one of the caller's groups."""
    groups = sorted(set(groups or ()))
    if not groups:
        return "public == true"
    return f"public == true or array_contains_any(access_labels, [{', '.join(map(literal, groups))}])"


# pymilvus pings an idle connection every 10 s; gRPC servers by default (milvus-lite among them) allow a
# ping without a call in flight only every 5 minutes and answer more with GOAWAY "too_many_pings". pymilvus
# then fails to recover the shared connection, and a later client for the same address can fail to
# connect (seen: an evaluation's second connection, minutes after its first). Ping only while calls run.
GRPC_OPTIONS = {"grpc.keepalive_permit_without_calls": False, "grpc.keepalive_time_ms": 60_000}


class ChunkStore:
    def __init__(
        self, uri: str, collection: str, *, token: str | None = None, database: str | None = None
    ) -> None:
        self.uri = uri
        self.collection = collection
        kwargs: dict[str, Any] = {"uri": uri, "grpc_options": GRPC_OPTIONS}
        if token:
            kwargs["token"] = token
        if database:
            kwargs["db_name"] = database
        try:
            self.client = MilvusClient(**kwargs)
        except MilvusException as e:
            raise StoreError("MilvusUnavailable", f"cannot connect to Milvus at {uri}: {e.message}") from None
        self.server_version = str(self.client.get_server_version())
        # milvus-lite is a local `.db` path (as pymilvus decides) or a `milvus-lite server`, whose version is
        # "milvus_lite-<n>". Not "lite" anywhere in the version: the PyPI `milvus` 2.3.5 server says
        # "v2.3.5-lite", and has neither BM25 nor HNSW_SQ.
        self.embedded = uri.endswith(".db")
        self.is_lite = self.embedded or self.server_version.lower().startswith("milvus_lite")
        self.metric = "COSINE"
        self._loaded = False

    def close(self) -> None:
        """Release the connection (milvus-lite: the data directory, which one process holds at a time)."""
        self.client.close()
        if self.embedded:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.uri)

    # -- capabilities -----------------------------------------------------------------------------------

    def _server_tuple(self) -> tuple[int, int]:
        match = re.search(r"(\d+)\.(\d+)", self.server_version)
        return (int(match.group(1)), int(match.group(2))) if match else (0, 0)

    @property
    def supports_bm25(self) -> bool:
        return self.is_lite or self._server_tuple() >= (2, 5)

    def supported_indexes(self) -> set[str]:
        if self.is_lite:
            return LITE_INDEXES
        return SERVER_25_INDEXES if self._server_tuple() >= (2, 5) else SERVER_23_INDEXES

    # -- collection -------------------------------------------------------------------------------------

    def exists(self) -> bool:
        return bool(self.client.has_collection(self.collection))

    def check_spec(self, index: VectorIndex, keyword: str) -> None:
        """Refuse an index type or keyword search this server cannot give, before any work is done."""
        if index.type not in self.supported_indexes():
            raise StoreError(
                "IndexTypeUnsupported",
                f"index type {index.type} is not supported by Milvus {self.server_version} "
                f"(supported: {', '.join(sorted(self.supported_indexes()))})",
            )
        if keyword == "bm25" and not self.supports_bm25:
            raise StoreError(
                "KeywordSearchUnsupported",
                f"search.keyword bm25 needs Milvus 2.5+ or milvus-lite; this server is "
                f"{self.server_version}. Use keyword: auto for the client-side fallback",
            )

    def ensure(self, dimension: int, index: VectorIndex, keyword: str) -> None:
        """Create the collection, or check that the existing one fits the model and the spec."""
        self.metric = index.metric
        self.check_spec(index, keyword)
        if self.exists():
            self._check_existing(dimension)
            self.load()
            return
        with_bm25 = keyword != "off" and self.supports_bm25
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dimension)
        # enable_analyzer only where BM25 needs it: Milvus 2.3 does not know the parameter (it stores it
        # as an unknown type param instead of refusing it).
        analyzer = {"enable_analyzer": True} if with_bm25 else {}
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT, **analyzer)
        for name, length in (
            ("doc_id", MAX_DOC_ID),
            ("doc_hash", MAX_DOC_HASH),
            ("source", MAX_SOURCE),
            ("uri", MAX_URI),
            ("title", MAX_TITLE),
            ("heading", MAX_HEADING),
        ):
            schema.add_field(name, DataType.VARCHAR, max_length=length)
        for name in ("chunk_index", "chunk_count", "start", "end", "page"):
            schema.add_field(name, DataType.INT64)
        schema.add_field(
            "access_labels",
            DataType.ARRAY,
            element_type=DataType.VARCHAR,
            max_capacity=MAX_LABELS,
            max_length=MAX_LABEL,
        )
        schema.add_field("public", DataType.BOOL)
        schema.add_field("metadata", DataType.JSON)
        params = self.client.prepare_index_params()
        params.add_index(
            "vector", index_type=index.type, metric_type=index.metric, params=_index_params(index)
        )
        if with_bm25:
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="text_bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=["text"],
                    output_field_names=["sparse"],
                )
            )
            params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        try:
            self.client.create_collection(self.collection, schema=schema, index_params=params)
            self._loaded = True  # created with its index: loaded
        except MilvusException as e:
            raise StoreError(
                "CollectionCreateFailed", f"cannot create {self.collection}: {e.message}"
            ) from None

    def _check_existing(self, dimension: int) -> None:
        description = self.client.describe_collection(self.collection)
        vector = next((f for f in description["fields"] if f["name"] == "vector"), None)
        have = int((vector or {}).get("params", {}).get("dim", 0))
        if have != dimension:
            raise StoreError(
                "DimensionMismatch",
                f"collection {self.collection} holds {have}-dimensional vectors but the embedding model "
                f"produces {dimension}; changing the model needs a new collection: delete and recreate "
                "the KnowledgeBase (or give it a new name)",
            )
        self.has_sparse = any(f["name"] == "sparse" for f in description["fields"])

    @property
    def keyword_in_milvus(self) -> bool:
        if not hasattr(self, "has_sparse"):
            self.has_sparse = self.exists() and any(
                f["name"] == "sparse" for f in self.client.describe_collection(self.collection)["fields"]
            )
        return bool(self.has_sparse)

    def load(self) -> None:
        """Make an existing collection searchable in this process (a new server session starts released)."""
        if self._loaded:
            return
        try:
            self.client.load_collection(self.collection)
        except MilvusException as e:
            raise StoreError("CollectionUnavailable", f"cannot load {self.collection}: {e.message}") from None
        self._loaded = True

    def drop(self) -> bool:
        if not self.exists():
            return False
        self.client.drop_collection(self.collection)
        self._loaded = False
        return True

    # -- incremental writes -----------------------------------------------------------------------------

    def documents(self) -> dict[str, StoredDocument]:
        """What is stored, per document: its newest hash and whether all its chunks are there.

        On a Milvus server the scan must see every write this process made just before. pymilvus sends
        the query iterator's reads at the collection's default consistency (Bounded), whatever level it
        is given, pinned to a session timestamp the server returns; Milvus 2.3 returns none, and a scan
        right after an upsert misses it. A Strong count(*) first makes the server catch up to now and says
        how many rows the scan must find; a scan that finds another number is repeated (this process is
        the only writer of the collection while it indexes).
        """
        self.load()
        expected = None if self.is_lite else self.count()
        for attempt in range(SCAN_ATTEMPTS):
            counts = self._scan()
            if expected is None or counts.total() == expected:
                break
            time.sleep(0.2 * (attempt + 1))
        else:
            raise StoreError(
                "CollectionUnavailable",
                f"{self.collection}: a scan found {counts.total()} chunks but Milvus counts {expected}; "
                "is another ingest writing to this collection?",
            )
        stored: dict[str, StoredDocument] = {}
        for (doc_id, doc_hash, chunk_count), present in counts.items():
            previous = stored.get(doc_id)
            candidate = StoredDocument(doc_hash, chunk_count, present)
            # Two hashes of one document coexist only after an interruption: a complete one wins.
            if previous is None or (candidate.complete and not previous.complete):
                stored[doc_id] = candidate
        return stored

    def _scan(self) -> Counter[tuple[str, str, int]]:
        counts: Counter[tuple[str, str, int]] = Counter()
        with _quiet_iterator_setup():
            iterator = self.client.query_iterator(
                self.collection,
                batch_size=1000,
                filter="",
                output_fields=["doc_id", "doc_hash", "chunk_count"],
                consistency_level="Strong",
            )
        try:
            while batch := iterator.next():
                for row in batch:
                    counts[(row["doc_id"], row["doc_hash"], int(row["chunk_count"]))] += 1
        finally:
            iterator.close()
        return counts

    def insert(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            self.client.insert(self.collection, list(rows))

    def upsert(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            self.client.upsert(self.collection, list(rows))

    def delete_document(self, doc_id: str, keep_hash: str | None = None) -> None:
        expression = f"doc_id == {literal(doc_id)}"
        if keep_hash is not None:
            expression += f" and doc_hash != {literal(keep_hash)}"
        self.client.delete(self.collection, filter=expression)

    def flush(self) -> None:
        # Also on milvus-lite: until a flush seals them, its rows stay in an in-memory buffer (up to
        # 128 MB) that every search scans brute force, HNSW index unused: 1.4 s a search at 20k rows,
        # 39 ms after a flush (benchmarks/README.md). A flush costs 0.16 s after 337 new rows, 0.02 s
        # after 3.
        self.client.flush(self.collection)

    def document_chunks(self, doc_id: str) -> list[dict[str, Any]]:
        """One document's chunks in order: text and offsets (enough to rebuild its text)."""
        self.load()
        rows = self.client.query(
            self.collection,
            filter=f"doc_id == {literal(doc_id)}",
            output_fields=["text", "start", "end", "chunk_index", "title", "uri"],
            consistency_level="Strong",
        )
        return sorted(rows, key=lambda r: int(r["chunk_index"]))

    def count(self) -> int:
        self.load()
        rows = self.client.query(
            self.collection, filter="", output_fields=["count(*)"], consistency_level="Strong"
        )
        return int(rows[0]["count(*)"])

    def public_passages(self, limit: int = 16384) -> list[dict[str, Any]]:
        """Chunks without access labels (id, title, text), at most `limit`: what may enter an adapter's
        weights, which every tenant of an endpoint can query."""
        self.load()
        rows = self.client.query(
            self.collection, filter="public == true", output_fields=["id", "title", "text"], limit=limit
        )
        return list(rows)

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of these chunks, by id (float32); an id not stored is absent."""
        rows = self.client.get(self.collection, ids=list(ids), output_fields=["vector"])
        return {str(r["id"]): np.asarray(r["vector"], dtype=np.float32) for r in rows}

    # -- search -----------------------------------------------------------------------------------------

    def dense_search(
        self, vector: np.ndarray, limit: int, expression: str, *, consistency: str = "Bounded"
    ) -> list[Passage]:
        hits = self.client.search(
            self.collection,
            data=[vector.tolist()],
            anns_field="vector",
            limit=limit,
            filter=expression,
            output_fields=OUTPUT_FIELDS,
            search_params={"metric_type": self.metric, "params": {"ef": max(64, limit)}},
            consistency_level=consistency,
        )[0]
        return [_passage(hit, similarity=float(hit["distance"])) for hit in hits]

    def keyword_search(
        self, text: str, limit: int, expression: str, *, consistency: str = "Bounded"
    ) -> list[Passage]:
        hits = self.client.search(
            self.collection,
            data=[text],
            anns_field="sparse",
            limit=limit,
            filter=expression,
            output_fields=OUTPUT_FIELDS,
            search_params={"metric_type": "BM25"},
            consistency_level=consistency,
        )[0]
        return [_passage(hit, keyword_rank=rank) for rank, hit in enumerate(hits)]


def lexical_rank(query: str, passages: Sequence[Passage]) -> list[Passage]:
    """The keyword fallback for servers without BM25: Okapi BM25 over the dense candidates only.

    It cannot find passages dense search missed entirely (Milvus-side BM25 can); it reorders the
    candidates by exact term overlap, which is what keyword search adds for codes, names and numbers.
    """

    def terms(text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())

    query_terms = set(terms(query))
    docs = [terms(p.text) for p in passages]
    if not docs or not query_terms:
        return []
    average = sum(map(len, docs)) / len(docs) or 1.0
    frequency = Counter(t for d in docs for t in set(d))
    scored = []
    for passage, words in zip(passages, docs, strict=True):
        counts = Counter(words)
        score = 0.0
        for term in query_terms:
            if counts[term]:
                idf = math.log(1 + (len(docs) - frequency[term] + 0.5) / (frequency[term] + 0.5))
                tf = counts[term] * 2.2 / (counts[term] + 1.2 * (0.25 + 0.75 * len(words) / average))
                score += idf * tf
        if score > 0:
            scored.append((score, passage))
    scored.sort(key=lambda pair: -pair[0])
    return [p for _, p in scored]


class _DropMissingSessionTs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to get mvccTs" not in record.getMessage()


@contextlib.contextmanager
def _quiet_iterator_setup() -> Iterator[None]:
    """pymilvus warns on every scan that Milvus < 2.5 gives no session timestamp: `documents` handles it."""
    logger = logging.getLogger("pymilvus.client.iterator.query_iterator")
    quiet = _DropMissingSessionTs()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def _index_params(index: VectorIndex) -> dict[str, Any]:
    if index.type.startswith("HNSW"):
        return {"M": index.m or 16, "efConstruction": index.ef_construction or 200}
    if index.type.startswith("IVF"):
        return {"nlist": index.nlist or 128}
    return {}


def _passage(hit: dict[str, Any], **scores: Any) -> Passage:
    entity = hit["entity"]
    page = int(entity.get("page", -1))
    return Passage(
        id=str(hit["id"]),
        text=entity["text"],
        doc_id=entity["doc_id"],
        source=entity["source"],
        uri=entity["uri"],
        title=entity["title"],
        heading=entity["heading"],
        start=int(entity["start"]),
        end=int(entity["end"]),
        page=page if page >= 0 else None,
        access_labels=list(entity.get("access_labels") or []),
        metadata=dict(entity.get("metadata") or {}),
        chunk_index=int(entity.get("chunk_index", 0)),
        **scores,
    )
