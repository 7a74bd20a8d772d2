"""The cost of making one new fact answerable, measured: re-index the document that holds it, or retrain
the adapter. Re-indexing is timed now, on a scratch milvus-lite collection (chunk, embed, write one
document with the knowledge base's own settings); retraining is the adapter's last recorded run."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tandem.api.v1alpha1 import KnowledgeBaseSpec
from tandem.workloads.knowledge.documents import SourceDocument
from tandem.workloads.knowledge.embedding import Embedder
from tandem.workloads.knowledge.indexer import Indexer
from tandem.workloads.knowledge.sources import SourceRead
from tandem.workloads.knowledge.store import ChunkStore

from .job import KnowledgeBaseInfo, RetrainInfo
from .questions import document_matches
from .records import Question, UpdateCost


def pick_document(questions: Sequence[Question]) -> str | None:
    """The document of a fresh fact when the set has one (that is the update being priced), else any."""
    fresh = [q for q in questions if q.kind == "fresh" and q.documents]
    named = fresh or [q for q in questions if q.documents]
    return named[0].documents[0] if named else None


def rebuild_text(chunks: Sequence[dict[str, object]]) -> str:
    """A document's text from its overlapping chunks (each chunk's offsets say where it starts)."""
    text, end = "", 0
    for chunk in chunks:
        start, body = int(str(chunk["start"])), str(chunk["text"])
        skip = max(0, end - start)
        text += body[skip:] if skip < len(body) else ""
        end = max(end, start + len(body))
    return text


def measure(
    questions: Sequence[Question],
    knowledge_bases: Sequence[KnowledgeBaseInfo],
    retrain: Sequence[RetrainInfo],
    adapters_used: Sequence[str],
) -> UpdateCost:
    notes: list[str] = []
    cost = UpdateCost(None, None, None, None, None, notes)
    trained = [r for r in retrain if r.adapter in adapters_used]
    if trained:
        cost.adapter, cost.retrain_seconds = trained[0].adapter, trained[0].seconds
        if cost.retrain_seconds is None:
            notes.append(f"adapter {trained[0].adapter}: no training run time recorded")
    else:
        notes.append("no strategy uses an adapter trained by an AdapterTraining: nothing to retrain")
    reference = pick_document(questions)
    if reference is None:
        notes.append("no question names a supporting document: nothing to re-index")
        return cost
    if not any(kb.spec for kb in knowledge_bases):
        notes.append("the knowledge bases' settings were not given: the re-index cannot be timed like theirs")
        return cost
    for kb in knowledge_bases:
        if kb.spec is None:
            continue
        token = Path(kb.token_file).read_text().strip() if kb.token_file else None
        store = ChunkStore(kb.milvus_uri, kb.collection, token=token, database=kb.database)
        try:
            doc_id = next((d for d in store.documents() if document_matches(reference, d)), None)
            chunks = store.document_chunks(doc_id) if doc_id else []
        finally:
            store.close()
        if doc_id and chunks:
            cost.document = doc_id
            _time_reindex(cost, kb.spec, doc_id, chunks)
            return cost
    notes.append(f"document {reference!r} was not found in the endpoint's knowledge bases")
    return cost


def _time_reindex(
    cost: UpdateCost, spec: KnowledgeBaseSpec, doc_id: str, chunks: list[dict[str, object]]
) -> None:
    source = doc_id.split("/", 1)[0]
    document = SourceDocument(
        source=source,
        doc_id=doc_id,
        uri=str(chunks[0].get("uri") or doc_id),
        data=rebuild_text(chunks).encode(),
        format="text",
        title=str(chunks[0].get("title") or "") or None,
    )
    started = time.perf_counter()
    embedder = Embedder(
        spec.embedding.model, batch_size=spec.embedding.batch_size, normalize=spec.embedding.normalize
    )
    embedder.embed(["warm up"])
    cost.model_load_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="tandem-update-cost-") as scratch:
        store = ChunkStore(str(Path(scratch) / "scratch.db"), "update_cost")
        try:
            store.ensure(embedder.dimension, spec.index, spec.search.keyword)
            started = time.perf_counter()
            Indexer(spec, store, embedder).run([SourceRead(source, [document])])
            cost.reindex_seconds = time.perf_counter() - started
        finally:
            store.close()
