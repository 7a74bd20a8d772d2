"""Publish an adapter folder to a store by URI, and fetch it back into a content-addressed cache,
checked against the adapter digest training recorded."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol

from tandem.workloads.model_common import adapter_digest

from .archive import MAX_ARTIFACT_BYTES, extract, pack
from .credentials import Credentials
from .errors import ArtifactDigestMismatch, ArtifactInvalid, ArtifactTooLarge
from .manifest import build as build_manifest
from .manifest import parse as parse_manifest
from .manifest import sha256_digest

_HEX = re.compile(r"[0-9a-f]{64}")
# What a fetch writes next to the cache's folders, and removes whatever happens.
PARTIAL_PREFIX = ".partial-"


class Store(Protocol):
    def __enter__(self) -> Store: ...

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None: ...

    def push(self, blob: Path, blob_digest: str, size: int, manifest_bytes: bytes) -> str: ...

    def manifest(self) -> tuple[bytes, str]: ...

    def download_blob(self, digest: str, out: BinaryIO, *, limit: int) -> int: ...


@dataclass(frozen=True)
class Published:
    uri_with_digest: str  # the URI pinned to the manifest: oci://HOST/REPO@sha256:... or s3://B/P@sha256:...
    manifest_digest: str  # sha256:...
    adapter_digest: str  # hex, as adapter_digest() and training's `adapterDigest` have it


def open_store(uri: str, credentials: Credentials | None) -> Store:
    """The store a URI names (ValueError for a URI that names none)."""
    if uri.startswith("oci://"):
        from .oci import OciStore

        return OciStore(uri, credentials)
    if uri.startswith("s3://"):
        from .s3 import S3Store

        return S3Store(uri, credentials)
    raise ValueError(f"{uri!r}: not an oci:// or s3:// URI")


def normalize_adapter_digest(digest: str) -> str:
    """The 64 hex characters of an adapter digest (a `sha256:` prefix is accepted and dropped)."""
    hex_digest = digest.strip().lower().removeprefix("sha256:")
    if not _HEX.fullmatch(hex_digest):
        raise ValueError(f"{digest!r}: not an adapter digest (64 hexadecimal characters)")
    return hex_digest


def publish(folder: Path, uri: str, credentials: Credentials | None = None) -> Published:
    """Pack `folder` (an adapter: adapter_config.json, adapter_model.safetensors...) into one tar+gzip
    blob and publish it with its manifest at `uri`; returns the URI pinned to the manifest's digest."""
    if not folder.is_dir():
        raise ArtifactInvalid(f"{folder}: not a folder")
    with open_store(uri, credentials) as store, tempfile.TemporaryDirectory(prefix="tandem-artifact-") as tmp:
        digest = adapter_digest(folder)
        blob = Path(tmp) / "adapter.tar.gz"
        blob_digest, size = pack(folder, blob)
        if size > MAX_ARTIFACT_BYTES:
            raise ArtifactTooLarge(f"{folder}: packed", MAX_ARTIFACT_BYTES, size)
        manifest_bytes = build_manifest(blob_digest, size, digest)
        pinned = store.push(blob, blob_digest, size, manifest_bytes)
    return Published(pinned, sha256_digest(manifest_bytes), digest)


def _cached(target: Path, expected: str) -> bool:
    if not target.is_dir():
        return False
    if adapter_digest(target) == expected:
        return True
    shutil.rmtree(target, ignore_errors=True)  # damaged since it was fetched: fetched again
    return False


def fetch(
    uri: str,
    expected_adapter_digest: str,
    cache_dir: Path,
    credentials: Credentials | None = None,
    *,
    max_bytes: int = MAX_ARTIFACT_BYTES,
) -> Path:
    """The adapter published at `uri`, as the folder `cache_dir/<adapter digest>`.

    Read from the cache when it is there (and still has that digest: nothing goes over the network);
    otherwise the manifest, then its blob (hashed while it streams, at most `max_bytes`), unpacked safely
    into a temporary folder, checked against `expected_adapter_digest`, and renamed into place. Raises
    ArtifactDigestMismatch (nothing kept) when any of it is not what was expected, and the other
    ArtifactError subclasses for a store that cannot be read, an unsafe archive, an oversized one.
    """
    expected = normalize_adapter_digest(expected_adapter_digest)
    target = cache_dir / expected
    with open_store(uri, credentials) as store:  # a bad URI fails here; no request is sent yet
        if _cached(target, expected):
            return target
        return _download(store, uri, expected, cache_dir, max_bytes)


def _download(store: Store, uri: str, expected: str, cache_dir: Path, max_bytes: int) -> Path:
    target = cache_dir / expected
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=cache_dir))
    try:
        blob, folder = staging / "adapter.tar.gz", staging / "adapter"
        data, manifest_digest = store.manifest()
        what = f"{uri} ({manifest_digest})"
        layer = parse_manifest(data, what)
        if layer.adapter_digest is not None and layer.adapter_digest != expected:
            # The publisher's own annotation already says it is another adapter: not downloaded.
            raise ArtifactDigestMismatch(
                f"{what}: the adapter it is annotated with", expected, layer.adapter_digest
            )
        if layer.size > max_bytes:
            raise ArtifactTooLarge(f"{what}: blob {layer.digest}", max_bytes, 0)
        with blob.open("wb") as out:
            store.download_blob(layer.digest, out, limit=layer.size)
        folder.mkdir()
        extract(blob, folder, limit=max_bytes, what=f"{what}: blob {layer.digest}")
        found = adapter_digest(folder)
        if found != expected:
            raise ArtifactDigestMismatch(f"{what}: the adapter folder", expected, found)
        try:
            os.rename(folder, target)
        except OSError:
            if not _cached(target, expected):  # not another fetch of the same digest that came first
                raise
        return target
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
