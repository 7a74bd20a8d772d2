"""KnowledgeBase ingest and retrieval on milvus-lite with the real embedding model.

Mixed formats in, citations out; incremental re-index re-embeds only what changed; removed documents
go; bad input is reported without losing what was indexed; a killed ingest resumes exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tandem.api.v1alpha1 import KnowledgeBaseSpec
from tandem.workloads.knowledge.embedding import Embedder
from tandem.workloads.knowledge.indexer import Indexer, IngestError, IngestResult
from tandem.workloads.knowledge.retrieval import Principal, Retriever
from tandem.workloads.knowledge.sources import read_source
from tandem.workloads.knowledge.store import ChunkStore, StoreError
from tests.corpus import write_handbook
from tests.integration.killed_ingest import check_killed_ingest_resumes

pytestmark = pytest.mark.integration

COLLECTION = "tandem_test__handbook"


def kb_spec(docs: Path, **overrides: Any) -> KnowledgeBaseSpec:
    raw: dict[str, Any] = {
        "sources": [
            {"name": "handbook", "directory": {"path": str(docs)}},
            {
                "name": "security",
                "inline": {
                    "documents": [{"id": "vault", "title": "Vault", "text": "The vault code is 4451."}]
                },
                "accessLabels": ["security"],
            },
        ],
        "chunking": {"size": 64, "overlap": 8},
    }
    raw.update(overrides)
    return KnowledgeBaseSpec.model_validate(raw)


def ingest(spec: KnowledgeBaseSpec, store: ChunkStore, embedder: Embedder) -> IngestResult:
    reads = [read_source(source) for source in spec.sources]
    return Indexer(spec, store, embedder).run(reads)


@pytest.fixture()
def docs(tmp_path: Path) -> Path:
    return write_handbook(tmp_path / "docs")


@pytest.fixture()
def store(tmp_path: Path) -> ChunkStore:
    return ChunkStore(str(tmp_path / "milvus.db"), COLLECTION)


def ask(store: ChunkStore, embedder: Embedder, question: str, groups: tuple[str, ...] = ()) -> list[Any]:
    retriever = Retriever(store, embedder)
    return retriever.search(question, 3, Principal("t", groups), consistency="Strong").passages


def test_mixed_formats_are_indexed_and_cited(docs: Path, store: ChunkStore, embedder: Embedder) -> None:
    result = ingest(kb_spec(docs), store, embedder)
    assert (result.documents, result.added, result.failed_documents) == (5, 5, [])
    assert result.chunks == result.embedded_chunks and result.embedding_dimension == 384

    [top, *_] = ask(store, embedder, "What is the travel desk code?")
    assert "QF-TRV-7" in top.text
    assert (top.doc_id, top.title, top.heading) == (
        "handbook/travel.md",
        "Travel policy",
        "Travel policy > Travel desk",
    )
    # The source and the path within it, never the machine's absolute path (issue 15, item 14).
    assert top.uri == "directory://handbook/travel.md" and top.end > top.start
    [pdf, *_] = ask(store, embedder, "What is the expense portal called?")
    assert "Ledgerly" in pdf.text and pdf.page == 2 and pdf.title == "Expense policy"
    [html, *_] = ask(store, embedder, "How many days of paid leave?")
    assert "27 days" in html.text and "tracking" not in html.text and html.title == "Leave policy"


def test_only_the_changed_document_is_reembedded(docs: Path, store: ChunkStore, embedder: Embedder) -> None:
    first = ingest(kb_spec(docs), store, embedder)
    unchanged = ingest(kb_spec(docs), store, embedder)
    assert (unchanged.embedded_chunks, unchanged.unchanged, unchanged.chunks) == (0, 5, first.chunks)

    (docs / "travel.md").write_text((docs / "travel.md").read_text().replace("QF-TRV-7", "QF-TRV-9"))
    second = ingest(kb_spec(docs), store, embedder)
    assert (second.updated, second.unchanged, second.added) == (1, 4, 0)
    # Only the travel document's chunks were embedded again.
    assert second.embedded_chunks == store.documents()["handbook/travel.md"].chunk_count < first.chunks
    assert second.chunks == first.chunks
    texts = " ".join(p.text for p in ask(store, embedder, "What is the travel desk code?"))
    assert "QF-TRV-9" in texts and "QF-TRV-7" not in texts


def test_removed_document_loses_its_chunks(docs: Path, store: ChunkStore, embedder: Embedder) -> None:
    ingest(kb_spec(docs), store, embedder)
    (docs / "cafe.txt").unlink()
    result = ingest(kb_spec(docs), store, embedder)
    assert result.removed == 1 and result.documents == 4
    assert "handbook/cafe.txt" not in store.documents()
    assert all(p.doc_id != "handbook/cafe.txt" for p in ask(store, embedder, "When does the cafeteria open?"))


def test_acl_hides_labelled_chunks_from_other_groups(
    docs: Path, store: ChunkStore, embedder: Embedder
) -> None:
    ingest(kb_spec(docs), store, embedder)
    assert all(p.doc_id != "security/vault" for p in ask(store, embedder, "vault code"))
    [top, *_] = ask(store, embedder, "vault code", groups=("security",))
    assert top.doc_id == "security/vault" and top.access_labels == ["security"]


def test_bad_documents_are_reported_and_lose_nothing(
    docs: Path, store: ChunkStore, embedder: Embedder
) -> None:
    ingest(kb_spec(docs), store, embedder)
    before = store.documents()
    (docs / "expenses.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (docs / "empty.md").write_text("   \n")
    (docs / "blob.txt").write_bytes(bytes(range(256)) * 4)
    result = ingest(kb_spec(docs), store, embedder)
    failed = {f.document: f.reason for f in result.failed_documents}
    assert set(failed) == {"expenses.pdf", "empty.md", "blob.txt"}
    assert "previously indexed version stays searchable" in failed["expenses.pdf"]
    assert "no text found" in failed["empty.md"] and "not text" in failed["blob.txt"]
    after = store.documents()
    assert after["handbook/expenses.pdf"] == before["handbook/expenses.pdf"]  # the old version is kept
    assert result.documents == 5 and result.removed == 0


def test_unreadable_source_keeps_what_it_had(docs: Path, store: ChunkStore, embedder: Embedder) -> None:
    ingest(kb_spec(docs), store, embedder)
    gone = docs.rename(docs.with_name("moved"))
    result = ingest(kb_spec(docs), store, embedder)
    assert result.removed == 0 and result.documents == 5
    assert [(f.document, "does not exist" in f.reason) for f in result.failed_documents] == [("*", True)]
    gone.rename(docs)


def test_wrong_dimension_for_existing_collection_is_refused(
    docs: Path, store: ChunkStore, embedder: Embedder
) -> None:
    from tandem.api.v1alpha1.knowledgebase import VectorIndex

    store.ensure(8, VectorIndex(), "auto")  # a collection made for another model
    with pytest.raises(StoreError) as err:
        ingest(kb_spec(docs), store, embedder)
    assert err.value.reason == "DimensionMismatch" and "384" in str(err.value)


def test_chunks_larger_than_the_model_reads_are_refused(
    docs: Path, store: ChunkStore, embedder: Embedder
) -> None:
    with pytest.raises(IngestError) as err:
        ingest(kb_spec(docs, chunking={"size": 1000, "overlap": 0}), store, embedder)
    assert err.value.reason == "ChunkSizeTooLarge"
    assert not store.exists()  # nothing was created for a spec that cannot work


def test_killed_ingest_resumes_with_exact_counts(tmp_path: Path) -> None:
    check_killed_ingest_resumes(tmp_path, str(tmp_path / "kb.db"), COLLECTION, documents=40)


def test_mmr_rerank_trades_duplicates_for_new_information(tmp_path: Path, embedder: Embedder) -> None:
    from tandem.api.v1alpha1.knowledgebase import Search

    same = "The travel desk code is QF-TRV-7; use it when booking trains."
    documents = [{"id": f"copy{i}", "text": same + " " * i} for i in range(3)]
    documents.append({"id": "other", "text": "Travel bookings need two working days of notice at the desk."})
    spec = KnowledgeBaseSpec.model_validate({"sources": [{"name": "n", "inline": {"documents": documents}}]})
    store = ChunkStore(str(tmp_path / "m.db"), COLLECTION)
    ingest(spec, store, embedder)
    plain = Retriever(store, embedder, Search(keyword="off"))
    diverse = Retriever(store, embedder, Search(keyword="off", rerank=True, mmr_lambda=0.5))
    question = "Which travel desk code do I use when booking trains?"
    top_plain = [p.doc_id for p in plain.search(question, 2, Principal("t"), consistency="Strong").passages]
    result = diverse.search(question, 2, Principal("t"), consistency="Strong")
    assert all(d.startswith("n/copy") for d in top_plain)  # relevance alone returns two copies
    assert "n/other" in [p.doc_id for p in result.passages] and "rerank" in result.timings
