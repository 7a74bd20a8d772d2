"""From a chat request and retrieved passages to the messages vLLM sees, and from its answer to citations.

Pure functions: the gateway's server does the I/O, these decide. The passage layout is the one RAFT
trains on (`tandem.workloads.prompting`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tandem.workloads.knowledge.store import Passage
from tandem.workloads.prompting import SYSTEM, user_turn
from tandem.workloads.text import MARKER, SENTENCE_END, content_words

# What the response says about retrieval: used; below-threshold (auto mode judged the passages
# irrelevant); no-passages (nothing the caller may read matched); off (route or mode says never).
RetrievalPath = Literal["used", "below-threshold", "no-passages", "off"]


class RequestError(ValueError):
    """The chat request cannot be served as sent; the message says which field."""


@dataclass(frozen=True)
class Cited:
    number: int  # the [n] the prompt gave it
    knowledge_base: str
    passage: Passage


def question_of(messages: Sequence[dict[str, Any]]) -> str:
    """The text retrieval searches for: the last user turn."""
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):  # OpenAI content parts: keep the text ones
                return " ".join(
                    str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
                )
    raise RequestError("messages: no user message to answer")


def select(
    hits: Sequence[tuple[str, Passage]], mode: str, threshold: float
) -> tuple[list[tuple[str, Passage]], RetrievalPath]:
    """Which retrieved passages go into the prompt.

    always: all of them. auto: none unless the best dense similarity reaches the threshold, and then
    those that reach it (a keyword-only hit has no similarity and rides along with a relevant set).
    """
    if not hits:
        return [], "no-passages"
    if mode == "always":
        return list(hits), "used"
    best = max((p.similarity for _, p in hits if p.similarity is not None), default=None)
    if best is None or best < threshold:
        return [], "below-threshold"
    return [(kb, p) for kb, p in hits if p.similarity is None or p.similarity >= threshold], "used"


def within_budget(token_counts: Sequence[int], budget: int) -> int:
    """How many passages, in rank order, fit in the token budget (at least the first one, trimmed
    by vLLM's context check if it is alone and too long, so a small budget still answers)."""
    used, fits = 0, 0
    for count in token_counts:
        if used + count > budget and fits:
            break
        used += count
        fits += 1
    return fits


def augment(messages: list[dict[str, Any]], cited: Sequence[Cited]) -> list[dict[str, Any]]:
    """The request's messages with the RAFT system turn first and the last user turn carrying passages."""
    out = [dict(m) for m in messages]
    system_text = SYSTEM
    if out and out[0].get("role") == "system":
        system_text = f"{SYSTEM}\n\n{out.pop(0).get('content', '')}"
    last_user = max(i for i, m in enumerate(out) if m.get("role") == "user")
    out[last_user]["content"] = user_turn(
        [c.passage for c in cited], question_of(out[last_user : last_user + 1])
    )
    return [{"role": "system", "content": system_text}, *out]


def attribute(answer: str, cited: Sequence[Cited], min_overlap: float = 0.5) -> tuple[str, set[int], str]:
    """Inline markers and the numbers the answer cites.

    When the model wrote [n] markers itself (a RAFT adapter does), they are kept and read. Otherwise each
    sentence gets the marker of the passage sharing the most of its content words, if that is at least
    `min_overlap` of them: a cheap, deterministic attribution, reported as such (`attributed`).
    """
    valid = {c.number for c in cited}
    written = {int(n) for n in MARKER.findall(answer)} & valid
    if written:
        return answer, written, "model"
    if not cited:
        return answer, set(), "none"
    words = {c.number: content_words(c.passage.text) for c in cited}
    used: set[int] = set()
    sentences = SENTENCE_END.split(answer.strip())
    marked = []
    for sentence in sentences:
        own = content_words(sentence)
        best, share = None, 0.0
        for number, passage_words in words.items():
            overlap = len(own & passage_words) / len(own) if own else 0.0
            if overlap > share:
                best, share = number, overlap
        if best is not None and share >= min_overlap:
            used.add(best)
            stripped = sentence.rstrip()
            end = len(stripped) - (1 if stripped[-1:] in ".!?" else 0)
            sentence = f"{stripped[:end]} [{best}]{stripped[end:]}"
        marked.append(sentence)
    return " ".join(marked), used, "attributed" if used else "none"


def citation(c: Cited, cited_numbers: set[int]) -> dict[str, Any]:
    p = c.passage
    return {
        "index": c.number,
        "cited": c.number in cited_numbers,
        "knowledgeBase": c.knowledge_base,
        "documentId": p.doc_id,
        "source": p.source,
        "uri": p.uri,
        "title": p.title,
        "position": {"start": p.start, "end": p.end, "page": p.page, "heading": p.heading},
        "score": round(p.score, 6),
        "similarity": None if p.similarity is None else round(p.similarity, 6),
        "text": p.text,
    }
