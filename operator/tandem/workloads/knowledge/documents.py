"""Documents as read from a source, before parsing."""

from __future__ import annotations

import hashlib
import json
import mimetypes
from dataclasses import dataclass, field
from pathlib import PurePosixPath

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
    document: str
    reason: str


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
