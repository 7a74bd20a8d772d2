"""Words and sentences of answers and passages: shared by the gateway's attribution of citations and the
evaluation's groundedness, so both judge "this sentence came from that passage" the same way."""

from __future__ import annotations

import re

MARKER = re.compile(r"\[(\d{1,3})\]")  # an inline citation marker, [1]
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[a-z0-9]+")
# Common words carry no evidence that a sentence came from a passage.
_STOP_WORDS = (
    "a an the and or of to in on at for by with is are was were be been it its this that as from which "
    "what who how when where why do does did not no yes you your we our they their he she his her i"
)
STOP = frozenset(_STOP_WORDS.split())


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in STOP}
