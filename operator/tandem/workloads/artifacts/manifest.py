"""The adapter artifact's OCI image manifest: one tar+gzip layer, an empty config, the adapter digest in
annotations. The S3 layout stores the same manifest next to its blob, so both stores read it one way."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from .errors import ArtifactInvalid

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.tandem.lora.adapter.v1"
LAYER_MEDIA_TYPE = "application/vnd.tandem.lora.adapter.v1.tar+gzip"
# Also read: a plain OCI tar+gzip layer (an adapter pushed by another tool); the adapter digest decides.
ACCEPTED_LAYER_MEDIA_TYPES = (LAYER_MEDIA_TYPE, "application/vnd.oci.image.layer.v1.tar+gzip")
# The OCI "empty" config descriptor (image-spec 1.1) that artifacts without a config use.
EMPTY_CONFIG = b"{}"
EMPTY_CONFIG_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG_DIGEST = "sha256:" + hashlib.sha256(EMPTY_CONFIG).hexdigest()
ADAPTER_DIGEST_ANNOTATION = "dev.tandem.adapter.digest"
TITLE_ANNOTATION = "org.opencontainers.image.title"
# Registries refuse manifests over 4 MiB; ours is under 1 KiB.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Layer:
    digest: str  # sha256:...
    size: int
    adapter_digest: str | None  # hex, as adapter_digest() gives it; None when not annotated


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build(blob_digest: str, size: int, adapter_digest: str) -> bytes:
    annotations = {ADAPTER_DIGEST_ANNOTATION: adapter_digest}
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_CONFIG_MEDIA_TYPE, "digest": EMPTY_CONFIG_DIGEST, "size": 2},
        "layers": [
            {
                "mediaType": LAYER_MEDIA_TYPE,
                "digest": blob_digest,
                "size": size,
                "annotations": {**annotations, TITLE_ANNOTATION: "adapter.tar.gz"},
            }
        ],
        "annotations": annotations,
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def parse(data: bytes, what: str) -> Layer:
    """The adapter layer of a manifest, or ArtifactInvalid saying why it is not an adapter artifact."""
    try:
        manifest: Any = json.loads(data)
    except ValueError as e:
        raise ArtifactInvalid(f"{what}: the manifest is not JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("schemaVersion") != 2:
        raise ArtifactInvalid(f"{what}: not an OCI image manifest (schemaVersion 2)")
    if manifest.get("mediaType", MANIFEST_MEDIA_TYPE) != MANIFEST_MEDIA_TYPE:
        raise ArtifactInvalid(f"{what}: manifest media type {manifest.get('mediaType')!r}, not an artifact")
    layers = manifest.get("layers")
    if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
        raise ArtifactInvalid(f"{what}: an adapter artifact has exactly one layer")
    layer = layers[0]
    digest, size, media_type = layer.get("digest"), layer.get("size"), layer.get("mediaType")
    if media_type not in ACCEPTED_LAYER_MEDIA_TYPES:
        raise ArtifactInvalid(f"{what}: layer media type {media_type!r}, expected {LAYER_MEDIA_TYPE}")
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise ArtifactInvalid(f"{what}: layer digest {digest!r} is not a sha256 digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ArtifactInvalid(f"{what}: layer size {size!r} is not a byte count")
    annotations = {**(manifest.get("annotations") or {}), **(layer.get("annotations") or {})}
    adapter = annotations.get(ADAPTER_DIGEST_ANNOTATION)
    return Layer(digest, size, adapter if isinstance(adapter, str) else None)
