"""Incremental, resumable indexing of a KnowledgeBase's documents into its collection.

A document is re-embedded only when its content hash (content, format, title, labels, metadata and the
chunking/embedding configuration) differs from what is stored. Chunk ids are deterministic, so a run
killed halfway and started again overwrites what it had written instead of duplicating it; a
document's previous chunks are deleted only after all its new chunks are stored, so a reader never sees
a document vanish while it is being replaced. Documents absent from a source that was read completely
are deleted; a source that could not be read keeps what it had.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from tandem.api.v1alpha1.knowledgebase import KnowledgeBaseSpec

from ..reporting import shrink_lists
from .chunking import Chunk, chunk
from .documents import FailedDocument, SourceDocument
from .embedding import TextEmbedder
from .parsing import ParseError, parse
from .sources import SourceRead
from .store import (
    MAX_HEADING,
    MAX_LABELS,
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
MAX_DOCUMENT_BYTES = 100_000_000

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

    def run(self, reads: list[SourceRead]) -> IngestResult:
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

    def _run(self, reads: list[SourceRead], writer: _Writer) -> IngestResult:
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
        documents = [d for read in reads for d in read.documents]
        result.failed_documents = [f for read in reads for f in read.failures]
        result.bytes = sum(len(d.data) for d in documents)
        self.progress({"stage": "planning", "documents": len(documents), "stored": len(stored)})

        pending: list[_Pending] = []
        for position, doc in enumerate(documents):
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
                writer.submit(self._store, *self._rows(pending, result))
                pending = []
                self.progress(
                    {
                        "stage": "indexing",
                        "documentsDone": position + 1,
                        "documents": len(documents),
                        "chunksEmbedded": result.embedded_chunks,
                    }
                )
        if pending:
            writer.submit(self._store, *self._rows(pending, result))
        writer.wait()
        result.removed = self._remove_missing(reads, stored)
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
        def failed(reason: str) -> None:
            kept = " (the previously indexed version stays searchable)" if before else ""
            local_id = doc.doc_id.split("/", 1)[1]  # source failures name documents within their source
            result.failed_documents.append(FailedDocument(doc.source, local_id, reason + kept))

        if len(doc.data) > MAX_DOCUMENT_BYTES:
            failed(f"{len(doc.data)} bytes is more than the {MAX_DOCUMENT_BYTES} a document may have")
            return None
        if len(doc.access_labels) > MAX_LABELS:
            failed(f"{len(doc.access_labels)} access labels; at most {MAX_LABELS}")
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
        return _Pending(doc, doc_hash, parsed.title, chunks, replaces=before is not None)

    def _rows(
        self, pending: list[_Pending], result: IngestResult
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[_Pending]]:
        """Embed a batch: the rows of documents never stored, the rows that may replace stored ones."""
        texts = [c.text for p in pending for c in p.chunks]
        vectors = self.embedder.embed(texts)
        result.embedded_chunks += len(texts)
        rows: list[dict[str, Any]] = []
        fresh: list[dict[str, Any]] = []
        row = 0
        for item in pending:
            doc = item.doc
            for c in item.chunks:
                (rows if item.replaces else fresh).append(
                    {
                        "id": chunk_id(doc.doc_id, item.doc_hash, c.index),
                        "vector": vectors[row].tolist(),
                        "text": c.text[:MAX_TEXT],
                        "doc_id": doc.doc_id,
                        "doc_hash": item.doc_hash,
                        "source": doc.source,
                        "uri": doc.uri[:MAX_URI],
                        "title": item.title[:MAX_TITLE],
                        "heading": c.heading[:MAX_HEADING],
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
        return fresh, rows, pending

    def _store(
        self, fresh: list[dict[str, Any]], rows: list[dict[str, Any]], pending: list[_Pending]
    ) -> None:
        # Documents never stored before are inserted (cheaper in Milvus than upserts); anything that
        # may already have rows (a new version, or a run interrupted mid-document) is upserted.
        self.store.insert(fresh)
        self.store.upsert(rows)
        for item in pending:
            if item.replaces:  # only now, with every new chunk stored, the old version goes
                self.store.delete_document(item.doc.doc_id, keep_hash=item.doc_hash)

    def _remove_missing(self, reads: list[SourceRead], stored: dict[str, StoredDocument]) -> int:
        seen = {d.doc_id for read in reads for d in read.documents}
        # A document that failed to parse still exists at its source: its old chunks stay.
        seen |= {f"{f.source}/{f.document}" for read in reads for f in read.failures}
        incomplete = {read.name for read in reads if not read.complete}
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
