"""One Milvus collection per KnowledgeBase: schema, capability checks, incremental writes, ACL'd search.

Works with milvus-lite (a local `.db` path) and a Milvus server (`http://host:19530`). What differs
between them is detected, not assumed: the server version decides whether BM25 keyword search runs in
Milvus (2.5+, milvus-lite) or falls back to lexical scoring of the dense candidates in the client.

Access labels are stored twice per chunk: the `access_labels` array (shown in citations) and `acl_key`,
a digest of the chunk's label set ("" for a public chunk). A search filters on the key:
`public == true or acl_key in [keys of the label sets that share a label with the caller's groups]`,
which milvus-lite evaluates vectorised (pyarrow) where `array_contains_any` on the array runs row by row
in Python (about a second a search at 20k chunks). The collection's label sets are kept in one of its
properties (LABEL_SETS_PROPERTY), written before the first chunk of a new set and read back, verified,
by searchers. Collections created before `acl_key` existed are searched with the array filter.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
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

log = logging.getLogger(__name__)

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
ACL_KEY_LENGTH = 32  # hex digits of a label set's digest: 128 bits
# The collection property holding its label sets, as JSON {"v": 1, "sets": [[label, ...], ...]}, or
# {"v": 1, "overflow": true} when they do not fit LABEL_SETS_MAX_BYTES (searches then use the array filter).
LABEL_SETS_PROPERTY = "tandem.accessLabelSets"
LABEL_SETS_MAX_BYTES = 256 * 1024
# How old a searcher's copy of the label sets may be (Strong searches read them anew): a label set first
# written by an ingest becomes searchable by group within this time, like Milvus's Bounded consistency.
LABEL_SETS_MAX_AGE = 5.0
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


def label_set_key(labels: Iterable[str]) -> str:
    """A chunk's `acl_key`: "" without labels (public), else a digest of its set of labels.

    The key depends on the set alone, so it never changes meaning: a searcher whose copy of the
    collection's label sets is old can only miss a new set (see fewer chunks), never widen what it sees.
    """
    unique = sorted(set(labels))
    if not unique:
        return ""
    canonical = json.dumps(unique, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return hashlib.sha256(canonical).hexdigest()[:ACL_KEY_LENGTH]


def array_acl_filter(groups: Iterable[str] | None) -> str:
    """The ACL filter on the label array, for collections without `acl_key` (slow on milvus-lite)."""
    wanted = sorted(set(groups or ()))
    if not wanted:
        return "public == true"
    return f"public == true or array_contains_any(access_labels, [{', '.join(map(literal, wanted))}])"


def key_acl_filter(groups: Iterable[str] | None, label_sets: dict[str, frozenset[str]]) -> str:
    """The ACL filter on `acl_key`: public chunks, and those whose label set shares a label with `groups`.

    Only hex digests enter the expression, never a label or a group name.
    """
    wanted = set(groups or ())
    keys = sorted(key for key, labels in label_sets.items() if labels & wanted)
    if not keys:
        return "public == true"
    return f"public == true or acl_key in [{', '.join(map(literal, keys))}]"


def encode_label_sets(label_sets: dict[str, frozenset[str]]) -> str:
    value = json.dumps({"v": 1, "sets": sorted(sorted(labels) for labels in label_sets.values())})
    if len(value.encode()) > LABEL_SETS_MAX_BYTES:
        return json.dumps({"v": 1, "overflow": True})
    return value


def decode_label_sets(value: str | None) -> dict[str, frozenset[str]] | None:
    """The label sets a property holds, by key (recomputed here, so an entry cannot name another set's
    key); None when they are not all there (overflow, or a value this version does not read)."""
    if value is None:
        return {}  # no labelled chunk was ever written
    try:
        data = json.loads(value)
        sets = data["sets"] if data.get("v") == 1 and not data.get("overflow") else None
        if not isinstance(sets, list):
            return None
        decoded = {}
        for labels in sets:
            if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
                return None
            if labels:
                decoded[label_set_key(labels)] = frozenset(labels)
        return decoded
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


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
        # How this collection encodes access labels, as last read (see _read_acl): None until read.
        self._acl: _AclState | None = None
        self._stored_keys: set[str] | None = None  # the acl_keys the last complete scan found
        self._warned_array_filter = False

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
        schema.add_field("acl_key", DataType.VARCHAR, max_length=ACL_KEY_LENGTH)
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
        self._acl = _AclState(keyed=True, label_sets={}, read_at=time.monotonic())

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
        self._acl = _AclState.of(description)

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
        self._acl = None
        self._stored_keys = None
        return True

    # -- access labels ----------------------------------------------------------------------------------

    @property
    def label_keyed(self) -> bool:
        """Whether this collection has `acl_key` (else: created before it, searched with the array filter)."""
        return self._read_acl(math.inf).keyed

    def _read_acl(self, max_age: float) -> _AclState:
        state = self._acl
        if state is None or time.monotonic() - state.read_at > max_age:
            try:
                description = self.client.describe_collection(self.collection)
            except MilvusException as e:
                raise StoreError(
                    "CollectionUnavailable", f"cannot describe {self.collection}: {e.message}"
                ) from None
            state = self._acl = _AclState.of(description)
        return state

    def label_sets(self, *, fresh: bool = False) -> dict[str, frozenset[str]] | None:
        """The collection's label sets by acl_key, at most LABEL_SETS_MAX_AGE old (`fresh`: read now);
        None when the collection has no acl_key or its sets did not fit its property."""
        state = self._read_acl(0.0 if fresh else LABEL_SETS_MAX_AGE)
        return state.label_sets if state.keyed else None

    def acl_filter(self, groups: Iterable[str] | None, *, fresh: bool = False) -> str:
        """The filter that lets through what a caller with these groups may read: public chunks, and
        chunks with at least one of its groups among their labels. `fresh`: with the label sets read now
        (for a Strong search), else with a copy at most LABEL_SETS_MAX_AGE old."""
        wanted = set(groups or ())
        if not wanted:
            return "public == true"
        label_sets = self.label_sets(fresh=fresh)
        if label_sets is None:
            if not self._warned_array_filter:
                self._warned_array_filter = True
                log.warning(
                    "%s has no acl_key (created by an older Tandem) or too many label sets: searches "
                    "with groups use the label array filter, slow on milvus-lite; a collection created "
                    "anew (delete and re-create the KnowledgeBase) gets the fast encoding",
                    self.collection,
                )
            return array_acl_filter(wanted)
        return key_acl_filter(wanted, label_sets)

    def _encode(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows with `public` and `acl_key` derived from their labels; new label sets are recorded in the
        collection's property before any chunk carrying them is written."""
        state = self._read_acl(math.inf)  # this process is the collection's only writer
        encoded = []
        new: dict[str, frozenset[str]] = {}
        for row in rows:
            labels = list(row.get("access_labels") or [])
            row = {**row, "public": not labels}
            if state.keyed:
                row["acl_key"] = key = label_set_key(labels)
                if key and (state.label_sets is None or key not in state.label_sets):
                    new[key] = frozenset(labels)
            encoded.append(row)
        if new and state.label_sets is not None:
            self._write_label_sets({**state.label_sets, **new})
        return encoded

    def _write_label_sets(self, label_sets: dict[str, frozenset[str]]) -> None:
        value = encode_label_sets(label_sets)
        try:
            self.client.alter_collection_properties(self.collection, properties={LABEL_SETS_PROPERTY: value})
        except MilvusException as e:
            raise StoreError(
                "CollectionWriteFailed", f"cannot record the label sets of {self.collection}: {e.message}"
            ) from None
        self._acl = _AclState(keyed=True, label_sets=decode_label_sets(value), read_at=time.monotonic())

    def prune_label_sets(self) -> None:
        """Make the recorded label sets exactly those of the stored chunks, as the last `documents()` scan
        found them (call it after the last write): sets no chunk has any more are forgotten, a set with
        chunks but no record (an overflow, a lost property) is read back from one of its chunks."""
        present = self._stored_keys
        if present is None:  # no scan yet, or a collection without acl_key
            return
        state = self._read_acl(0.0)
        present = present - {""}
        known = state.label_sets or {}
        wanted = {key: known[key] for key in present if key in known}
        for key in sorted(present - wanted.keys()):
            rows = self.client.query(
                self.collection,
                filter=f"acl_key == {literal(key)}",
                output_fields=["access_labels"],
                limit=1,
                consistency_level="Strong",
            )
            labels = frozenset(rows[0]["access_labels"]) if rows else frozenset()
            if rows and label_set_key(labels) == key:
                wanted[key] = labels
        if state.label_sets is None or wanted != state.label_sets:
            self._write_label_sets(wanted)

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
        keys: set[str] = set()
        for attempt in range(SCAN_ATTEMPTS):
            keys = set()
            counts = self._scan(keys)
            if expected is None or counts.total() == expected:
                break
            time.sleep(0.2 * (attempt + 1))
        else:
            raise StoreError(
                "CollectionUnavailable",
                f"{self.collection}: a scan found {counts.total()} chunks but Milvus counts {expected}; "
                "is another ingest writing to this collection?",
            )
        self._stored_keys = keys if self.label_keyed else None
        stored: dict[str, StoredDocument] = {}
        for (doc_id, doc_hash, chunk_count), present in counts.items():
            previous = stored.get(doc_id)
            candidate = StoredDocument(doc_hash, chunk_count, present)
            # Two hashes of one document coexist only after an interruption: a complete one wins.
            if previous is None or (candidate.complete and not previous.complete):
                stored[doc_id] = candidate
        return stored

    def _scan(self, keys: set[str]) -> Counter[tuple[str, str, int]]:
        """Chunks per (document, hash, chunk count); adds the acl_keys found to `keys`."""
        counts: Counter[tuple[str, str, int]] = Counter()
        fields = ["doc_id", "doc_hash", "chunk_count"] + (["acl_key"] if self.label_keyed else [])
        with _quiet_iterator_setup():
            iterator = self.client.query_iterator(
                self.collection,
                batch_size=1000,
                filter="",
                output_fields=fields,
                consistency_level="Strong",
            )
        try:
            while batch := iterator.next():
                for row in batch:
                    counts[(row["doc_id"], row["doc_hash"], int(row["chunk_count"]))] += 1
                    keys.add(row.get("acl_key", ""))
        finally:
            iterator.close()
        return counts

    def insert(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            self.client.insert(self.collection, self._encode(rows))

    def upsert(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            self.client.upsert(self.collection, self._encode(rows))

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


@dataclass(frozen=True)
class _AclState:
    keyed: bool  # the collection has acl_key
    label_sets: dict[str, frozenset[str]] | None  # by key; None: not all recorded (use the array filter)
    read_at: float  # time.monotonic()

    @classmethod
    def of(cls, description: dict[str, Any]) -> _AclState:
        keyed = any(f["name"] == "acl_key" for f in description["fields"])
        properties = description.get("properties") or {}
        return cls(keyed, decode_label_sets(properties.get(LABEL_SETS_PROPERTY)), time.monotonic())


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
