"""Parsing keeps structure (headings, pages); chunking respects token budgets and offsets."""

from __future__ import annotations

import re

import pytest

from tandem.api.v1alpha1.knowledgebase import Chunking
from tandem.workloads.knowledge.chunking import chunk
from tandem.workloads.knowledge.documents import SourceDocument, detect_format
from tandem.workloads.knowledge.parsing import ParseError, parse


def words(text: str) -> list[tuple[int, int]]:
    """A stand-in tokenizer: one token per word (the real one is the embedding model's)."""
    return [m.span() for m in re.finditer(r"\S+", text)]


def doc(text: str | bytes, fmt: str, title: str | None = None) -> SourceDocument:
    data = text.encode() if isinstance(text, str) else text
    return SourceDocument(source="s", doc_id="s/d", uri="inline://s/d", data=data, format=fmt, title=title)


def test_markdown_sections_carry_heading_paths() -> None:
    parsed = parse(doc("intro line\n# Travel\nTrains.\n## Desk\nCode QF-7.\n# Leave\n27 days.", "markdown"))
    assert parsed.title == "Travel"
    assert [s.heading for s in parsed.sections] == ["", "Travel", "Travel > Desk", "Leave"]
    assert parsed.sections[2].text == "Desk\nCode QF-7."


def test_markdown_code_fence_is_not_a_heading() -> None:
    parsed = parse(doc("# Real\n```\n# not a heading\n```\n", "markdown"))
    assert [s.heading for s in parsed.sections] == ["Real"]


def test_html_drops_scripts_and_follows_headings() -> None:
    html = (
        "<html><title>T</title><body><h1>A</h1><p>one</p><script>x()</script>"
        "<h2>B</h2><ul><li>two</li></ul></body>"
    )
    parsed = parse(doc(html, "html"))
    assert parsed.title == "T"
    assert [(s.heading, s.text) for s in parsed.sections] == [("A", "A\none"), ("A > B", "B\ntwo")]


def test_unparseable_and_empty_documents_raise_with_a_reason() -> None:
    with pytest.raises(ParseError, match="not a readable PDF"):
        parse(doc(b"%PDF-1.4 garbage", "pdf"))
    with pytest.raises(ParseError, match="no text found"):
        parse(doc("  \n\n", "markdown"))
    with pytest.raises(ParseError, match="not text"):
        parse(doc(bytes(range(256)), "text"))


def test_format_detection() -> None:
    assert detect_format("auto", "a/b.MD") == "markdown"
    assert detect_format("auto", "https://x/page", "text/html; charset=utf-8") == "html"
    assert detect_format("auto", "noext", None, b"%PDF-1.7...") == "pdf"
    assert detect_format("auto", "noext", None, b"  <!DOCTYPE html><p>") == "html"
    assert detect_format("text", "a.html") == "text"  # an explicit format wins


def test_structure_chunks_keep_small_sections_whole_and_split_big_ones() -> None:
    long = " ".join(f"w{i}" for i in range(40))
    parsed = parse(doc(f"# Small\nfew words here\n# Big\n{long}", "markdown"))
    chunks = chunk(parsed, Chunking(strategy="structure", size=16, overlap=4), words)
    assert chunks[0].text == "Small\nfew words here" and chunks[0].heading == "Small"
    big = [c for c in chunks if c.heading == "Big"]
    assert len(big) == 4 and all(len(words(c.text)) <= 16 for c in big)
    assert big[1].text.split()[:4] == big[0].text.split()[-4:]  # consecutive chunks share 4 tokens
    text = parsed.text
    assert all(text[c.start : c.end].strip() == c.text for c in chunks)  # offsets point at the passage


def test_token_chunks_cover_the_text_with_overlap() -> None:
    body = " ".join(f"t{i}" for i in range(40))
    parsed = parse(doc(body, "text"))
    chunks = chunk(parsed, Chunking(strategy="token", size=16, overlap=4), words)
    tokens = [t for c in chunks for t in c.text.split()]
    assert set(tokens) == set(body.split())
    assert [len(c.text.split()) for c in chunks] == [16, 16, 16]
    assert [c.text.split()[0] for c in chunks] == ["t0", "t12", "t24"]


def test_pdf_pages_become_sections() -> None:
    import tempfile
    from pathlib import Path

    from tests.corpus import write_pdf

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.pdf"
        write_pdf(path, ["first page text", "second page text"], "Manual")
        parsed = parse(doc(path.read_bytes(), "pdf"))
    assert parsed.title == "Manual"
    assert [(s.page, s.text) for s in parsed.sections] == [(1, "first page text"), (2, "second page text")]
