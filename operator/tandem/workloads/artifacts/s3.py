"""An S3 bucket (or an S3-compatible store) as the adapter store, laid out like a tiny registry:

    s3://BUCKET/PREFIX                  publish writes PREFIX/manifest.json (the latest); fetch reads it
    s3://BUCKET/PREFIX@sha256:HEX       fetch reads PREFIX/manifests/sha256/HEX (its bytes are hashed)

beside PREFIX/blobs/sha256/HEX, the tar+gzip blob named by its sha256, and the manifest by digest. The
manifest is the OCI one the registry store uses. Credentials: the Secret's AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY (the names a KnowledgeBase's s3 source uses), else boto3's usual chain; an
`endpoint_url` for MinIO and friends (plain http only to loopback or with `insecure`).
"""

from __future__ import annotations

import re
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from .archive import copy_verified
from .credentials import Credentials, is_loopback
from .errors import (
    ArtifactAccessDenied,
    ArtifactDigestMismatch,
    ArtifactError,
    ArtifactNotFound,
    ArtifactTooLarge,
    ArtifactUnavailable,
)
from .manifest import LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, MAX_MANIFEST_BYTES, sha256_digest

_URI = re.compile(
    r"s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>.*?))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)
LATEST = "manifest.json"
_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}


class S3Store:
    def __init__(self, uri: str, credentials: Credentials | None) -> None:
        import boto3
        from botocore.config import Config

        match = _URI.fullmatch(uri)
        if not match:
            raise ValueError(
                f"{uri!r}: not an S3 location (s3://BUCKET/PREFIX or s3://BUCKET/PREFIX@sha256:HEX)"
            )
        self.uri, self.bucket, self.digest = uri, match["bucket"], match["digest"]
        self.prefix = (match["prefix"] or "").strip("/")
        credentials = credentials or Credentials()
        endpoint = credentials.endpoint_url
        if endpoint:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"endpoint_url {endpoint!r}: not an http(s) URL")
            if parts.scheme == "http" and not (is_loopback(parts.hostname) or credentials.insecure):
                raise ValueError(
                    f"endpoint_url {endpoint!r}: plain http to a host other than loopback needs insecure"
                )
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=credentials.region,
            aws_access_key_id=credentials.aws_access_key_id,
            aws_secret_access_key=credentials.aws_secret_access_key,
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=60
            ),
        )

    def __enter__(self) -> S3Store:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.client.close()

    def key(self, *parts: str) -> str:
        return "/".join([self.prefix, *parts] if self.prefix else parts)

    def blob_key(self, digest: str) -> str:
        return self.key("blobs", "sha256", digest.removeprefix("sha256:"))

    def manifest_key(self, digest: str) -> str:
        return self.key("manifests", "sha256", digest.removeprefix("sha256:"))

    def _error(self, what: str, error: Exception) -> ArtifactError:
        from botocore.exceptions import ClientError, NoCredentialsError

        if isinstance(error, NoCredentialsError):
            return ArtifactAccessDenied(f"{what}: no credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")
        if isinstance(error, ClientError):
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND:
                return ArtifactNotFound(f"{what}: {code}")
            if code in _DENIED:
                return ArtifactAccessDenied(
                    f"{what}: {code}: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                )
        return ArtifactUnavailable(f"{what}: cannot use the object store ({type(error).__name__}: {error})")

    def _call(self, what: str, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(Bucket=self.bucket, **kwargs)
        except (BotoCoreError, ClientError) as e:
            raise self._error(what, e) from None

    def push(self, blob: Path, blob_digest: str, size: int, manifest_bytes: bytes) -> str:
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        digest = sha256_digest(manifest_bytes)
        if self.digest and self.digest != digest:
            raise ArtifactDigestMismatch(f"{self.uri}: the manifest to publish", self.digest, digest)
        blob_key = self.blob_key(blob_digest)
        try:  # always written, even when present: a damaged object is replaced rather than kept
            self.client.upload_file(
                str(blob),
                self.bucket,
                blob_key,
                ExtraArgs={"ContentType": LAYER_MEDIA_TYPE},
                Config=TransferConfig(multipart_threshold=64 * 1024 * 1024),
            )
        except (BotoCoreError, ClientError) as e:
            raise self._error(f"s3://{self.bucket}/{blob_key}", e) from None
        except Exception as e:  # boto3's transfer wraps the client's errors in its own
            cause = e.__cause__ or e.__context__
            if isinstance(cause, BotoCoreError | ClientError):
                raise self._error(f"s3://{self.bucket}/{blob_key}", cause) from None
            raise
        for key in (self.manifest_key(digest), self.key(LATEST)):
            self._call(
                f"s3://{self.bucket}/{key}",
                "put_object",
                Key=key,
                Body=manifest_bytes,
                ContentType=MANIFEST_MEDIA_TYPE,
            )
        base = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        return f"{base}@{digest}"

    def _read(self, key: str, out: BinaryIO | None, *, limit: int, digest: str | None) -> bytes:
        what = f"s3://{self.bucket}/{key}"
        response = self._call(what, "get_object", Key=key)
        body = response["Body"]
        try:
            length = response.get("ContentLength")
            if isinstance(length, int) and length > limit:
                raise ArtifactTooLarge(what, limit, 0)
            if out is not None:
                assert digest is not None
                copy_verified(body.iter_chunks(1 << 20), out, what=what, digest=digest, limit=limit)
                return b""
            data = bytearray()
            for chunk in body.iter_chunks(1 << 16):
                data += chunk
                if len(data) > limit:
                    raise ArtifactTooLarge(what, limit, len(data))
            return bytes(data)
        except ArtifactError:
            raise
        except Exception as e:
            from botocore.exceptions import BotoCoreError

            if isinstance(e, BotoCoreError):
                raise self._error(what, e) from None
            raise
        finally:
            body.close()

    def manifest(self) -> tuple[bytes, str]:
        key = self.manifest_key(self.digest) if self.digest else self.key(LATEST)
        data = self._read(key, None, limit=MAX_MANIFEST_BYTES, digest=None)
        digest = sha256_digest(data)
        if self.digest and digest != self.digest:
            raise ArtifactDigestMismatch(f"s3://{self.bucket}/{key}", self.digest, digest)
        return data, digest

    def download_blob(self, digest: str, out: BinaryIO, *, limit: int) -> int:
        self._read(self.blob_key(digest), out, limit=limit, digest=digest)
        return out.tell()
