"""A knowledge base named by a job contract, opened (kept apart from the contracts, which the operator
imports without the vector store's client)."""

from __future__ import annotations

from ..jobs import KnowledgeBaseTarget, read_token
from .store import ChunkStore


def open_store(target: KnowledgeBaseTarget) -> ChunkStore:
    return ChunkStore(
        target.milvus_uri, target.collection, token=read_token(target.token_file), database=target.database
    )
