"""Documents as read from a source, before parsing, and the bounds a document must keep to be stored."""

from __future__ import annotations

import hashlib
import json
import mimetypes
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from .store import MAX_DOC_ID

# The largest document read: checked against its declared size (HTTP Content-Length, S3 object size,
# file size) before its body is read, and again while reading. An http source's maxBytes may only lower it.
MAX_DOCUMENT_BYTES = 100_000_000
# A chunk's `metadata` (the source's metadata) is a Milvus JSON value: the server refuses one over 65,536
# bytes, and with it the whole write (milvus.io, "JSON Field", limits).
MAX_METADATA_BYTES = 65_536
# The digest that ends a shortened document id (see document_id): 128 bits of SHA-256, in hex.
_ID_DIGEST = 32

FORMATS = ("text", "markdown", "html", "pdf")
_SUFFIXES = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}


@dataclass(frozen=True)
class SourceDocument:
    """One document of one source: raw bytes plus everything a citation and the ACL need."""

    source: str
    doc_id: str  # stable across runs: "<source>/<id within the source>"
    uri: str  # where it came from, shown in citations
    data: bytes
    format: str  # one of FORMATS, resolved from "auto" by name or content type
    title: str | None = None
    access_labels: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    name: str = ""  # the id within the source (doc_id may be its shortened form); "" if doc_id is whole

    @property
    def local_id(self) -> str:
        """The document's id within its source, as failures name it."""
        return self.name or self.doc_id.split("/", 1)[-1]

    def content_hash(self, config_digest: str) -> str:
        """Changes whenever the chunks stored for this document would change."""
        digest = hashlib.sha256()
        digest.update(self.data)
        envelope = {
            "format": self.format,
            "title": self.title,
            "labels": sorted(self.access_labels),
            "metadata": self.metadata,
            "uri": self.uri,
            "config": config_digest,
        }
        digest.update(json.dumps(envelope, sort_keys=True).encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class FailedDocument:
    """A document (or a whole source) that could not be read or parsed; reported, never fatal."""

    source: str
    document: str  # the id within the source, or "*" for the whole source
    reason: str

    @property
    def doc_id(self) -> str:
        """The stored document this failure is about: its chunks stay, it has not gone from the source."""
        return document_id(self.source, self.document)


def document_id(source: str, name: str) -> str:
    """The stored id of document `name` of `source`: "<source>/<name>", the same on every run.

    An id longer than the collection's doc_id field (MAX_DOC_ID, counted in UTF-8 bytes as the Milvus
    server counts) would fail the whole write batch it is in: it is cut to fit and ends with "#" and a
    digest of the whole id, so two long ids that share their beginning stay apart.
    """
    whole = clean_text(f"{source}/{name}")
    encoded = whole.encode()
    if len(encoded) <= MAX_DOC_ID:
        return whole
    digest = hashlib.sha256(encoded).hexdigest()[:_ID_DIGEST]
    return f"{fit_utf8(whole, MAX_DOC_ID - _ID_DIGEST - 1)}#{digest}"


def clean_text(text: str) -> str:
    """`text` as Unicode that encodes: a lone surrogate (from a file name that is not UTF-8, which Python
    reads with surrogateescape) becomes its bytes, escaped ("\\xff"), instead of failing the write."""
    try:
        text.encode()
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace")


def fit_utf8(text: str, limit: int) -> str:
    """`text` (cleaned, see clean_text) cut to at most `limit` UTF-8 bytes on a character boundary: what
    a VARCHAR of max_length `limit` holds on a Milvus server, which counts bytes (milvus-lite counts
    characters, never more)."""
    text = clean_text(text)
    if len(text) * 4 <= limit:
        return text
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", "ignore")


def detect_format(declared: str, name: str, content_type: str | None = None, data: bytes = b"") -> str:
    """Resolve a declared format ("auto" or explicit) from the file name, content type and magic bytes."""
    if declared != "auto":
        return declared
    if data.startswith(b"%PDF-"):
        return "pdf"
    suffix = PurePosixPath(name.split("?")[0]).suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    mime = (content_type or mimetypes.guess_type(name)[0] or "").split(";")[0].strip().lower()
    if mime == "application/pdf":
        return "pdf"
    if mime in ("text/html", "application/xhtml+xml"):
        return "html"
    if mime in ("text/markdown", "text/x-markdown"):
        return "markdown"
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "html"
    return "text"
