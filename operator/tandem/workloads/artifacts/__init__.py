"""Adapters that travel between namespaces by digest: a LoRA adapter folder published as one tar+gzip
artifact to an OCI registry (`oci://HOST[:PORT]/REPO:TAG`, `oci://HOST/REPO@sha256:...`) or an S3 bucket
(`s3://BUCKET/PREFIX`, `s3://BUCKET/PREFIX@sha256:...`), and fetched back into a content-addressed cache
only when its files have the adapter digest training recorded (`model_common.adapter_digest`).

    python -m tandem.workloads.artifacts publish FOLDER URI [--credentials DIR]
    python -m tandem.workloads.artifacts fetch URI --adapter-digest HEX --cache-dir DIR [--credentials DIR]
"""

from __future__ import annotations

from .archive import MAX_ARTIFACT_BYTES
from .credentials import Credentials
from .errors import (
    ArtifactAccessDenied,
    ArtifactDigestMismatch,
    ArtifactError,
    ArtifactInvalid,
    ArtifactNotFound,
    ArtifactTooLarge,
    ArtifactUnavailable,
    ArtifactUnsafe,
)
from .manifest import ARTIFACT_TYPE, LAYER_MEDIA_TYPE
from .store import Published, fetch, publish

__all__ = [
    "ARTIFACT_TYPE",
    "LAYER_MEDIA_TYPE",
    "MAX_ARTIFACT_BYTES",
    "ArtifactAccessDenied",
    "ArtifactDigestMismatch",
    "ArtifactError",
    "ArtifactInvalid",
    "ArtifactNotFound",
    "ArtifactTooLarge",
    "ArtifactUnavailable",
    "ArtifactUnsafe",
    "Credentials",
    "Published",
    "fetch",
    "publish",
]
