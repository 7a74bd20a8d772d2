"""Read the documents of a source, one at a time. A failing document is reported and skipped; a source
that cannot be listed at all (or only in part) is marked incomplete, so the indexer keeps (rather than
deletes) what it indexed before.

A document that could not be read is reported under the very id it has when it is read (its name
within the source: an S3 key without the source's prefix, a path relative to the directory, a
ConfigMap key, a URL), so its stored chunks are kept: it has not gone from the source.

What a citation shows of a document (its `uri`, its id) never holds the machine's file system or a URL's
credentials: a directory document is `directory://<source>/<path within the directory>`, a URL is shown
without user-info, query and fragment (where passwords, tokens and signatures travel: see shown_url).

Nothing is read outside a source's root (a ConfigMap volume, a directory): a path is resolved, symlinks
included, and must still lie inside the root, and only regular files are read (a FIFO would block).
Nothing is read whole that is larger than MAX_DOCUMENT_BYTES (an http source's maxBytes if lower): the
declared size (file size, S3 object size, HTTP Content-Length) is checked before the body is read, and
the count of bytes while it is read. A URL gets timeoutSeconds in all (see safe_http); an S3 object
S3_OBJECT_SECONDS.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

from tandem.api.v1alpha1.common import CONFIG_MAP_KEY
from tandem.api.v1alpha1.knowledgebase import S3_CREDENTIAL_KEYS, Source, s3_env_prefix

from .documents import MAX_DOCUMENT_BYTES, FailedDocument, SourceDocument, detect_format, document_id
from .safe_http import FetchError, fetch

# The time one S3 object may take to read, in all (each network read is bounded by botocore's own
# read timeout, 60 s, on top); an object that takes longer fails alone.
S3_OBJECT_SECONDS = 300.0
_READ_CHUNK = 1 << 20


class SourceReading(Protocol):
    """What the indexer reads of a source: a SourceRead (whole) or a SourceStream (one at a time).
    `failures` and `complete` are read once `documents` has been iterated."""

    @property
    def name(self) -> str: ...

    @property
    def documents(self) -> Iterable[SourceDocument]: ...

    @property
    def failures(self) -> list[FailedDocument]: ...

    @property
    def complete(self) -> bool: ...


@dataclass
class SourceRead:
    """What one source yielded, read whole (small sources, tests, tools); ingest streams (SourceStream)."""

    name: str
    documents: list[SourceDocument] = field(default_factory=list)
    failures: list[FailedDocument] = field(default_factory=list)
    # False when the source could not be enumerated: its absent documents must not be deleted.
    complete: bool = True


class SourceStream:
    """A source read lazily: iterating `documents` reads one document at a time (listing the source as it
    goes). `failures` and `complete` grow as it is read and are final once `documents` is exhausted."""

    def __init__(self, source: Source, location: str | None = None) -> None:
        self.name = source.name
        self.failures: list[FailedDocument] = []
        self.complete = True
        self.documents: Iterator[SourceDocument] = self._read(source, location)

    def _read(self, source: Source, location: str | None) -> Iterator[SourceDocument]:
        def fail(document: str, reason: str) -> None:
            self.failures.append(FailedDocument(source.name, document, reason))

        def partial(document: str, reason: str) -> None:
            """Part of the source could not be listed: nothing of it is removed this run."""
            self.complete = False
            fail(document, f"{reason}; nothing of source {source.name} is removed until it can be listed")

        try:
            for raw in _raw_documents(source, location, fail, partial):
                yield SourceDocument(
                    source=source.name,
                    doc_id=document_id(source.name, raw.id),
                    uri=raw.uri,
                    data=raw.data,
                    format=detect_format(raw.format, raw.uri, raw.content_type, raw.data),
                    title=raw.title,
                    access_labels=tuple(source.access_labels),
                    metadata=dict(source.metadata),
                    name=raw.id,
                )
        except SourceUnavailable as e:
            self.complete = False
            fail("*", str(e))


def stream_source(source: Source, location: str | None = None) -> SourceStream:
    """`location`: where a configMap/directory source is mounted (cluster) or lies (local mode); for an
    http source, the directory holding its headers Secret's keys as files. Nothing is read until the
    stream's documents are iterated."""
    return SourceStream(source, location)


def read_source(source: Source, location: str | None = None) -> SourceRead:
    """Every document of `source` in memory (see stream_source for `location`)."""
    stream = stream_source(source, location)
    documents = list(stream.documents)
    return SourceRead(stream.name, documents, stream.failures, stream.complete)


class SourceUnavailable(Exception):
    """The source as a whole cannot be read (directory missing, bucket unreachable...)."""


@dataclass(frozen=True)
class RawDocument:
    id: str  # the document's id within its source: failures of this document are reported under it
    uri: str
    data: bytes
    format: str = "auto"
    content_type: str | None = None
    title: str | None = None


Report = Callable[[str, str], None]  # (document id within the source, reason)


def _raw_documents(
    source: Source, location: str | None, fail: Report, partial: Report
) -> Iterator[RawDocument]:
    """Yield readable documents; `fail` the unreadable ones and go on; `partial` a part of the source
    that cannot be listed (the source is then incomplete)."""
    if source.inline is not None:
        for doc in source.inline.documents:
            yield RawDocument(
                doc.id, f"inline://{source.name}/{doc.id}", doc.text.encode(), doc.format, None, doc.title
            )
    elif source.config_map is not None:
        yield from _config_map_documents(source, location, fail)
    elif source.directory is not None:
        yield from _directory_documents(source, location, fail, partial)
    elif source.http is not None:
        spec = source.http
        headers = _secret_headers(spec.headers_secret_ref.name, location) if spec.headers_secret_ref else {}
        ids = _http_ids(spec.urls)
        for url in spec.urls:
            try:
                got = fetch(
                    url,
                    allow_private=spec.allow_private_networks,
                    max_bytes=min(spec.max_bytes, MAX_DOCUMENT_BYTES),
                    timeout=float(spec.timeout_seconds),
                    max_redirects=spec.max_redirects,
                    headers=headers,
                )
            except FetchError as e:
                # Reported under the document's id, so its chunks are kept; the reason (in status) names
                # the URL as citations do.
                fail(ids[url], str(e).replace(url, shown_url(url)))
                continue
            yield RawDocument(ids[url], shown_url(url), got.data, content_type=got.content_type)
    elif source.s3 is not None:
        yield from _s3_documents(source, fail)


def _config_map_documents(source: Source, location: str | None, fail: Report) -> Iterator[RawDocument]:
    spec = source.config_map
    assert spec is not None
    if location is None:
        raise SourceUnavailable(f"ConfigMap {spec.name} is not mounted")
    root = Path(location)
    try:
        if not root.is_dir():
            raise SourceUnavailable(f"ConfigMap {spec.name}: {root} is not readable")
        inside = root.resolve()
        keys = spec.keys or sorted(p.name for p in root.iterdir() if not p.name.startswith(".."))
    except (OSError, RuntimeError) as e:
        raise SourceUnavailable(f"ConfigMap {spec.name}: cannot list {root}: {_why(e)}") from None
    for key in keys:
        if re.fullmatch(CONFIG_MAP_KEY, key) is None:
            fail(key, f"{key!r} is not a ConfigMap key (a file name in the ConfigMap, nothing else)")
            continue
        try:
            data = _read_inside(inside, root / key, MAX_DOCUMENT_BYTES)
        except FileNotFoundError:
            fail(key, f"key {key} not found in ConfigMap {spec.name}")
            continue
        except OSError as e:
            fail(key, f"cannot read key {key}: {_why(e)}")
            continue
        yield RawDocument(key, f"configmap://{spec.name}/{key}", data)


def _directory_documents(
    source: Source, location: str | None, fail: Report, partial: Report
) -> Iterator[RawDocument]:
    spec = source.directory
    assert spec is not None
    root = Path(location or spec.path)
    if ".." in root.parts or ".." in Path(spec.path).parts:
        raise SourceUnavailable(f"directory {spec.path}: a path with '..' leaves its claim")
    try:
        if not root.is_dir():
            raise SourceUnavailable(f"directory {root} does not exist or is not a directory")
        inside = root.resolve()
    except (OSError, RuntimeError) as e:
        raise SourceUnavailable(f"directory {root}: {_why(e)}") from None

    def unlisted(error: OSError) -> None:
        folder = Path(error.filename) if error.filename else root
        rel = folder.relative_to(root).as_posix() if folder.is_relative_to(root) else str(folder)
        if rel == ".":
            raise SourceUnavailable(f"directory {root}: cannot list it: {_why(error)}")
        partial(f"{rel}/", f"cannot list folder {rel}: {_why(error)}")

    for path in _walk(root, spec.include, unlisted):
        rel = path.relative_to(root).as_posix()
        try:
            data = _read_inside(inside, path, MAX_DOCUMENT_BYTES)
        except OSError as e:
            fail(rel, f"cannot read {rel}: {_why(e)}")
            continue
        yield RawDocument(rel, _directory_uri(source.name, rel, path), data)


def _directory_uri(source: str, rel: str, path: Path) -> str:
    """Where a directory document is, as citations show it: the source and the path within its
    directory, never the absolute path (a home folder in local mode, a mount point in a pod). `path`
    (the file) is unused here; it is a parameter so tests can put back the old absolute form."""
    del path
    # Bytes as the file system has them (a name that is not UTF-8 is kept, percent-encoded).
    return f"directory://{source}/{quote(os.fsencode(rel), safe='/')}"


def shown_url(url: str) -> str:
    """`url` as a citation may show it: scheme, host, port and path. User-info (`user:password@`), the
    query (`?token=`, `sig=`, `X-Amz-Signature=`...: presigned and tokenised URLs carry their secret
    there) and the fragment are dropped. Which query parameters are secret cannot be known, so none is
    shown; the path keeps naming the document."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _http_ids(urls: Iterable[str]) -> dict[str, str]:
    """Each URL's id within its source. A URL that holds nothing shown_url drops is its own id, as it
    always was (so re-indexing matches it). Any other is known by its shown form, and when several URLs
    of the source share that form (the same path with different queries, or beside the plain URL) by that
    form and "#<n>", n counting those URLs in the order listed: no secret goes into an id, not even
    hashed (a short token or password could be guessed from its digest)."""
    ids: dict[str, str] = {}
    secretive: dict[str, list[str]] = {}
    for url in dict.fromkeys(urls):
        shown = shown_url(url)
        if shown == url:
            ids[url] = url
        else:
            secretive.setdefault(shown, []).append(url)
    for shown, group in secretive.items():
        if len(group) == 1 and shown not in ids:
            ids[group[0]] = shown
        else:
            ids.update((url, f"{shown}#{n}") for n, url in enumerate(group, 1))
    return ids


def _why(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return f"{type(error).__name__}: {error}"


def _read_inside(root: Path, path: Path, limit: int) -> bytes:
    """The bytes of `path` if it is a regular file inside `root` (resolved) once every symlink on the way
    is followed: a link may point within the source (a ConfigMap volume's keys are links into its
    `..data`), never out of it. At most `limit` bytes: a larger file is refused from its size, unread.
    OSError (with a reason in `strerror`) otherwise."""
    try:
        real = path.resolve()
    except RuntimeError:  # a symlink loop (Python before 3.13)
        raise OSError(errno.ELOOP, "a loop of symbolic links") from None
    if not real.is_relative_to(root):
        raise OSError(errno.EACCES, "it leads outside the source (a symbolic link out of it)")
    # O_NONBLOCK: opening a FIFO returns at once (and is refused below) instead of waiting for a writer.
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        try:  # what was opened, should a link have been swapped in since `resolve` (Linux only)
            opened = Path(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            opened = real
        if not opened.is_relative_to(root):
            raise OSError(errno.EACCES, "it leads outside the source (a symbolic link out of it)")
        if status.st_size > limit:
            raise OSError(errno.EFBIG, _too_large(status.st_size, limit))
        data = file.read(limit + 1)
        if len(data) > limit:  # it grew since
            raise OSError(errno.EFBIG, f"more than the {limit} bytes a document may have")
        return data


def _too_large(size: int, limit: int) -> str:
    return f"{size} bytes is more than the {limit} a document may have"


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
    try:
        files = [p for p in sorted(root.iterdir()) if not p.name.startswith(".") and p.is_file()]
        values = {p.name: p.read_text().strip() for p in files}
    except (OSError, UnicodeDecodeError) as e:
        raise SourceUnavailable(f"headers Secret {secret}: cannot read it: {_why(e)}") from None
    for path in files:
        value = values[path.name]
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


def _walk(root: Path, patterns: list[str], unlisted: Callable[[OSError], None]) -> Iterator[Path]:
    """The files under `root` that match a pattern, in a stable order; a folder that cannot be listed
    goes to `unlisted` (os.walk would skip it silently, and its files would look deleted)."""
    for dirpath, dirnames, filenames in os.walk(root, onerror=unlisted):
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


def _s3_documents(source: Source, fail: Report) -> Iterator[RawDocument]:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    spec = source.s3
    assert spec is not None
    prefix = s3_env_prefix(source.name)
    key_id, secret = (os.environ.get(f"{prefix}_{key}") for key in S3_CREDENTIAL_KEYS)
    where = f"s3://{spec.bucket}/{spec.prefix}"
    try:
        client = boto3.client(
            "s3",
            endpoint_url=spec.endpoint,
            region_name=spec.region,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
        )
        pages = iter(client.get_paginator("list_objects_v2").paginate(Bucket=spec.bucket, Prefix=spec.prefix))
    except (BotoCoreError, ClientError, ValueError) as e:
        raise SourceUnavailable(f"{where}: {e}") from None
    while True:  # page by page: the listing of a large bucket is not held whole either
        try:
            page = next(pages, None)
        except (BotoCoreError, ClientError) as e:
            raise SourceUnavailable(f"{where}: {e}") from None
        if page is None:
            return
        for obj in page.get("Contents", []):
            key = obj["Key"]
            rel = _s3_name(key, spec.prefix)
            if not any(_matches(rel, p) for p in spec.include):
                continue
            uri = f"s3://{spec.bucket}/{key}"
            size = obj.get("Size")
            if isinstance(size, int) and size > MAX_DOCUMENT_BYTES:
                fail(rel, f"{uri}: {_too_large(size, MAX_DOCUMENT_BYTES)}")
                continue
            try:
                data, content_type = _s3_object(client, spec.bucket, key, MAX_DOCUMENT_BYTES)
            except (BotoCoreError, ClientError, OSError, _Refused) as e:
                fail(rel, f"{uri}: {e}")
                continue
            yield RawDocument(rel, uri, data, content_type=content_type)


def _s3_name(key: str, prefix: str) -> str:
    """An object's id within its source: its key without the source's prefix (the key itself should
    nothing be left). Documents and their failures are both named by it."""
    return key[len(prefix) :].lstrip("/") or key


class _Refused(Exception):
    """An object that may not be read (too large, too slow)."""


def _s3_object(client: Any, bucket: str, key: str, limit: int) -> tuple[bytes, str | None]:
    """The object's bytes and content type; at most `limit` bytes and S3_OBJECT_SECONDS."""
    deadline = time.monotonic() + S3_OBJECT_SECONDS
    got = client.get_object(Bucket=bucket, Key=key)
    body = got["Body"]
    try:
        declared = got.get("ContentLength")
        if isinstance(declared, int) and declared > limit:
            raise _Refused(_too_large(declared, limit))
        data = bytearray()
        while chunk := body.read(_READ_CHUNK):
            data += chunk
            if len(data) > limit:
                raise _Refused(f"more than the {limit} bytes a document may have")
            if time.monotonic() > deadline:
                raise _Refused(f"not read within {S3_OBJECT_SECONDS:.0f} s")
        return bytes(data), got.get("ContentType")
    finally:
        body.close()
