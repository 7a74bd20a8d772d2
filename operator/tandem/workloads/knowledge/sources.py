"""Read every document of a source. A failing document is reported and skipped; a source that cannot be
listed at all is marked incomplete, so the indexer keeps (rather than deletes) what it indexed before.

Nothing is read outside a source's root (a ConfigMap volume, a directory): a path is resolved, symlinks
included, and must still lie inside the root, and only regular files are read (a FIFO would block).
"""

from __future__ import annotations

import errno
import functools
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tandem.api.v1alpha1.common import CONFIG_MAP_KEY
from tandem.api.v1alpha1.knowledgebase import S3_CREDENTIAL_KEYS, Source, s3_env_prefix

from .documents import FailedDocument, SourceDocument, detect_format
from .safe_http import FetchError, fetch


@dataclass
class SourceRead:
    """What one source yielded."""

    name: str
    documents: list[SourceDocument] = field(default_factory=list)
    failures: list[FailedDocument] = field(default_factory=list)
    # False when the source could not be enumerated: its absent documents must not be deleted.
    complete: bool = True


def read_source(source: Source, location: str | None = None) -> SourceRead:
    """`location`: where a configMap/directory source is mounted (cluster) or lies (local mode); for an
    http source, the directory holding its headers Secret's keys as files."""
    out = SourceRead(source.name)
    try:
        for doc_id, uri, title, data, fmt, content_type in _raw_documents(source, location, out.failures):
            out.documents.append(
                SourceDocument(
                    source=source.name,
                    doc_id=f"{source.name}/{doc_id}",
                    uri=uri,
                    data=data,
                    format=detect_format(fmt, uri, content_type, data),
                    title=title,
                    access_labels=tuple(source.access_labels),
                    metadata=dict(source.metadata),
                )
            )
    except SourceUnavailable as e:
        out.complete = False
        out.failures.append(FailedDocument(source.name, "*", str(e)))
    return out


class SourceUnavailable(Exception):
    """The source as a whole cannot be read (directory missing, bucket unreachable...)."""


RawDoc = tuple[str, str, str | None, bytes, str, str | None]  # id, uri, title, data, format, content type


def _raw_documents(source: Source, location: str | None, failures: list[FailedDocument]) -> Iterator[RawDoc]:
    """Yield readable documents; append the unreadable ones to `failures` and go on."""

    def fail(document: str, reason: str) -> None:
        failures.append(FailedDocument(source.name, document, reason))

    if source.inline is not None:
        for doc in source.inline.documents:
            yield doc.id, f"inline://{source.name}/{doc.id}", doc.title, doc.text.encode(), doc.format, None
    elif source.config_map is not None:
        if location is None:
            raise SourceUnavailable(f"ConfigMap {source.config_map.name} is not mounted")
        root = Path(location)
        if not root.is_dir():
            raise SourceUnavailable(f"ConfigMap {source.config_map.name}: {root} is not readable")
        inside = root.resolve()
        keys = source.config_map.keys or sorted(p.name for p in root.iterdir() if not p.name.startswith(".."))
        for key in keys:
            path = root / key
            if re.fullmatch(CONFIG_MAP_KEY, key) is None:
                fail(key, f"{key!r} is not a ConfigMap key (a file name in the ConfigMap, nothing else)")
                continue
            if not path.is_file():
                fail(key, f"key {key} not found in ConfigMap {source.config_map.name}")
                continue
            try:
                data = _read_inside(inside, path)
            except OSError as e:
                fail(key, f"cannot read key {key}: {e.strerror}")
                continue
            yield key, f"configmap://{source.config_map.name}/{key}", None, data, "auto", None
    elif source.directory is not None:
        root = Path(location or source.directory.path)
        if ".." in root.parts or ".." in Path(source.directory.path).parts:
            raise SourceUnavailable(f"directory {source.directory.path}: a path with '..' leaves its claim")
        if not root.is_dir():
            raise SourceUnavailable(f"directory {root} does not exist or is not a directory")
        inside = root.resolve()
        for path in _walk(root, source.directory.include):
            rel = path.relative_to(root).as_posix()
            try:
                data = _read_inside(inside, path)
            except OSError as e:
                fail(rel, f"cannot read {rel}: {e.strerror}")
                continue
            yield rel, path.resolve().as_uri(), None, data, "auto", None
    elif source.http is not None:
        spec = source.http
        headers = _secret_headers(spec.headers_secret_ref.name, location) if spec.headers_secret_ref else {}
        for url in spec.urls:
            try:
                got = fetch(
                    url,
                    allow_private=spec.allow_private_networks,
                    max_bytes=spec.max_bytes,
                    timeout=float(spec.timeout_seconds),
                    max_redirects=spec.max_redirects,
                    headers=headers,
                )
            except FetchError as e:
                fail(url, str(e))
                continue
            yield url, url, None, got.data, "auto", got.content_type
    elif source.s3 is not None:
        yield from _s3_documents(source, fail)


def _read_inside(root: Path, path: Path) -> bytes:
    """The bytes of `path` if it is a regular file inside `root` (resolved) once every symlink on the way
    is followed: a link may point within the source (a ConfigMap volume's keys are links into its
    `..data`), never out of it. OSError (with a reason in `strerror`) otherwise."""
    real = path.resolve()
    if not real.is_relative_to(root):
        raise OSError(errno.EACCES, "it leads outside the source (a symbolic link out of it)")
    # O_NONBLOCK: opening a FIFO returns at once (and is refused below) instead of waiting for a writer.
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        try:  # what was opened, should a link have been swapped in since `resolve` (Linux only)
            opened = Path(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            opened = real
        if not opened.is_relative_to(root):
            raise OSError(errno.EACCES, "it leads outside the source (a symbolic link out of it)")
        return file.read()


# RFC 9110 token characters: what a header name may be made of.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Set by the fetcher itself (Host must name the URL's host for the pinned address to work).
_RESERVED_HEADERS = {"host", "user-agent", "content-length", "transfer-encoding", "connection"}


def _secret_headers(secret: str, location: str | None) -> dict[str, str]:
    """The headers an http source's Secret holds, mounted as one file per key (Kubernetes Secret volume:
    the keys are symlinks next to `..data` entries, which are skipped)."""
    root = Path(location) if location else None
    if root is None or not root.is_dir():
        raise SourceUnavailable(f"headers Secret {secret} is not mounted (expected at {location})")
    headers: dict[str, str] = {}
    for path in sorted(root.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        value = path.read_text().strip()
        if not _HEADER_NAME.fullmatch(path.name) or path.name.lower() in _RESERVED_HEADERS:
            raise SourceUnavailable(
                f"headers Secret {secret}: key {path.name!r} is not a header the source may set"
            )
        if "\r" in value or "\n" in value:
            raise SourceUnavailable(f"headers Secret {secret}: the value of {path.name} spans lines")
        headers[path.name] = value
    if not headers:
        raise SourceUnavailable(f"headers Secret {secret} holds no keys")
    return headers


def _walk(root: Path, patterns: list[str]) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if any(_matches(rel, p) for p in patterns):
                yield path


@functools.cache
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Path glob as shells and most tools read it: `*` and `?` stay within one path segment, `**` spans
    segments, and `**/` also matches at the top level. (fnmatch's `*` crosses `/`, so `*.md` would take
    `finance/budget.md` too: a file meant for a separately labelled source would leak into this one.)"""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape("["))
                i += 1
            else:
                body = pattern[i + 1 : end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _matches(rel: str, pattern: str) -> bool:
    return _glob_regex(pattern).fullmatch(rel) is not None


def _s3_documents(source: Source, fail: Callable[[str, str], None]) -> Iterator[RawDoc]:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    spec = source.s3
    assert spec is not None
    prefix = s3_env_prefix(source.name)
    key_id, secret = (os.environ.get(f"{prefix}_{key}") for key in S3_CREDENTIAL_KEYS)
    client = boto3.client(
        "s3",
        endpoint_url=spec.endpoint,
        region_name=spec.region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=spec.bucket, Prefix=spec.prefix)
        keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
    except (BotoCoreError, ClientError) as e:
        raise SourceUnavailable(f"s3://{spec.bucket}/{spec.prefix}: {e}") from None
    for key in keys:
        rel = key[len(spec.prefix) :].lstrip("/") or key
        if not any(_matches(rel, p) for p in spec.include):
            continue
        try:
            got = client.get_object(Bucket=spec.bucket, Key=key)
            data = got["Body"].read()
        except (BotoCoreError, ClientError) as e:
            fail(key, f"s3://{spec.bucket}/{key}: {e}")
            continue
        yield rel, f"s3://{spec.bucket}/{key}", None, data, "auto", got.get("ContentType")
