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


def folder_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(file_digest(file).encode())
    return digest.hexdigest()
