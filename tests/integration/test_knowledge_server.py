"""KnowledgeBase ingest and retrieval on a real Milvus server: the standalone 2.3.5 of the PyPI `milvus`.

The milvus-lite behaviour tests run here again against the server (imported below: same assertions,
the `store` fixture of this module), then what differs on Milvus 2.3: no BM25 in Milvus (keyword search
falls back to the client, and `keyword: bm25` is refused), no HNSW_SQ, and an ingest killed halfway
resumes exactly on a server that reads its own writes only with Strong consistency.

The server binds every interface: these tests skip unless run in a private network namespace
(scripts/isolated.sh .venv/bin/pytest ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tandem.api.v1alpha1.knowledgebase import VectorIndex
from tandem.workloads.knowledge.embedding import Embedder
from tandem.workloads.knowledge.retrieval import Principal, Retriever
from tandem.workloads.knowledge.store import ChunkStore, StoredDocument, StoreError, chunk_id
from tests.corpus import write_handbook
from tests.integration.killed_ingest import check_killed_ingest_resumes
from tests.integration.milvus_server import milvus_server_fixture  # noqa: F401  (the milvus_uri fixture)
from tests.integration.test_knowledge_acl import (  # noqa: F401  (the label encoding's tests, on the server)
    test_a_chunk_labelled_a_and_b_is_seen_with_b_not_c,
    test_a_collection_without_acl_key_is_searched_with_the_label_array,
    test_an_older_copy_of_the_label_sets_never_widens_access,
    test_filter_literals_read_back_exactly,
    test_hostile_label_names_are_data_not_filter_syntax,
    test_label_changes_are_searchable_at_once_and_old_sets_are_forgotten,
)
from tests.integration.test_knowledge_lite import (  # noqa: F401  (the lite tests, run on the server)
    ingest,
    kb_spec,
    test_acl_hides_labelled_chunks_from_other_groups,
    test_mixed_formats_are_indexed_and_cited,
    test_only_the_changed_document_is_reembedded,
    test_removed_document_loses_its_chunks,
    test_wrong_dimension_for_existing_collection_is_refused,
)
from tests.isolation import requires_private_network

pytestmark = [pytest.mark.integration, requires_private_network]

DOCUMENTS = 24  # for the killed ingest: fewer than the lite test (40), the server is slower to write


def collection_for(request: pytest.FixtureRequest) -> str:
    return "tandem_test__" + re.sub(r"\W", "_", request.node.name)[:200]


@pytest.fixture()
def docs(tmp_path: Path) -> Path:
    return write_handbook(tmp_path / "docs")


@pytest.fixture()
def store(milvus_uri: str, request: pytest.FixtureRequest) -> Iterator[ChunkStore]:
    """A fresh collection per test on the session's server."""
    store = ChunkStore(milvus_uri, collection_for(request))
    store.drop()
    yield store
    store.drop()
    store.close()


def test_the_server_is_told_apart_from_milvus_lite(store: ChunkStore) -> None:
    # It calls itself "v2.3.5-lite": being milvus-lite is decided by the URI and a "milvus_lite-" version.
    assert "2.3.5" in store.server_version
    assert not store.is_lite and not store.supports_bm25 and "HNSW_SQ" not in store.supported_indexes()


def test_a_scan_right_after_a_write_sees_it(store: ChunkStore) -> None:
    """What the indexer stored a moment ago is what `documents` reports (the query iterator alone reads
    at Bounded consistency on Milvus 2.3, up to 5 s behind, and reported nothing here)."""

    def rows(doc_id: str, doc_hash: str, count: int) -> list[dict[str, Any]]:
        return [
            {
                "id": chunk_id(doc_id, doc_hash, i),
                "vector": [1.0, float(i), 0.5, 0.0],
                "text": f"{doc_id} part {i}",
                "doc_id": doc_id,
                "doc_hash": doc_hash,
                "source": "s",
                "uri": "",
                "title": "",
                "heading": "",
                "chunk_index": i,
                "chunk_count": count,
                "start": 0,
                "end": 1,
                "page": -1,
                "access_labels": [],
                "public": True,
                "metadata": {},
            }
            for i in range(count)
        ]

    store.ensure(4, VectorIndex(), "auto")
    store.upsert(rows("s/a", "h1", 3) + rows("s/b", "h1", 2))
    assert store.documents() == {"s/a": StoredDocument("h1", 3, 3), "s/b": StoredDocument("h1", 2, 2)}
    store.upsert(rows("s/a", "h2", 2))
    store.delete_document("s/a", keep_hash="h2")
    store.delete_document("s/b")
    assert store.documents() == {"s/a": StoredDocument("h2", 2, 2)}


def test_keyword_search_falls_back_to_the_client_and_finds_exact_codes(
    docs: Path, store: ChunkStore, embedder: Embedder
) -> None:
    ingest(kb_spec(docs), store, embedder)
    result = Retriever(store, embedder).search("QF-TRV-7", 3, Principal("t"), consistency="Strong")
    assert result.keyword == "client-bm25" and not store.keyword_in_milvus
    [top, *_] = result.passages
    assert "QF-TRV-7" in top.text and top.keyword_rank == 0 and top.doc_id == "handbook/travel.md"


@pytest.mark.parametrize(
    ("overrides", "reason", "named"),
    [
        ({"index": {"type": "HNSW_SQ"}}, "IndexTypeUnsupported", "HNSW_SQ"),
        ({"search": {"keyword": "bm25"}}, "KeywordSearchUnsupported", "bm25"),
    ],
    ids=["hnsw-sq", "bm25"],
)
def test_what_milvus_23_lacks_is_refused_before_anything_is_created(
    docs: Path, store: ChunkStore, embedder: Embedder, overrides: dict[str, Any], reason: str, named: str
) -> None:
    with pytest.raises(StoreError) as err:
        ingest(kb_spec(docs, **overrides), store, embedder)
    assert err.value.reason == reason
    assert named in str(err.value) and "2.3.5" in str(err.value)  # names the server's version
    assert not store.exists()


def test_killed_ingest_resumes_with_exact_counts(
    tmp_path: Path, milvus_uri: str, request: pytest.FixtureRequest
) -> None:
    """As the lite test, on fewer documents (the server is slower to write)."""
    collection = collection_for(request)
    ChunkStore(milvus_uri, collection).drop()
    try:
        check_killed_ingest_resumes(tmp_path, milvus_uri, collection, documents=DOCUMENTS)
    finally:
        ChunkStore(milvus_uri, collection).drop()
