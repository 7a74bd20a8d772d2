"""What models (local base models) and model_download (remote ones) share: the error a base model fails
with and the digests of weights on disk. Both import from here, so neither imports the other at import
time, and model_download never imports models at all.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


class ModelError(Exception):
    """The base model cannot be found or prepared; `reason` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# The manifest a trained adapter folder carries: written after its digest was taken, so not part of it.
ADAPTER_MANIFEST = "tandem-manifest.json"


def folder_digest(path: Path, *, skip: frozenset[str] = frozenset()) -> str:
    """SHA-256 over the folder's files (relative paths and contents, in order); `skip` names top-level
    files left out."""
    digest = hashlib.sha256()
    files = (p for p in path.rglob("*") if p.is_file() and p.relative_to(path).as_posix() not in skip)
    for file in sorted(files):
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(file_digest(file).encode())
    return digest.hexdigest()


def adapter_digest(path: Path) -> str:
    """The digest of an adapter folder as training recorded it (`adapterDigest`): its files but the
    manifest."""
    return folder_digest(path, skip=frozenset({ADAPTER_MANIFEST}))
