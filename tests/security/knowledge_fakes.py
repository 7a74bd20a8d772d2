"""Stand-ins for Milvus and the embedding model, for tests of how ingest behaves under faults.

`FakeStore` keeps rows as a collection would and refuses writes as Milvus does: one row that does not
fit the schema (a VARCHAR longer than its field's max_length, more labels than the array holds) fails the
whole insert or upsert. milvus-lite measured VARCHAR lengths in characters when checked (a 12-byte,
6-character value passed max_length 10; 11 ASCII characters failed with "value length 11 exceeds
max_length=10", and so did the other row of that insert); the Milvus server measures UTF-8 bytes, so this
stand-in refuses what either would. A JSON value over 65,536 bytes is refused as the server refuses it
(milvus.io, "JSON Field": limits).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from tandem.workloads.knowledge import store as real

VARCHAR_LIMITS = {
    "id": real.MAX_ID,
    "text": real.MAX_TEXT,
    "doc_id": real.MAX_DOC_ID,
    "doc_hash": real.MAX_DOC_HASH,
    "source": real.MAX_SOURCE,
    "uri": real.MAX_URI,
    "title": real.MAX_TITLE,
    "heading": real.MAX_HEADING,
}
JSON_LIMIT = 65_536


class SchemaViolation(Exception):
    """What Milvus answers to a write with a row that does not fit (pymilvus raises MilvusException)."""


class FakeStore:
    """The part of ChunkStore the indexer uses, in memory. `log` records every call, in order."""

    def __init__(self, collection: str = "tandem_test__faults") -> None:
        self.collection = collection
        self.rows: dict[str, dict[str, Any]] = {}
        self.created = False
        self.log: list[tuple[str, Any]] = []

    # -- what the indexer calls --------------------------------------------------------------------

    def exists(self) -> bool:
        return self.created

    def check_spec(self, index: Any, keyword: str) -> None:
        pass

    def ensure(self, dimension: int, index: Any, keyword: str) -> None:
        self.created = True

    def documents(self) -> dict[str, real.StoredDocument]:
        counts: Counter[tuple[str, str, int]] = Counter(
            (r["doc_id"], r["doc_hash"], r["chunk_count"]) for r in self.rows.values()
        )
        stored: dict[str, real.StoredDocument] = {}
        for (doc_id, doc_hash, chunk_count), present in counts.items():
            previous = stored.get(doc_id)
            candidate = real.StoredDocument(doc_hash, chunk_count, present)
            if previous is None or (candidate.complete and not previous.complete):
                stored[doc_id] = candidate
        return stored

    def insert(self, rows: Sequence[dict[str, Any]]) -> None:
        self._write("insert", rows)

    def upsert(self, rows: Sequence[dict[str, Any]]) -> None:
        self._write("upsert", rows)

    def delete_document(self, doc_id: str, keep_hash: str | None = None) -> None:
        self.log.append(("delete", doc_id))
        for key in [k for k, r in self.rows.items() if r["doc_id"] == doc_id and r["doc_hash"] != keep_hash]:
            del self.rows[key]

    def flush(self) -> None:
        pass

    def prune_label_sets(self) -> None:
        pass

    # -- for the tests -----------------------------------------------------------------------------

    def chunks_of(self, doc_id: str) -> list[dict[str, Any]]:
        return [r for r in self.rows.values() if r["doc_id"] == doc_id]

    def doc_ids(self) -> set[str]:
        return {r["doc_id"] for r in self.rows.values()}

    def _write(self, what: str, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        for row in rows:
            for field, limit in VARCHAR_LIMITS.items():
                value = row[field]
                size = max(len(value), len(value.encode()))
                if size > limit:
                    raise SchemaViolation(
                        f"VARCHAR field '{field}' value length {size} exceeds max_length={limit}"
                    )
            labels = row["access_labels"]
            if len(labels) > real.MAX_LABELS or any(len(x.encode()) > real.MAX_LABEL for x in labels):
                raise SchemaViolation("ARRAY field 'access_labels' does not fit its capacity or max_length")
            if len(json.dumps(row["metadata"]).encode()) > JSON_LIMIT:
                raise SchemaViolation(f"JSON field 'metadata' is over {JSON_LIMIT} bytes")
        self.log.append((what, sorted({r["doc_id"] for r in rows})))
        for row in rows:
            self.rows[row["id"]] = dict(row)


class FakeEmbedder:
    """Words as tokens, vectors from a hash: fast, deterministic, and enough for the indexer."""

    name = "fake"
    dimension = 4
    max_tokens = 512
    embedded = 0

    def __init__(self, log: list[tuple[str, Any]] | None = None) -> None:
        self.log = log

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        offsets, start = [], None
        for i, ch in enumerate(text + " "):
            if ch.isspace():
                if start is not None:
                    offsets.append((start, i))
                    start = None
            elif start is None:
                start = i
        return offsets

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self.log is not None:
            self.log.append(("embed", len(texts)))
        self.embedded += len(texts)
        return np.array([[float(len(t) % 7), 1.0, 0.0, float(hash(t) % 5)] for t in texts], dtype=np.float32)
