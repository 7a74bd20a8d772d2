"""Embedding on Ray workers (Ray Data), for corpora too large for one pod.

On 2 CPU cores all-MiniLM-L6-v2 embeds about 24 chunks/s, so a million chunks take half a day on one
pod; spread over N Ray workers it takes 1/N of that. Chunking still runs in the driver (it is cheap
next to embedding); only the texts travel to the workers, and the vectors come back in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .embedding import Embedder


class _EmbedBatch:
    """A Ray Data actor: loads the model once, embeds each batch of texts."""

    def __init__(self, model: str, batch_size: int, normalize: bool) -> None:
        self.embedder = Embedder(model, batch_size=batch_size, normalize=normalize)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        vectors = self.embedder.embed([str(t) for t in batch["text"]])
        return {"position": batch["position"], "vector": list(vectors)}


class RayEmbedder:
    """Same interface as Embedder (the indexer cannot tell them apart), embedding on `workers` actors."""

    def __init__(self, local: Embedder, workers: int) -> None:
        self.local = local
        self.workers = workers
        self.name = local.name
        self.dimension = local.dimension
        self.max_tokens = local.max_tokens
        self.embedded = 0

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self.local.token_offsets(text)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import ray.data

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        dataset = ray.data.from_items([{"position": i, "text": t} for i, t in enumerate(texts)])
        per_worker = max(1, min(self.local.batch_size * 4, -(-len(texts) // self.workers)))
        embedded = dataset.map_batches(
            _EmbedBatch,
            fn_constructor_kwargs={
                "model": self.local.name,
                "batch_size": self.local.batch_size,
                "normalize": self.local.normalize,
            },
            batch_size=per_worker,
            concurrency=self.workers,
            num_cpus=1,
        )
        rows = sorted(embedded.take_all(), key=lambda row: int(row["position"]))
        if len(rows) != len(texts):
            raise RuntimeError(f"Ray returned {len(rows)} vectors for {len(texts)} texts")
        self.embedded += len(texts)
        return np.stack([np.asarray(row["vector"], dtype=np.float32) for row in rows])
