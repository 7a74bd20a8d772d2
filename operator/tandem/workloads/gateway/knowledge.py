"""Retrieval for the gateway: one Retriever per KnowledgeBase, connected on first use, searched in threads.

Connecting lazily lets the gateway start (and report healthy for what it can do) while Milvus is still
coming up; a failed connection is retried on the next request instead of killing the process. Embedding
models are loaded once per process and shared by every KnowledgeBase that uses the same one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tandem.workloads.knowledge.embedding import Embedder
from tandem.workloads.knowledge.retrieval import Principal, Retriever
from tandem.workloads.knowledge.store import ChunkStore, Passage

from .config import KnowledgeBaseConfig


class KnowledgeUnavailable(Exception):
    """A KnowledgeBase's Milvus cannot be reached or searched."""


@dataclass
class Retrieved:
    passages: list[tuple[str, Passage]]  # (knowledge base label, passage), best first
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, summed over bases


class KnowledgeSearch:
    def __init__(self, bases: list[KnowledgeBaseConfig]) -> None:
        self.bases = bases
        self._embedders: dict[str, Embedder] = {}
        self._retrievers: dict[str, Retriever] = {}
        self._lock = threading.Lock()

    def _embedder(self, name: str) -> Embedder:
        if name not in self._embedders:
            self._embedders[name] = Embedder(name)
        return self._embedders[name]

    def _retriever(self, base: KnowledgeBaseConfig) -> Retriever:
        with self._lock:
            retriever = self._retrievers.get(base.label)
            if retriever is None:
                token = Path(base.token_file).read_text().strip() if base.token_file else None
                try:
                    store = ChunkStore(base.milvus_uri, base.collection, token=token, database=base.database)
                    retriever = Retriever(store, self._embedder(base.embedding_model), base.search)
                except Exception as e:  # pymilvus raises several types; all mean "not now"
                    raise KnowledgeUnavailable(f"KnowledgeBase {base.label}: {e}") from None
                self._retrievers[base.label] = retriever
            return retriever

    def warm_up(self) -> None:
        """Load embedding models and connect where possible, so the first request is not the slow one."""
        for base in self.bases:
            with contextlib.suppress(KnowledgeUnavailable):  # retried per request
                self._retriever(base)

    def _search_sync(self, query: str, top_k: int, principal: Principal) -> Retrieved:
        ranked: list[list[tuple[str, Passage]]] = []
        timings: dict[str, float] = {}
        for base in self.bases:
            retriever = self._retriever(base)
            try:
                result = retriever.search(query, top_k, principal)
            except Exception as e:
                raise KnowledgeUnavailable(f"KnowledgeBase {base.label}: search failed: {e}") from None
            ranked.append([(base.label, p) for p in result.passages])
            for stage, seconds in result.timings.items():
                timings[stage] = timings.get(stage, 0.0) + seconds
        # Fused scores of different collections are not comparable: interleave the bases' rankings.
        merged = [hit for group in itertools.zip_longest(*ranked) for hit in group if hit is not None]
        return Retrieved(merged[:top_k], timings)

    async def search(self, query: str, top_k: int, principal: Principal) -> Retrieved:
        return await asyncio.to_thread(self._search_sync, query, top_k, principal)
