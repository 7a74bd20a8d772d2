"""Credentials for an adapter store, read from a mounted Secret folder (one file per key)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

# The Secret keys an OCI registry's credentials use (as `kubectl create secret generic --from-literal`).
OCI_CREDENTIAL_KEYS = ("username", "password")
# Optional keys beside them: an S3-compatible endpoint (MinIO...) and its region.
ENDPOINT_KEY, REGION_KEY = "endpoint_url", "region"
# A Secret value larger than this is not a credential (Kubernetes caps a whole Secret at 1 MiB).
MAX_VALUE_BYTES = 64 * 1024


@dataclass(frozen=True, repr=False)
class Credentials:
    """How to reach a store: registry user/password (OCI) or access key pair (S3), an S3 endpoint, and
    whether plain HTTP is allowed to a host that is not loopback (`insecure`; loopback always may)."""

    username: str | None = None
    password: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    insecure: bool = False

    def __repr__(self) -> str:  # never the secrets themselves in a log line or a traceback
        shown = {
            "username": self.username,
            "password": "***" if self.password else None,
            "aws_access_key_id": self.aws_access_key_id,
            "aws_secret_access_key": "***" if self.aws_secret_access_key else None,
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "insecure": self.insecure,
        }
        return "Credentials(" + ", ".join(f"{k}={v!r}" for k, v in shown.items() if v) + ")"

    @classmethod
    def from_folder(cls, folder: Path, *, insecure: bool = False) -> Credentials:
        """The credentials in a mounted Secret: files `username`/`password`, or the S3 key names
        (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, as a KnowledgeBase's s3 source names them), and
        optionally `endpoint_url` and `region`. Missing files are None; a missing folder is an error."""
        # The names a KnowledgeBase's s3 credentials Secret uses; imported here, not at the top: the API
        # types take seconds to import, and an OCI fetch (an init container) does not need them.
        from tandem.api.v1alpha1.knowledgebase import S3_CREDENTIAL_KEYS

        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such credentials folder")

        def read(name: str) -> str | None:
            path = folder / name
            if not path.is_file():
                return None
            if path.stat().st_size > MAX_VALUE_BYTES:
                raise ValueError(f"{path}: larger than {MAX_VALUE_BYTES} bytes; not a credential")
            return path.read_text().strip() or None

        key_id, secret = (read(key) for key in S3_CREDENTIAL_KEYS)
        return cls(
            username=read(OCI_CREDENTIAL_KEYS[0]),
            password=read(OCI_CREDENTIAL_KEYS[1]),
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            endpoint_url=read(ENDPOINT_KEY),
            region=read(REGION_KEY),
            insecure=insecure,
        )


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, without port) is this machine's loopback."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
