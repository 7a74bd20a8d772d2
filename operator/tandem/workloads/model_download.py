"""Remote base models: download an s3:// prefix or an http(s):// file into the model cache, once.

A download's cache directory is keyed by what identifies the remote bytes (S3: the URI and every
object's key, ETag and size; HTTP: the URI and the response's ETag or Last-Modified and length), so
preparing an unchanged model again downloads nothing and a changed one lands in a new directory (an
HTTP server that sends neither validator is downloaded from again each time, keyed by the bytes' digest).
Everything is written to a `.partial` sibling first and renamed into place, so a killed download never
leaves something that looks like a complete model. Bodies stream to disk: models are gigabytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .model_common import ModelError, file_digest

if TYPE_CHECKING:
    import httpx

    from .knowledge.safe_http import FetchError

# Larger than any open model's weights, small enough to stop a runaway or hostile server.
DEFAULT_MAX_BYTES = int(os.environ.get("TANDEM_MODEL_MAX_BYTES", str(1 << 40)))
MAX_REDIRECTS = 5
CHUNK = 1 << 20
USER_AGENT = "tandem-model/0.1"
GGUF_MAGIC = b"GGUF"
ARCHIVE_FOLDER = "model"  # where an http(s) tar archive is unpacked inside its cache directory


def fetch_model(
    uri: str,
    cache: Path,
    *,
    gguf_file: str | None = None,
    allow_private_networks: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = 60.0,
) -> Path:
    """The local copy of a remote model: a Hugging Face folder, or a .gguf file (converted by the caller).

    `allow_private_networks` (http/https only) lets the URI reach private addresses; S3 endpoints come
    from the operator's environment, not the manifest, so they are not checked.
    """
    scheme = uri.partition("://")[0]
    if scheme == "s3":
        return _fetch_s3(uri, cache / "s3", gguf_file, max_bytes)
    if scheme in ("http", "https"):
        return _fetch_http(uri, cache / "http", gguf_file, allow_private_networks, max_bytes, timeout)
    raise ModelError("BaseModelUnsupported", f"{uri}: not an s3://, http:// or https:// URI")


# ---------------------------------------------------------------------------------------------- common


def _slug(text: str) -> str:
    """A readable, file-system-safe prefix for a cache directory (the digest makes it unique)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", PurePosixPath(text).name)[:64] or "model"


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _check_size(uri: str, size: int, max_bytes: int, cache: Path) -> None:
    if size > max_bytes:
        raise ModelError(
            "BaseModelTooLarge",
            f"{uri}: {size} bytes exceeds the limit of {max_bytes} bytes (TANDEM_MODEL_MAX_BYTES)",
        )
    cache.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache).free
    if size > free:
        raise ModelError(
            "BaseModelTooLarge", f"{uri}: {size} bytes do not fit in the model cache {cache} ({free} free)"
        )


@contextlib.contextmanager
def _staging(staging: Path) -> Iterator[Path]:
    """An empty `.partial` directory that disappears if the work in it fails or is interrupted.

    Its name is fixed (not random) so that the leftovers of a killed download are removed by the next
    attempt instead of filling the cache.
    """
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _publish(staging: Path, target: Path) -> None:
    try:
        staging.replace(target)  # atomic: the model appears whole or not at all
    except OSError:
        if not (target.is_dir() and any(target.iterdir())):
            raise
        shutil.rmtree(staging, ignore_errors=True)  # a concurrent download of the same bytes won


def _safe_relative(uri: str, name: str) -> PurePosixPath:
    """`name` (an object key or archive member) as a path that stays inside the model folder."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ModelError("BaseModelUnsupported", f"{uri}: {name!r} would be written outside the model folder")
    return path


# -------------------------------------------------------------------------------------------------- S3


@dataclass(frozen=True)
class _Object:
    key: str
    relative: PurePosixPath  # where it goes inside the model folder
    etag: str
    size: int


def _s3_client() -> Any:
    import boto3
    from botocore.config import Config

    # Credentials, region and endpoint come from the usual AWS environment (AWS_ACCESS_KEY_ID,
    # AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL for MinIO and friends), as for datasets.
    return boto3.client(
        "s3",
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=30, read_timeout=120),
    )


def _s3_error(uri: str, error: Exception) -> ModelError:
    from botocore.exceptions import ClientError

    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchBucket", "NoSuchKey", "404", "NotFound"):
            return ModelError("BaseModelNotFound", f"{uri}: {code}: {error}")
    return ModelError(
        "BaseModelUnreachable",
        f"{uri}: cannot read from the object store ({type(error).__name__}: {error}); check the "
        "credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and endpoint (AWS_ENDPOINT_URL)",
    )


def _list_objects(client: Any, uri: str, bucket: str, prefix: str) -> list[dict[str, Any]]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [obj for page in pages for obj in page.get("Contents", [])]
    except (BotoCoreError, ClientError) as e:
        raise _s3_error(uri, e) from None


def _folder(prefix: str) -> str:
    """The key prefix of a folder: `models/llama` must not take in `models/llama-2/...`."""
    return prefix.rstrip("/") + "/" if prefix.rstrip("/") else ""


def _gguf_key(prefix: str, gguf_file: str | None) -> str | None:
    """The one object to download when the model is a GGUF file, as for local paths."""
    if gguf_file:
        return _folder(prefix) + gguf_file
    return prefix if prefix.endswith(".gguf") else None


def _select(uri: str, listed: list[dict[str, Any]], prefix: str, gguf_file: str | None) -> list[_Object]:
    """The objects that make up the model: one .gguf object, or every object of a folder."""
    by_key = {obj["Key"]: obj for obj in listed}
    folder = _folder(prefix)
    wanted = _gguf_key(prefix, gguf_file)
    if wanted is not None:
        if wanted not in by_key:
            raise ModelError("BaseModelNotFound", f"{uri}: no object {wanted}")
        obj = by_key[wanted]
        return [_Object(wanted, PurePosixPath(PurePosixPath(wanted).name), obj["ETag"], obj["Size"])]
    objects = [
        _Object(key, _safe_relative(uri, key[len(folder) :]), obj["ETag"], obj["Size"])
        for key, obj in sorted(by_key.items())
        if key.startswith(folder) and not key.endswith("/")  # "folder/" keys are console placeholders
    ]
    if not objects:
        raise ModelError("BaseModelNotFound", f"{uri}: no objects under this prefix")
    if PurePosixPath("config.json") not in {o.relative for o in objects}:
        hint = (
            "; name one of its .gguf files with ggufFile"
            if any(o.key.endswith(".gguf") for o in objects)
            else ""
        )
        raise ModelError(
            "BaseModelUnsupported",
            f"{uri}: neither a Hugging Face folder (no config.json at the top) nor a .gguf file{hint}",
        )
    return objects


def _download_object(client: Any, uri: str, bucket: str, obj: _Object, dest: Path) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        # IfMatch: an object replaced since the listing fails the download instead of mixing versions.
        body = client.get_object(Bucket=bucket, Key=obj.key, IfMatch=obj.etag)["Body"]
        with dest.open("wb") as f:
            for chunk in body.iter_chunks(CHUNK):
                f.write(chunk)
    except (BotoCoreError, ClientError) as e:
        raise _s3_error(uri, e) from None


def _fetch_s3(uri: str, cache: Path, gguf_file: str | None, max_bytes: int) -> Path:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    client = _s3_client()
    objects = _select(uri, _list_objects(client, uri, bucket, prefix), prefix, gguf_file)
    _check_size(uri, sum(o.size for o in objects), max_bytes, cache)
    # The keys hold the prefix, so `s3://b/m` and `s3://b/m/` share one copy; the ETags and sizes make a
    # changed model a new directory.
    identity = [(o.key, o.etag, o.size) for o in objects]
    target = cache / f"{_slug(prefix.rstrip('/') or bucket)}-{_digest('s3', bucket, identity)}"
    if not target.exists():
        with _staging(target.with_name(target.name + ".partial")) as staging:
            for obj in objects:
                _download_object(client, uri, bucket, obj, staging / obj.relative)
            _publish(staging, target)
    # A .gguf object is returned as the file (the caller converts it); a folder as the folder.
    return target / objects[0].relative if _gguf_key(prefix, gguf_file) else target


# ------------------------------------------------------------------------------------------ HTTP(S)


def _validator(headers: httpx.Headers) -> str | None:
    """What tells this version of the file from another without reading it, if the server says."""
    etag = headers.get("etag")
    if etag and not etag.startswith("W/"):  # a weak ETag may stay the same across different bytes
        return f"etag:{etag}"
    modified = headers.get("last-modified")
    if modified:
        return f"modified:{modified};length:{headers.get('content-length')}"
    return None


def _declared_length(headers: httpx.Headers) -> int | None:
    declared = headers.get("content-length")
    return int(declared) if declared and declared.isdigit() else None


def _http_error(uri: str, error: FetchError) -> ModelError:
    from .knowledge.safe_http import AddressRefused, StatusError

    # Most FetchError messages start with the URL that failed (after redirects, maybe not `uri`).
    message = str(error) if str(error).startswith(uri) else f"{uri}: {error}"
    if isinstance(error, AddressRefused):
        return ModelError(
            "BaseModelAddressRefused",
            f"{uri}: {error.host} resolves to {error.address}, a private, loopback or link-local address; "
            "set allowPrivateNetworks: true on baseModel if this is an in-cluster model store",
        )
    if isinstance(error, StatusError) and error.status in (404, 410):
        return ModelError("BaseModelNotFound", message)
    return ModelError("BaseModelUnreachable", message)


def _write_body(uri: str, response: httpx.Response, dest: Path, max_bytes: int) -> None:
    written = 0
    with dest.open("wb") as f:
        for chunk in response.iter_bytes(CHUNK):
            written += len(chunk)
            if written > max_bytes:  # the Content-Length may be absent or wrong
                raise ModelError("BaseModelTooLarge", f"{uri}: more than the limit of {max_bytes} bytes")
            f.write(chunk)


def _model_root(folder: Path, gguf_file: str | None) -> Path | None:
    """The Hugging Face folder (or named .gguf file) inside an unpacked archive: at its top, or inside
    its single top-level directory (archives usually hold `NAME/config.json`)."""
    subfolders = [p for p in folder.iterdir() if p.is_dir()]
    for candidate in [folder, *(subfolders if len(subfolders) == 1 else [])]:
        found = candidate / gguf_file if gguf_file else candidate
        if (found.is_file() and found.suffix == ".gguf") or (found / "config.json").is_file():
            return found
    return None


def _extract(uri: str, archive: Path, dest: Path, gguf_file: str | None, max_bytes: int) -> None:
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                _safe_relative(uri, member.name)
            if sum(m.size for m in members) > max_bytes:  # a compressed archive can expand enormously
                raise ModelError("BaseModelTooLarge", f"{uri}: unpacks to more than {max_bytes} bytes")
            # The "data" filter also refuses links pointing outside, device files and setuid bits.
            tar.extractall(dest, members=members, filter="data")
    except tarfile.TarError as e:
        raise ModelError("BaseModelUnsupported", f"{uri}: unusable tar archive: {e}") from None
    if _model_root(dest, gguf_file) is None:
        raise ModelError(
            "BaseModelUnsupported", f"{uri}: the archive holds no Hugging Face folder (config.json)"
        )


def _unpack(uri: str, download: Path, staging: Path, gguf_file: str | None, max_bytes: int) -> None:
    """Turn the downloaded file into the cached form: a .gguf file, or an unpacked model folder.

    Told apart by content, not by name (a redirect to a signed URL hides the name). An archive and its
    contents are both on disk until it is unpacked.
    """
    with download.open("rb") as f:
        magic = f.read(len(GGUF_MAGIC))
    if magic == GGUF_MAGIC:
        name = PurePosixPath(urlsplit(uri).path).name
        download.rename(staging / (_slug(name) if name.endswith(".gguf") else "model.gguf"))
    elif tarfile.is_tarfile(download):
        _extract(uri, download, staging / ARCHIVE_FOLDER, gguf_file, max_bytes)
        download.unlink()
    else:
        raise ModelError(
            "BaseModelUnsupported", f"{uri}: neither a .gguf file nor a tar archive of a model folder"
        )


def _cached_model(uri: str, target: Path, gguf_file: str | None) -> Path:
    ggufs = sorted(target.glob("*.gguf"))
    if ggufs:
        return ggufs[0]
    root = _model_root(target / ARCHIVE_FOLDER, gguf_file)
    if root is None:  # cannot happen for a directory this module published
        raise ModelError("BaseModelUnsupported", f"{uri}: the cached copy {target} holds no model")
    return root


def _fetch_http(
    uri: str, cache: Path, gguf_file: str | None, allow_private: bool, max_bytes: int, timeout: float
) -> Path:
    from .knowledge.safe_http import FetchError, stream

    name = _slug(urlsplit(uri).path.rstrip("/"))
    try:
        with stream(
            uri,
            allow_private=allow_private,
            timeout=timeout,
            max_redirects=MAX_REDIRECTS,
            user_agent=USER_AGENT,
        ) as got:
            declared = _declared_length(got.response.headers)
            validator = _validator(got.response.headers)
            target = cache / f"{name}-{_digest(uri, validator)}" if validator else None
            if target is not None and target.exists():
                return _cached_model(uri, target, gguf_file)  # unchanged: the body is never read
            _check_size(uri, declared or 0, max_bytes, cache)
            with _staging(cache / f"{name}-{_digest(uri)}.partial") as staging:
                download = staging / "download"
                _write_body(uri, got.response, download, max_bytes)
                if target is None:  # the server gave no validator: key by what was received
                    target = cache / f"{name}-{_digest(uri, file_digest(download))}"
                _unpack(uri, download, staging, gguf_file, max_bytes)
                _publish(staging, target)
    except FetchError as e:
        raise _http_error(uri, e) from None
    return _cached_model(uri, target, gguf_file)


def link_model(uri: str, cache: Path, link: Path, *, allow_private_networks: bool = False) -> Path:
    """Fetch a base model for a server that takes a fixed path (vLLM's --model): `link` is made to point
    at the cached folder, replaced atomically, so a restarted init container never leaves it dangling."""
    folder = fetch_model(uri, cache, allow_private_networks=allow_private_networks)
    if not folder.is_dir():
        raise ModelError(
            "ModelNotServable",
            f"{uri}: a single file ({folder.name}); vLLM serves Hugging Face folders (an s3:// prefix, or an "
            "https:// tar archive of the folder)",
        )
    fresh = link.with_name(link.name + ".new")
    fresh.unlink(missing_ok=True)
    fresh.symlink_to(folder)
    os.replace(fresh, link)
    return folder


def main(argv: list[str] | None = None) -> int:
    """`python -m tandem.workloads.model_download --uri U --cache DIR --link PATH`: the vLLM pod's
    init container. Its result line (and the termination message) says which folder, or why not."""
    import argparse

    from .reporting import EXIT_PERMANENT, EXIT_RETRY, finish

    parser = argparse.ArgumentParser(description="Fetch a remote base model and link it at a fixed path")
    parser.add_argument("--uri", required=True)
    parser.add_argument("--cache", required=True, type=Path)
    parser.add_argument("--link", required=True, type=Path)
    parser.add_argument("--allow-private-networks", action="store_true")
    args = parser.parse_args(argv)
    try:
        folder = link_model(
            args.uri, args.cache, args.link, allow_private_networks=args.allow_private_networks
        )
    except ModelError as e:
        from tandem.api.v1alpha1.adaptertraining import TRANSIENT_MODEL_REASONS

        finish({"error": e.reason, "message": str(e)})
        return EXIT_RETRY if e.reason in TRANSIENT_MODEL_REASONS else EXIT_PERMANENT
    finish({"baseModel": args.uri, "folder": str(folder)})
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
