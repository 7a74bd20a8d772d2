"""Access control as a property: over random principals, labels, queries and filters, no search ever
returns a chunk whose labels the principal lacks (public chunks, without labels, are for everyone)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tandem.api.v1alpha1 import KnowledgeBaseSpec
from tandem.api.v1alpha1.knowledgebase import VectorIndex
from tandem.workloads.knowledge.embedding import Embedder
from tandem.workloads.knowledge.indexer import Indexer
from tandem.workloads.knowledge.retrieval import Principal, Retriever
from tandem.workloads.knowledge.sources import read_source
from tandem.workloads.knowledge.store import ChunkStore, chunk_id, key_acl_filter, label_set_key

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


# -- the label encoding: acl_key and the recorded label sets (run on the Milvus server too, from
# test_knowledge_server.py, with that module's `store` fixture) ------------------------------------------

HOSTILE = [
    'x", "b',
    '"] or public == false or acl_key in ["',
    "a,b",
    "ünïcødé 機密",
    "back\\slash",
    "new\nline\ttab",
]


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[ChunkStore]:
    store = ChunkStore(str(tmp_path / "milvus.db"), "tandem_acl__labels")
    yield store
    store.close()


def labelled_spec(labels: dict[str, list[str]]) -> KnowledgeBaseSpec:
    """One source per entry, with one short document and those labels, and a public source."""
    sources = [{"name": "public", "inline": {"documents": [{"id": "p", "text": "Open note about lunch."}]}}]
    for n, (name, source_labels) in enumerate(labels.items()):
        text = f"Restricted note {n} about the {name} vault."
        sources.append(
            {
                "name": name,
                "inline": {"documents": [{"id": "d", "text": text}]},
                "accessLabels": source_labels,
            }
        )
    return KnowledgeBaseSpec.model_validate({"sources": sources, "chunking": {"size": 32, "overlap": 0}})


def ingest(spec: KnowledgeBaseSpec, store: ChunkStore, embedder: Embedder) -> None:
    Indexer(spec, store, embedder).run([read_source(s) for s in spec.sources])


def visible_sources(store: ChunkStore, embedder: Embedder, groups: tuple[str, ...], **kw: Any) -> set[str]:
    passages = Retriever(store, embedder).search("note vault", 50, Principal("t", groups), **kw).passages
    return {p.source for p in passages}


def test_a_chunk_labelled_a_and_b_is_seen_with_b_not_c(store: ChunkStore, embedder: Embedder) -> None:
    ingest(labelled_spec({"ab": ["a", "b"], "c-only": ["c"]}), store, embedder)
    assert store.label_keyed
    assert store.label_sets(fresh=True) == {
        label_set_key(["a", "b"]): frozenset({"a", "b"}),
        label_set_key(["c"]): frozenset({"c"}),
    }
    expression = store.acl_filter(("b",))
    assert "acl_key in" in expression and "array_contains" not in expression
    strong = {"consistency": "Strong"}
    assert visible_sources(store, embedder, ("b",), **strong) == {"public", "ab"}
    assert visible_sources(store, embedder, ("a", "zzz"), **strong) == {"public", "ab"}
    assert visible_sources(store, embedder, ("c",), **strong) == {"public", "c-only"}
    assert visible_sources(store, embedder, ("d",), **strong) == {"public"}
    assert visible_sources(store, embedder, (), **strong) == {"public"}


def test_hostile_label_names_are_data_not_filter_syntax(store: ChunkStore, embedder: Embedder) -> None:
    labels = {f"h{n}": [label] for n, label in enumerate(HOSTILE)} | {"two": ["b", HOSTILE[3]]}
    ingest(labelled_spec(labels), store, embedder)
    callers = [(label,) for label in HOSTILE] + [("b",), ("a",), ("x",), ("a", "b"), ('"',), ("",), ("*",)]
    for groups in callers:
        expected = {"public"} | {name for name, given in labels.items() if set(given) & set(groups)}
        assert visible_sources(store, embedder, groups, consistency="Strong") == expected, groups
        for label in groups:
            assert len(label) < 3 or label not in store.acl_filter(groups)  # only digests are written


def test_label_changes_are_searchable_at_once_and_old_sets_are_forgotten(
    store: ChunkStore, embedder: Embedder
) -> None:
    ingest(labelled_spec({"s": ["a"]}), store, embedder)
    assert visible_sources(store, embedder, ("a",), consistency="Strong") == {"public", "s"}
    ingest(labelled_spec({"s": ["b"]}), store, embedder)  # the source's labels change: re-indexed
    assert store.label_sets(fresh=True) == {label_set_key(["b"]): frozenset({"b"})}
    assert visible_sources(store, embedder, ("b",), consistency="Strong") == {"public", "s"}
    assert visible_sources(store, embedder, ("a",), consistency="Strong") == {"public"}


def test_an_older_copy_of_the_label_sets_never_widens_access(store: ChunkStore, embedder: Embedder) -> None:
    """A searcher whose copy predates a label change misses the new set; it never sees what it lost."""
    ingest(labelled_spec({"s": ["a"], "t": ["b"]}), store, embedder)
    old = store.label_sets()
    assert old is not None
    ingest(labelled_spec({"s": ["b"], "t": ["b"]}), store, embedder)
    for groups in [("a",), ("b",), ("a", "b")]:
        hits = store.dense_search(
            embedder.embed(["vault"])[0], 50, f"({key_acl_filter(groups, old)})", consistency="Strong"
        )
        assert all(not p.access_labels or set(p.access_labels) & set(groups) for p in hits), groups


def test_a_collection_without_acl_key_is_searched_with_the_label_array(
    store: ChunkStore, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Collections created before acl_key keep working: their chunks are written and searched as before."""
    older = ChunkStore(store.uri, store.collection)  # the same collection, created as Tandem did before
    create_schema = older.client.create_schema

    def older_schema(**kwargs: Any) -> Any:
        schema = create_schema(**kwargs)
        add_field = schema.add_field
        schema.add_field = lambda name, *a, **k: schema if name == "acl_key" else add_field(name, *a, **k)
        return schema

    monkeypatch.setattr(older.client, "create_schema", older_schema)
    spec = labelled_spec({})
    older.ensure(embedder.dimension, spec.index, spec.search.keyword)
    labels = {"ab": ["a", "b"], "hostile": [HOSTILE[0], HOSTILE[3]]}
    ingest(labelled_spec(labels), store, embedder)
    assert not store.label_keyed and store.label_sets() is None
    assert "array_contains_any" in store.acl_filter(("b",))
    strong = {"consistency": "Strong"}
    assert visible_sources(store, embedder, ("b",), **strong) == {"public", "ab"}
    assert visible_sources(store, embedder, ("c",), **strong) == {"public"}
    assert visible_sources(store, embedder, (HOSTILE[3],), **strong) == {"public", "hostile"}
    assert visible_sources(store, embedder, ("x",), **strong) == {"public"}
    ingest(labelled_spec({**labels, "c": ["c"]}), store, embedder)  # a later ingest writes as before
    assert visible_sources(store, embedder, ("c",), **strong) == {"public", "c"}


def test_filter_literals_read_back_exactly(store: ChunkStore) -> None:
    """Document ids (and filter values) with quotes, backslashes, control characters and non-ASCII text
    select exactly their own rows (json.dumps escapes made milvus-lite refuse every non-ASCII one)."""
    names = [
        *HOSTILE,
        "café/menü.md",
        'q"uote',
        "tab\there",
        "bell\x07",
        "nul\x00",
        "€ 𝄞 emoji 🙂",
        "x' or '1'='1",
    ]
    store.ensure(4, VectorIndex(type="FLAT"), "off")
    rows = []
    for n, doc_id in enumerate(names):
        row = dict.fromkeys(("text", "doc_hash", "source", "uri", "title", "heading"), "x")
        row |= {"id": chunk_id(doc_id, "h", 0), "vector": [1.0, float(n), 0.5, 0.0], "doc_id": doc_id}
        row |= {"chunk_index": 0, "chunk_count": 1, "start": 0, "end": 1, "page": -1}
        rows.append(row | {"access_labels": [doc_id], "metadata": {}})
    store.insert(rows)
    store.flush()
    for doc_id in names:
        assert [r["title"] for r in store.document_chunks(doc_id)] == ["x"], doc_id
    store.delete_document(names[3])
    assert store.document_chunks(names[3]) == [] and len(store.documents()) == len(names) - 1


@pytest.fixture(scope="module")
def hostile_retriever(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[Retriever]:
    """As `retriever`, with label names that look like filter syntax, unicode and separators."""
    rng = random.Random(11)
    pool = [*HOSTILE, *GROUPS]
    spec = labelled_spec({f"s{n}": rng.sample(pool, rng.randint(1, 3)) for n in range(10)})
    store = ChunkStore(str(tmp_path_factory.mktemp("acl-hostile") / "milvus.db"), "tandem_acl__hostile")
    ingest(spec, store, embedder)
    yield Retriever(store, embedder)
    store.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(groups=st.lists(st.sampled_from([*HOSTILE, *GROUPS, "nobody", "b", "a"]), max_size=3, unique=True))
def test_hostile_labels_give_exactly_public_plus_the_callers_own(
    hostile_retriever: Retriever, groups: list[str]
) -> None:
    everyone = [*HOSTILE, *GROUPS]
    every = hostile_retriever.search("note", 200, Principal("admin", tuple(everyone)), consistency="Strong")
    assert len({p.source for p in every.passages}) == 11  # the public source and the 10 labelled ones
    expected = {p.id for p in every.passages if not p.access_labels or set(p.access_labels) & set(groups)}
    found = hostile_retriever.search("note", 200, Principal("t", tuple(groups)), consistency="Strong")
    assert {p.id for p in found.passages} == expected
