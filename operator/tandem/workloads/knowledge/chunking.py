"""Split parsed documents into passages measured in the embedding model's tokens.

`token`: fixed windows over the whole text with overlap. `structure`: one passage per heading section
(Markdown/HTML headings, PDF pages) when it fits, token windows inside a section when it does not.
Every chunk keeps its character offsets in the document text, its heading path and its page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tandem.api.v1alpha1.knowledgebase import Chunking

from .parsing import ParsedDocument

SEPARATOR = "\n\n"  # how ParsedDocument.text joins sections; offsets below count it
# A tokenizer call: text -> character (start, end) of each token, no special tokens.
TokenOffsets = Callable[[str], Sequence[tuple[int, int]]]


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    start: int  # character offsets in ParsedDocument.text
    end: int
    heading: str
    page: int | None


def _windows(offsets: Sequence[tuple[int, int]], size: int, overlap: int) -> list[tuple[int, int]]:
    """Character spans of token windows of `size` tokens, consecutive windows sharing `overlap`."""
    if not offsets:
        return []
    spans = []
    step = max(1, size - overlap)
    start = 0
    while True:
        end = min(start + size, len(offsets))
        spans.append((offsets[start][0], offsets[end - 1][1]))
        if end == len(offsets):
            return spans
        start += step


def chunk(doc: ParsedDocument, config: Chunking, token_offsets: TokenOffsets) -> list[Chunk]:
    bases, position = [], 0
    for section in doc.sections:
        bases.append(position)
        position += len(section.text) + len(SEPARATOR)
    pieces: list[tuple[int, int, int]] = []  # (section index, start, end) in document offsets
    if config.strategy == "token":
        text = doc.text
        for start, end in _windows(token_offsets(text), config.size, config.overlap):
            owner = max(i for i, base in enumerate(bases) if base <= start)
            pieces.append((owner, start, end))
    else:
        for i, section in enumerate(doc.sections):
            offsets = token_offsets(section.text)
            if len(offsets) <= config.size:
                pieces.append((i, bases[i], bases[i] + len(section.text)))
                continue
            for start, end in _windows(offsets, config.size, config.overlap):
                pieces.append((i, bases[i] + start, bases[i] + end))
    text = doc.text
    return [
        Chunk(
            index=n,
            text=text[start:end].strip(),
            start=start,
            end=end,
            heading=doc.sections[section].heading,
            page=doc.sections[section].page,
        )
        for n, (section, start, end) in enumerate(pieces)
        if text[start:end].strip()
    ]
