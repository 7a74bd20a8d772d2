"""Incremental, resumable indexing of a KnowledgeBase's documents into its collection.

A document is re-embedded only when its content hash (content, format, title, labels, metadata and the
chunking/embedding configuration) differs from what is stored. Chunk ids are deterministic, so a run
killed halfway and started again overwrites what it had written instead of duplicating it; a
document's previous chunks are deleted only after all its new chunks are stored, so a reader never sees
a document vanish while it is being replaced. Documents absent from a source that was read completely
are deleted; a source that could not be read keeps what it had, and so does a document that could not
be read (its failure names it by the same id).

Documents stream through: a source is read one document at a time while earlier ones are parsed,
embedded and written, so memory holds a write batch, not the corpus. A document that cannot be stored
(labels or metadata the schema cannot hold, or a write Milvus refuses) fails alone: every value is fitted
to its field first, and a refused batch is written again one document at a time.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from tandem.api.v1alpha1.knowledgebase import KnowledgeBaseSpec

from ..reporting import shrink_lists
from .chunking import Chunk, chunk
from .documents import (
    MAX_DOCUMENT_BYTES,
    MAX_METADATA_BYTES,
    FailedDocument,
    SourceDocument,
    fit_utf8,
)
from .embedding import TextEmbedder
from .parsing import ParseError, parse
from .sources import SourceReading
from .store import (
    MAX_HEADING,
    MAX_LABEL,
    MAX_LABELS,
    MAX_SOURCE,
    MAX_TEXT,
    MAX_TITLE,
    MAX_URI,
    ChunkStore,
    StoredDocument,
    chunk_id,
)

# Chunks embedded and written together: large enough for efficient batches, small enough that an
# interrupted run loses little.
WRITE_BATCH = 512

Progress = Callable[[dict[str, Any]], None]


class IngestError(Exception):
    """Ingest cannot run at all; `reason` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class IngestResult:
    collection: str
    revision: str
    documents: int = 0  # documents stored after the run
    chunks: int = 0  # chunks stored after the run
    bytes: int = 0  # bytes of source documents read
    embedding_dimension: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    embedded_chunks: int = 0  # chunks embedded by this run (the cost of the re-index)
    failed_documents: list[FailedDocument] = field(default_factory=list)
    finished_at: str = ""

    def to_json(self, limit: int | None = None) -> str:
        data = asdict(self)
        data["failed_document_count"] = len(self.failed_documents)  # also when the list is cut below
        if limit is not None:  # a Kubernetes termination message holds 4 KiB
            data = shrink_lists(data, {"failed_documents": "failedDocumentsTruncated"}, limit)
        return json.dumps(data)


def config_digest(spec: KnowledgeBaseSpec) -> str:
    """The parts of the spec that change the stored chunks (not batch size, not the index)."""
    return json.dumps(
        {
            "chunking": spec.chunking.model_dump(mode="json"),
            "model": spec.embedding.model,
            "normalize": spec.embedding.normalize,
        },
        sort_keys=True,
    )


@dataclass
class _Pending:
    doc: SourceDocument
    doc_hash: str
    title: str
    chunks: list[Chunk]
    replaces: bool  # an older version is stored and must go once this one is complete
    kept: str  # what a failure to store it adds: that the version stored before stays


# A batch embedded: each document with its rows.
_Batch = list[tuple[_Pending, list[dict[str, Any]]]]


class Indexer:
    def __init__(
        self,
        spec: KnowledgeBaseSpec,
        store: ChunkStore,
        embedder: TextEmbedder,
        *,
        revision: str = "",
        progress: Progress | None = None,
        write_batch: int = WRITE_BATCH,
    ) -> None:
        self.spec = spec
        self.store = store
        self.embedder = embedder
        self.revision = revision
        self.progress = progress or (lambda event: None)
        self._digest = config_digest(spec)
        self.write_batch = write_batch
        self._unstored: list[tuple[_Pending, str]] = []  # written by the writer thread, read after it

    def run(self, reads: Iterable[SourceReading]) -> IngestResult:
        """Index `reads` (a lazy iterable of lazy SourceStreams is read as it is indexed)."""
        spec = self.spec
        if spec.chunking.size > self.embedder.max_tokens:
            raise IngestError(
                "ChunkSizeTooLarge",
                f"chunking.size {spec.chunking.size} exceeds the {self.embedder.max_tokens} tokens "
                f"{spec.embedding.model} reads; longer chunks would be cut off unembedded",
            )
        self.store.check_spec(spec.index, spec.search.keyword)
        with _Writer() as writer:
            return self._run(reads, writer)

    def _run(self, reads: Iterable[SourceReading], writer: _Writer) -> IngestResult:
        spec = self.spec
        if self.store.exists():
            self.store.ensure(self.embedder.dimension, spec.index, spec.search.keyword)
            stored = self.store.documents()
        else:
            # Creating the collection (index built, collection loaded) takes about a second, mostly
            # waiting on Milvus: it happens while the first batch is parsed and embedded.
            writer.submit(self.store.ensure, self.embedder.dimension, spec.index, spec.search.keyword)
            stored = {}
        result = IngestResult(
            self.store.collection, self.revision, embedding_dimension=self.embedder.dimension
        )
        self.progress({"stage": "planning", "stored": len(stored)})
        seen: set[str] = set()  # documents still at their source: read, or failed to read
        incomplete: set[str] = set()
        read_failures: list[FailedDocument] = []
        pending: list[_Pending] = []
        done = 0
        for read in reads:
            count = 0
            for doc in read.documents:  # a stream reads the next document only now
                if doc.doc_id in seen:
                    continue  # listed twice (the same URL twice): indexed once
                seen.add(doc.doc_id)
                count += 1
                done += 1
                result.bytes += len(doc.data)
                doc_hash = doc.content_hash(self._digest)
                before = stored.get(doc.doc_id)
                if before is not None and before.complete and before.doc_hash == doc_hash:
                    result.unchanged += 1
                    continue
                item = self._prepare(doc, doc_hash, before, result)
                if item is None:
                    continue
                pending.append(item)
                if sum(len(p.chunks) for p in pending) >= self.write_batch:
                    writer.submit(self._store, self._rows(pending, result))
                    pending = []
                    self.progress(
                        {"stage": "indexing", "documentsDone": done, "chunksEmbedded": result.embedded_chunks}
                    )
            read_failures += read.failures
            # A document that could not be read still exists at its source: its old chunks stay.
            seen |= {f.doc_id for f in read.failures}
            if not read.complete:
                incomplete.add(read.name)
            self.progress(
                {
                    "stage": "read",
                    "source": read.name,
                    "documents": count,
                    "failed": len(read.failures),
                    "complete": read.complete,
                }
            )
        if pending:
            writer.submit(self._store, self._rows(pending, result))
        writer.wait()
        for item, reason in self._unstored:
            if item.replaces:
                result.updated -= 1
            else:
                result.added -= 1
            result.failed_documents.append(
                FailedDocument(item.doc.source, item.doc.local_id, f"cannot be stored: {reason}{item.kept}")
            )
        self._unstored = []
        result.failed_documents = read_failures + result.failed_documents
        result.removed = self._remove_missing(seen, incomplete, stored)
        self.store.flush()
        final = self.store.documents()
        self.store.prune_label_sets()  # the label sets searches filter on: those of the stored chunks
        result.documents = len(final)
        result.chunks = sum(d.present for d in final.values())
        result.finished_at = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.progress({"stage": "done", "documents": result.documents, "chunks": result.chunks})
        return result

    def _prepare(
        self, doc: SourceDocument, doc_hash: str, before: StoredDocument | None, result: IngestResult
    ) -> _Pending | None:
        kept = " (the previously indexed version stays searchable)" if before else ""

        def failed(reason: str) -> None:
            # Named within its source, as source failures are: the same stored document (see _remove_missing).
            result.failed_documents.append(FailedDocument(doc.source, doc.local_id, reason + kept))

        if len(doc.data) > MAX_DOCUMENT_BYTES:
            failed(f"{len(doc.data)} bytes is more than the {MAX_DOCUMENT_BYTES} a document may have")
            return None
        # What the collection's schema cannot hold would fail the whole write batch: refused here, alone.
        if len(doc.access_labels) > MAX_LABELS:
            failed(f"{len(doc.access_labels)} access labels; at most {MAX_LABELS}")
            return None
        if any(len(label.encode("utf-8", "surrogatepass")) > MAX_LABEL for label in doc.access_labels):
            failed(f"an access label longer than {MAX_LABEL} bytes")
            return None
        metadata_bytes = len(json.dumps(doc.metadata, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        if metadata_bytes > MAX_METADATA_BYTES:
            failed(f"metadata of {metadata_bytes} bytes (as JSON); at most {MAX_METADATA_BYTES}")
            return None
        if len(doc.source.encode()) > MAX_SOURCE:
            failed(f"a source name longer than {MAX_SOURCE} bytes")
            return None
        try:
            parsed = parse(doc)
        except ParseError as e:
            failed(str(e))
            return None
        chunks = chunk(parsed, self.spec.chunking, self.embedder.token_offsets)
        if not chunks:
            failed("no text to index after chunking")
            return None
        if before is None:
            result.added += 1
        else:
            result.updated += 1
        # The bytes are parsed: the batch keeps the chunks, not the document.
        doc = dataclasses.replace(doc, data=b"")
        return _Pending(doc, doc_hash, parsed.title, chunks, replaces=before is not None, kept=kept)

    def _rows(self, pending: list[_Pending], result: IngestResult) -> _Batch:
        """Embed a batch: each document with its rows, every value fitted to its field."""
        texts = [c.text for p in pending for c in p.chunks]
        vectors = self.embedder.embed(texts)
        result.embedded_chunks += len(texts)
        batch: _Batch = []
        row = 0
        for item in pending:
            doc = item.doc
            rows: list[dict[str, Any]] = []
            for c in item.chunks:
                rows.append(
                    {
                        "id": chunk_id(doc.doc_id, item.doc_hash, c.index),
                        "vector": vectors[row].tolist(),
                        "text": fit_utf8(c.text, MAX_TEXT),
                        "doc_id": doc.doc_id,
                        "doc_hash": item.doc_hash,
                        "source": doc.source,
                        "uri": fit_utf8(doc.uri, MAX_URI),
                        "title": fit_utf8(item.title, MAX_TITLE),
                        "heading": fit_utf8(c.heading, MAX_HEADING),
                        "chunk_index": c.index,
                        "chunk_count": len(item.chunks),
                        "start": c.start,
                        "end": c.end,
                        "page": c.page if c.page is not None else -1,
                        "access_labels": list(doc.access_labels),
                        "public": not doc.access_labels,
                        "metadata": doc.metadata,
                    }
                )
                row += 1
            batch.append((item, rows))
        return batch

    def _store(self, batch: _Batch) -> None:
        """Write a batch (on the writer thread). A write Milvus refuses is tried again one document at a
        time: the document it refuses fails alone (its stored version stays), unless Milvus itself is
        failing (it then does not answer a plain question either): that error ends the run."""
        try:
            self._write(batch)
        except Exception as error:
            for one in batch:
                try:  # upserts: part of the batch may be stored already, and an insert would duplicate it
                    self._write([one], upsert_all=True)
                except Exception as e:
                    if not self._store_answers():
                        raise error from None
                    self._unstored.append((one[0], f"{type(e).__name__}: {e}"))

    def _write(self, batch: _Batch, *, upsert_all: bool = False) -> None:
        # Documents never stored before are inserted (cheaper in Milvus than upserts); anything that
        # may already have rows (a new version, or a run interrupted mid-document) is upserted.
        fresh = [] if upsert_all else [r for item, rows in batch if not item.replaces for r in rows]
        self.store.insert(fresh)
        self.store.upsert([r for item, rows in batch if upsert_all or item.replaces for r in rows])
        for item, _ in batch:
            if item.replaces:  # only now, with every new chunk stored, the old version goes
                self.store.delete_document(item.doc.doc_id, keep_hash=item.doc_hash)

    def _store_answers(self) -> bool:
        try:
            return self.store.exists()
        except Exception:
            return False

    def _remove_missing(self, seen: set[str], incomplete: set[str], stored: dict[str, StoredDocument]) -> int:
        removed = 0
        for doc_id in stored:
            # Also removes documents of sources no longer in the spec.
            if doc_id in seen or doc_id.split("/", 1)[0] in incomplete:
                continue
            self.store.delete_document(doc_id)
            removed += 1
        return removed


class _Writer:
    """Store calls run in order on one thread, so Milvus writes a batch while the next one embeds.

    At most one call runs behind the caller: `submit` first waits for the previous call (and raises its
    error), which bounds memory to two batches and stops a failing ingest one batch later.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tandem-store-writer")
        self._last: Future[None] | None = None

    def submit(self, call: Callable[..., None], *args: Any) -> None:
        self.wait()
        self._last = self._pool.submit(call, *args)

    def wait(self) -> None:
        last, self._last = self._last, None
        if last is not None:
            last.result()

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        # An ingest that fails on the caller's side still lets the running write finish: chunk ids are
        # deterministic, so a half-written batch is redone by the next run, not duplicated.
        self._pool.shutdown(wait=True)
