"""Search a KnowledgeBase for a caller: dense + keyword, fused by reciprocal rank, always ACL-filtered.

The caller's groups become a Milvus filter on every search (`ChunkStore.acl_filter`: the keys of the
collection's label sets that share a label with the groups), so a chunk whose labels the caller lacks is
never returned, whatever the query or the extra filters. Extra filters are equality tests on named
fields, built here (never a raw expression from a request), so they cannot widen the ACL.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from tandem.api.v1alpha1.knowledgebase import Search

from .embedding import Embedder
from .store import ChunkStore, Passage, lexical_rank, literal

FILTERABLE = ("source", "doc_id", "title")
_METADATA_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class Principal:
    """Who is asking: a tenant and the ACL groups it may read."""

    tenant: str
    groups: tuple[str, ...] = ()


@dataclass
class SearchResult:
    passages: list[Passage]
    keyword: str  # how keyword search ran: "milvus-bm25", "client-bm25" or "off"
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


class FilterError(ValueError):
    """A filter names a field that cannot be filtered on."""


def filter_expression(filters: Mapping[str, str] | None) -> str:
    parts = []
    for key, value in sorted((filters or {}).items()):
        if key in FILTERABLE:
            parts.append(f"{key} == {literal(value)}")
        elif key.startswith("metadata.") and _METADATA_KEY.match(key.removeprefix("metadata.")):
            parts.append(f"metadata[{literal(key.removeprefix('metadata.'))}] == {literal(value)}")
        else:
            raise FilterError(
                f"cannot filter on {key!r}: use one of {', '.join(FILTERABLE)} or metadata.<key>"
            )
    return " and ".join(parts)


class Retriever:
    """One KnowledgeBase's search, with its store and embedding model loaded once."""

    def __init__(self, store: ChunkStore, embedder: Embedder, search: Search | None = None) -> None:
        self.store = store
        self.embedder = embedder
        self.config = search or Search()
        store.load()

    def search(
        self,
        query: str,
        top_k: int,
        principal: Principal,
        filters: Mapping[str, str] | None = None,
        *,
        consistency: str = "Bounded",
    ) -> SearchResult:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        vector = self.embedder.embed([query])[0]
        timings["embed"] = time.perf_counter() - started

        acl = self.store.acl_filter(principal.groups, fresh=consistency == "Strong")
        expression = f"({acl})"
        extra = filter_expression(filters)
        if extra:
            expression += f" and ({extra})"
        candidates = max(top_k * 4, 20)
        started = time.perf_counter()
        dense = self.store.dense_search(vector, candidates, expression, consistency=consistency)
        timings["dense"] = time.perf_counter() - started

        keyword_mode = "off"
        keyword: list[Passage] = []
        if self.config.keyword != "off":
            started = time.perf_counter()
            if self.store.keyword_in_milvus:
                keyword = self.store.keyword_search(query, candidates, expression, consistency=consistency)
                keyword_mode = "milvus-bm25"
            else:
                keyword = lexical_rank(query, dense)
                keyword_mode = "client-bm25"
            timings["keyword"] = time.perf_counter() - started

        started = time.perf_counter()
        fused = reciprocal_rank_fusion(dense, keyword, self.config.rrf_k)
        timings["fuse"] = time.perf_counter() - started
        if self.config.rerank and len(fused) > 1:
            started = time.perf_counter()
            fused = self._mmr(vector, fused, top_k)
            timings["rerank"] = time.perf_counter() - started
        fused = fused[:top_k]
        return SearchResult(passages=fused, keyword=keyword_mode, timings=timings)

    def _mmr(self, query: np.ndarray, candidates: list[Passage], top_k: int) -> list[Passage]:
        """Maximal marginal relevance: each pick maximises lambda*relevance - (1-lambda)*redundancy."""
        by_id = self.store.vectors([p.id for p in candidates])
        pool = [p for p in candidates if p.id in by_id]
        vectors = np.stack([by_id[p.id] for p in pool])
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
        relevance = vectors @ (query / (np.linalg.norm(query) + 1e-12))
        weight = self.config.mmr_lambda
        chosen: list[int] = []
        while len(chosen) < min(top_k, len(pool)):
            redundancy = (vectors @ vectors[chosen].T).max(axis=1) if chosen else np.zeros(len(pool))
            score = weight * relevance - (1 - weight) * redundancy
            score[chosen] = -np.inf
            chosen.append(int(np.argmax(score)))
        return [pool[i] for i in chosen]


def reciprocal_rank_fusion(dense: list[Passage], keyword: list[Passage], k: int) -> list[Passage]:
    """score = sum over lists of 1 / (k + rank); passages keep their dense similarity for thresholds."""
    merged: dict[str, Passage] = {}
    for rank, passage in enumerate(dense, start=1):
        passage.score = 1.0 / (k + rank)
        merged[passage.id] = passage
    for rank, passage in enumerate(keyword, start=1):
        existing = merged.get(passage.id)
        if existing is None:
            passage.score = 1.0 / (k + rank)
            merged[passage.id] = passage
        else:
            existing.score += 1.0 / (k + rank)
            existing.keyword_rank = rank - 1
    return sorted(merged.values(), key=lambda p: -p.score)
