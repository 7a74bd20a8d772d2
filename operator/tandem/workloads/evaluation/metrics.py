"""Scoring one answer, and summarising many: pure functions with hand-checkable results.

Answer matching follows the SQuAD conventions (lower case, punctuation and articles removed, token F1).
Groundedness without a judge is lexical: a claim (a sentence of the answer) is supported when one
retrieved passage holds every number and code it states and most of its content words. That is cheap and
deterministic, misses paraphrase, and says so in the report; a judge model replaces it when configured.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

from tandem.workloads.text import MARKER, SENTENCE_END, content_words

from .records import Claim, Estimate, Quantiles

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation + "\u2014\u2013\u201c\u201d\u2018\u2019")
# Tokens a claim cannot be right without: anything with a digit, or a code in capitals (ZEBRA-1187, CC-310).
_KEY_TOKEN = re.compile(r"\b[\w.,:#/-]*\d[\w.,:#/-]*|\b[A-Z]{2,}(?:-[A-Z0-9]+)*\b")
_MARKER_WITH_SPACE = re.compile(r"\s*" + MARKER.pattern)
Z95 = 1.959964  # the normal quantile of a two-sided 95% interval


def normalize(text: str) -> str:
    lowered = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", lowered).split())


def exact_match(answer: str, reference: str) -> bool:
    return normalize(answer) == normalize(reference)


def contains(answer: str, reference: str) -> bool:
    """The reference's tokens appear, in order and adjacent, in the answer."""
    needle, hay = normalize(reference).split(), normalize(answer).split()
    if not needle:
        return False
    return any(hay[i : i + len(needle)] == needle for i in range(len(hay) - len(needle) + 1))


def token_f1(answer: str, reference: str) -> float:
    predicted, expected = normalize(answer).split(), normalize(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def is_refusal(answer: str, patterns: Sequence[str]) -> bool:
    return any(re.search(p, answer, re.IGNORECASE) for p in patterns)


def in_format(answer: str, pattern: str | None) -> tuple[bool | None, str]:
    """Whether the answer has the house format, and its content (the `answer` group, when matched)."""
    if pattern is None:
        return None, answer.strip()
    found = re.fullmatch(pattern, answer.strip(), re.DOTALL)
    if found is None:
        return False, answer.strip()
    content = found.group("answer") if "answer" in found.re.groupindex else found.group(0)
    return True, (content or "").strip()


def strip_markers(text: str) -> str:
    return _MARKER_WITH_SPACE.sub("", text).strip()


def claims(content: str) -> list[str]:
    """The answer's sentences that state something (markers removed, fragments without content dropped)."""
    out = []
    for line in content.splitlines():
        for sentence in SENTENCE_END.split(strip_markers(line)):
            if content_words(sentence):
                out.append(sentence.strip())
    return out


def key_tokens(text: str) -> set[str]:
    return {normalize(t) for t in _KEY_TOKEN.findall(text)} - {""}


def supported(claim: str, passages: Sequence[str], min_overlap: float = 0.6) -> bool:
    keys, words = key_tokens(claim), content_words(claim)
    for passage in passages:
        text = normalize(passage)
        padded = f" {text} "
        if not all(f" {k} " in padded for k in keys):
            continue
        if not words or len(words & content_words(passage)) / len(words) >= min_overlap:
            return True
    return False


def ground(content: str, passages: Sequence[str]) -> tuple[list[Claim], float | None]:
    """The claims of an answer, each marked supported or not; the supported share (None: nothing claimed
    or nothing retrieved to check against)."""
    found = [Claim(c, supported(c, passages)) for c in claims(content)]
    if not found or not passages:
        return found, None
    return found, sum(c.supported for c in found) / len(found)


def citation_scores(
    cited: Sequence[str], supporting: Sequence[str], match: Callable[[str, str], bool]
) -> tuple[float | None, float | None]:
    """Precision (cited documents that are supporting ones) and recall (supporting documents cited).

    `match(reference, doc_id)` decides whether a question's reference names a document id.
    """
    unique = list(dict.fromkeys(cited))
    precision = (
        sum(any(match(s, d) for s in supporting) for d in unique) / len(unique)
        if unique and supporting
        else None
    )
    recall = (
        sum(any(match(s, d) for d in unique) for s in supporting) / len(supporting) if supporting else None
    )
    return precision, recall


def wilson(successes: int, n: int, z: float = Z95) -> Estimate:
    """A proportion with its Wilson score interval (sound for small n and for 0 or n successes)."""
    if n == 0:
        return Estimate(None, None, None, 0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n)


def proportion(flags: Sequence[bool | None]) -> Estimate:
    known = [f for f in flags if f is not None]
    return wilson(sum(known), len(known))


def mean(values: Sequence[float | None], bounds: tuple[float, float] | None = (0.0, 1.0)) -> Estimate:
    """A mean with a normal-approximation 95% interval (clipped to `bounds`); no interval below n = 2."""
    known = [v for v in values if v is not None]
    n = len(known)
    if n == 0:
        return Estimate(None, None, None, 0)
    average = sum(known) / n
    if n < 2:
        return Estimate(average, None, None, n)
    spread = math.sqrt(sum((v - average) ** 2 for v in known) / (n - 1))
    low, high = average - Z95 * spread / math.sqrt(n), average + Z95 * spread / math.sqrt(n)
    if bounds is not None:
        low, high = max(bounds[0], low), min(bounds[1], high)
    return Estimate(average, low, high, n)


def quantile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default), so p50 of [1, 2, 3, 4] is 2.5."""
    ordered = sorted(values)
    if not ordered:
        return None
    position = (len(ordered) - 1) * q
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def quantiles(values: Sequence[float]) -> Quantiles:
    return Quantiles(quantile(values, 0.5), quantile(values, 0.95), len(values))
