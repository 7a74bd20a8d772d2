"""Turn raw documents into text sections (heading path, page) with maintained parsers:
markdown-it-py for Markdown, BeautifulSoup for HTML, pypdf for PDF."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

from .documents import SourceDocument


class ParseError(Exception):
    """The document could not be turned into text; the message names the cause."""


@dataclass(frozen=True)
class Section:
    """A run of text under one heading (or one PDF page)."""

    heading: str  # "Travel policy > Booking", or "" before the first heading
    text: str
    page: int | None = None  # 1-based PDF page


@dataclass(frozen=True)
class ParsedDocument:
    title: str
    sections: list[Section]

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections)


def parse(doc: SourceDocument) -> ParsedDocument:
    try:
        if doc.format == "pdf":
            parsed = _pdf(doc.data)
        else:
            text = _decode(doc.data)
            parsed = {"markdown": _markdown, "html": _html}.get(doc.format, _plain)(text)
    except ParseError:
        raise
    except Exception as e:  # parsers raise many types; the document is reported, never fatal
        raise ParseError(f"{doc.format} parser failed: {type(e).__name__}: {e}") from None
    sections = [s for s in parsed.sections if s.text.strip()]
    if not sections:
        raise ParseError("no text found (empty document, or a scanned PDF without a text layer)")
    # Without a title of its own, a document is called by the last part of its name (the name within its
    # source: doc_id may be a shortened form ending in a digest).
    title = doc.title or parsed.title or doc.local_id.rstrip("/").rsplit("/", 1)[-1] or doc.local_id
    return ParsedDocument(title=title, sections=sections)


def _decode(data: bytes) -> str:
    for encoding in ("utf-8", "utf-16"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if "\x00" not in text:
            return text
    raise ParseError("not text: neither UTF-8 nor UTF-16 (binary file?)")


def _plain(text: str) -> ParsedDocument:
    return ParsedDocument(title="", sections=[Section("", text.strip())])


def _markdown(text: str) -> ParsedDocument:
    from markdown_it import MarkdownIt

    lines = text.splitlines()
    tokens = MarkdownIt("commonmark").parse(text)
    headings: list[tuple[int, int, str]] = []  # (line, level, text)
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.map is not None:
            inline = tokens[i + 1].content.strip()
            headings.append((token.map[0], int(token.tag[1]), inline))
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    starts = [h[0] for h in headings] + [len(lines)]
    if headings and headings[0][0] > 0:
        sections.append(Section("", "\n".join(lines[: headings[0][0]]).strip()))
    if not headings:
        sections.append(Section("", text.strip()))
    for (line, level, heading), end in zip(headings, starts[1:], strict=True):
        path = [(lvl, h) for lvl, h in path if lvl < level] + [(level, heading)]
        body = "\n".join(lines[line + 1 : end]).strip()
        heading_path = " > ".join(h for _, h in path)
        # The heading itself is part of the passage: it often carries the words a question uses.
        sections.append(Section(heading_path, f"{heading}\n{body}".strip()))
    title = next((h for _, level, h in headings if level == 1), "")
    return ParsedDocument(title=title, sections=sections)


_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")


def _html(text: str) -> ParsedDocument:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "nav", "footer"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    body = soup.body or soup
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    current: list[str] = []
    heading_path = ""

    def flush() -> None:
        joined = "\n".join(t for t in current if t).strip()
        if joined:
            sections.append(Section(heading_path, re.sub(r"[ \t]+", " ", joined)))
        current.clear()

    for element in body.find_all([*_HEADINGS, "p", "li", "pre", "td", "th", "blockquote", "dd", "dt"]):
        if element.name in _HEADINGS:
            flush()
            level = int(element.name[1])
            heading = element.get_text(" ", strip=True)
            path = [(lvl, h) for lvl, h in path if lvl < level] + [(level, heading)]
            heading_path = " > ".join(h for _, h in path)
            current.append(heading)
            if not title and level == 1:
                title = heading
        elif not element.find_parent(["p", "li", "td", "th", "blockquote", "dd", "dt"]):
            current.append(element.get_text(" ", strip=True))
    flush()
    if not sections:
        sections.append(Section("", body.get_text("\n", strip=True)))
    return ParsedDocument(title=title, sections=sections)


def _pdf(data: bytes) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise ParseError("the PDF is encrypted")
        pages = [(i + 1, page.extract_text() or "") for i, page in enumerate(reader.pages)]
        title = str(reader.metadata.get("/Title") or "") if reader.metadata else ""
    except PdfReadError as e:
        raise ParseError(f"not a readable PDF: {e}") from None
    sections = [Section(f"page {number}", text.strip(), page=number) for number, text in pages]
    return ParsedDocument(title=title, sections=sections)
