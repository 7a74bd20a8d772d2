"""What one evaluation produces: a record per (question, strategy), and the scorecard built from them.

Plain dataclasses, so the report, the status and `scorecard.json` all read the same figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# The escalation ladder, cheapest first: what a strategy costs to build and keep up to date.
Rung = Literal["prompt", "rag", "fine-tune", "hybrid", "raft-hybrid"]
LADDER: tuple[Rung, ...] = ("prompt", "rag", "fine-tune", "hybrid", "raft-hybrid")

LEXICAL = (
    "lexical rules: the reference found in the answer; a claim supported when one passage holds its "
    "numbers, codes and most of its words"
)
INTERVALS = "95%: Wilson score for shares, normal approximation for means (none below 2 answers)"
# A strategy with more of its answers failed than this share is not compared: its figures describe the
# outage (e.g. a vector store that was down), not the strategy, and the run makes no recommendation.
ERROR_SHARE_LIMIT = 0.10


@dataclass(frozen=True)
class Question:
    line: int  # 1-based line in the question set, for messages
    question: str
    reference: str
    documents: tuple[str, ...] = ()
    kind: str = "fact"
    tenant: str | None = None

    @property
    def answerable(self) -> bool:
        return self.kind != "unanswerable"


@dataclass(frozen=True)
class StrategyInfo:
    name: str
    route: str
    adapter: str | None
    retrieval: bool
    rung: Rung


@dataclass
class Claim:
    text: str
    supported: bool


@dataclass
class Record:
    """One question asked through one strategy, scored. `error` set means no answer (kept, marked)."""

    strategy: str
    question: Question
    answer: str = ""
    error: str | None = None
    # Why there is no answer, in a word: the gateway's error code (milvus, vllm, timeout, busy...),
    # http-<status> without one, unreachable, not-asked, judge.
    error_cause: str | None = None
    correct: bool | None = None
    exact_match: bool | None = None
    token_f1: float | None = None
    in_format: bool | None = None
    refused: bool | None = None
    cited_documents: list[str] = field(default_factory=list)
    retrieved_documents: list[str] = field(default_factory=list)
    citation_precision: float | None = None  # None: nothing cited
    citation_recall: float | None = None  # None: the question names no supporting document
    claims: list[Claim] = field(default_factory=list)
    groundedness: float | None = None  # None: no passages retrieved or no claim made
    latency: dict[str, float] = field(default_factory=dict)  # seconds: total (client), embed, search, ...
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    retrieval_path: str | None = None  # what the gateway says it did: off, used, skipped


@dataclass(frozen=True)
class Estimate:
    """A figure with its 95% interval and the number of observations behind it."""

    value: float | None
    low: float | None
    high: float | None
    n: int


@dataclass(frozen=True)
class Quantiles:
    p50: float | None
    p95: float | None
    n: int


@dataclass
class StrategyCard:
    info: StrategyInfo
    answered: int
    errors: int
    metrics: dict[str, Estimate]  # correct, exactMatch, tokenF1, format, citationPrecision, ... (see METRICS)
    by_kind: dict[str, dict[str, Estimate]]  # kind -> the same metrics on that kind's questions
    latency: dict[str, Quantiles]  # stage -> quantiles (total, embed, search, generation)
    tokens: dict[str, Estimate]  # prompt, completion: mean per question
    hallucinations: int  # unsupported claims, over all answers that had passages
    errors_by_cause: dict[str, int] = field(default_factory=dict)  # Record.error_cause -> count

    @property
    def error_share(self) -> float:
        asked = self.answered + self.errors
        return self.errors / asked if asked else 0.0

    @property
    def clean(self) -> bool:
        """Few enough errors for its figures to describe the strategy (see ERROR_SHARE_LIMIT)."""
        return self.error_share <= ERROR_SHARE_LIMIT


@dataclass
class UpdateCost:
    """Making one new fact answerable: re-index its document, or retrain the adapter."""

    document: str | None  # the document re-indexed
    reindex_seconds: float | None  # chunk, embed and write that document (model already loaded)
    model_load_seconds: float | None  # loading the embedding model, paid once per ingest run
    adapter: str | None
    retrain_seconds: float | None  # the adapter's last recorded training run
    notes: list[str] = field(default_factory=list)  # why a figure is missing

    @property
    def ratio(self) -> float | None:
        if self.reindex_seconds and self.retrain_seconds:
            return self.retrain_seconds / self.reindex_seconds
        return None


@dataclass
class Expectation:
    """A claim the debate makes (e.g. "RAG beats the adapter alone on fresh facts"), checked on the data."""

    claim: str
    holds: bool | None  # None: the data cannot decide (a strategy or kind missing)
    evidence: str


@dataclass
class Recommendation:
    strategy: str | None
    rung: Rung | None
    reason: str


@dataclass
class Scorecard:
    evaluation: str
    endpoint: str
    created: str  # RFC 3339
    questions: int
    complete: bool  # every question answered by every strategy
    strategies: list[StrategyCard]
    update_cost: UpdateCost | None
    expectations: list[Expectation]
    recommendation: Recommendation
    records: list[Record]
    warnings: list[str] = field(default_factory=list)  # e.g. unknown document ids, endpoint down
    scoring: str = LEXICAL  # how correctness and groundedness were decided
    # Why the run cannot be trusted (a strategy's errors over ERROR_SHARE_LIMIT, a dependency down while
    # document ids or the update cost were checked); empty when it can. Then there is no recommendation.
    untrustworthy: list[str] = field(default_factory=list)

    @property
    def trustworthy(self) -> bool:
        return not self.untrustworthy

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


# The metric keys of StrategyCard.metrics and by_kind, in report order, with what each means.
METRICS: dict[str, str] = {
    "correct": (
        "answer correct (judge, else the reference found in the answer; a refusal on unanswerable; "
        "a reference in the house format is an example answer, which only a judge scores)"
    ),
    "factual": "questions the knowledge base answers, answered correctly",
    "exactMatch": "answer equals the reference after normalisation",
    "tokenF1": "token F1 of answer against reference",
    "format": "answer in the house format",
    "citationPrecision": "cited documents that support the answer",
    "citationRecall": "supporting documents cited",
    "groundedness": "answer claims supported by the retrieved passages",
    "refusal": "unanswerable questions refused",
    "falseRefusal": "answerable questions refused",
}
