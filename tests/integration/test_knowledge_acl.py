"""Access control as a property: over random principals, labels, queries and filters, no search ever
returns a chunk whose labels the principal lacks (public chunks, without labels, are for everyone)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tandem.api.v1alpha1 import KnowledgeBaseSpec
from tandem.workloads.knowledge.embedding import Embedder
from tandem.workloads.knowledge.indexer import Indexer
from tandem.workloads.knowledge.retrieval import Principal, Retriever
from tandem.workloads.knowledge.sources import read_source
from tandem.workloads.knowledge.store import ChunkStore

pytestmark = pytest.mark.integration

GROUPS = ["staff", "finance", "security", "hr", "legal"]
TOPICS = ["salary", "vault", "contract", "holiday", "server", "budget", "audit", "badge", "lunch", "travel"]


@pytest.fixture(scope="module")
def retriever(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[Retriever]:
    rng = random.Random(7)
    sources = []
    for n in range(12):  # each source: a random label set (some empty: public), a few documents
        labels = rng.sample(GROUPS, rng.randint(0, 3))
        documents = [
            {"id": f"d{i}", "text": f"Note {n}.{i} about {rng.choice(TOPICS)} and {rng.choice(TOPICS)}."}
            for i in range(3)
        ]
        sources.append({"name": f"s{n}", "inline": {"documents": documents}, "accessLabels": labels})
    spec = KnowledgeBaseSpec.model_validate({"sources": sources, "chunking": {"size": 32, "overlap": 0}})
    path: Path = tmp_path_factory.mktemp("acl") / "milvus.db"
    store = ChunkStore(str(path), "tandem_acl__kb")
    Indexer(spec, store, embedder).run([read_source(s) for s in spec.sources])
    yield Retriever(store, embedder)
    store.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    groups=st.lists(st.sampled_from([*GROUPS, "nobody"]), max_size=3, unique=True),
    query=st.sampled_from(TOPICS).flatmap(lambda t: st.sampled_from([t, f"what about {t}?", f"{t} policy"])),
    top_k=st.integers(min_value=1, max_value=40),
    source_filter=st.one_of(st.none(), st.sampled_from([f"s{n}" for n in range(12)])),
)
def test_search_never_returns_a_chunk_the_caller_may_not_see(
    retriever: Retriever, groups: list[str], query: str, top_k: int, source_filter: str | None
) -> None:
    filters = {"source": source_filter} if source_filter else None
    result = retriever.search(query, top_k, Principal("t", tuple(groups)), filters, consistency="Strong")
    for passage in result.passages:
        assert not passage.access_labels or set(passage.access_labels) & set(groups), (groups, passage)
        if source_filter:
            assert passage.source == source_filter
    assert len(result.passages) <= top_k


def test_every_group_sees_exactly_public_plus_its_own(retriever: Retriever) -> None:
    """The filter is not just safe but exact: nothing the caller may see is hidden."""
    everything = retriever.search(
        "note", 200, Principal("admin", tuple(GROUPS)), consistency="Strong"
    ).passages
    for group in GROUPS:
        visible = {
            p.id
            for p in retriever.search("note", 200, Principal("t", (group,)), consistency="Strong").passages
        }
        expected = {p.id for p in everything if not p.access_labels or group in p.access_labels}
        assert visible == expected


def test_filters_cannot_widen_the_acl(retriever: Retriever) -> None:
    from tandem.workloads.knowledge.retrieval import FilterError

    with pytest.raises(FilterError):
        retriever.search("vault", 5, Principal("t"), {"public": "true"})
    sneaky = {"source": 's0" or public == false or source == "'}  # quoted as a literal, not code
    assert retriever.search("vault", 5, Principal("t"), sneaky, consistency="Strong").passages == []
