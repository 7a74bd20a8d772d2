"""Publishing a trained adapter to an OCI registry or S3 (`spec.output.publish`), for endpoints in any
namespace to fetch by digest (`tandem.workloads.artifacts`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tandem.api.v1alpha1.adaptertraining import Publish

from ..artifacts import ArtifactError, ArtifactInvalid, Credentials, publish


class PublishError(Exception):
    """The adapter was written but could not be published; `transient`: the next attempt may succeed."""

    def __init__(self, reason: str, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.reason, self.transient = reason, transient


def artifact_uri(uri: str, version: str) -> str:
    """Where this version is published: an oci:// repository without a tag gets the version as its tag
    (each version its own tag, the URI of the last run keeping its meaning); s3:// as given."""
    if uri.startswith("oci://"):
        last = uri.removeprefix("oci://").rsplit("/", 1)[-1]
        if ":" not in last:
            return f"{uri}:{version}"
    return uri


def publish_adapter(
    folder: Path, spec: Publish, version: str, credentials_dir: Path | None = None
) -> dict[str, Any]:
    """Publish the adapter folder; returns `status.artifact` ({uri pinned to the manifest, manifestDigest})
    and the adapter digest the store computed. Raises PublishError."""
    try:
        credentials = (
            Credentials.from_folder(credentials_dir, insecure=spec.insecure)
            if credentials_dir is not None
            else Credentials(insecure=spec.insecure)
        )
    except (OSError, ValueError) as e:
        where = "spec.output.publish.credentialsSecretRef"
        raise PublishError("PublishCredentialsUnreadable", f"{where}: {e}") from None
    uri = artifact_uri(spec.uri, version)
    try:
        published = publish(folder, uri, credentials)
    except ValueError as e:  # a URI the pattern let through that names no store
        raise PublishError(ArtifactInvalid.reason, f"spec.output.publish.uri: {e}") from None
    except ArtifactError as e:
        raise PublishError(e.reason, f"publishing {folder} to {uri}: {e}", transient=e.transient) from None
    return {
        "uri": published.uri_with_digest,
        "manifestDigest": published.manifest_digest,
        "adapterDigest": published.adapter_digest,
    }
