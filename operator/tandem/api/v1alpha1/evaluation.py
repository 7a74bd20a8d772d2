"""Evaluation: one scorecard comparing a HybridEndpoint's routes (prompt only, RAG, adapter, hybrid) on a
question set: correctness, citations, groundedness, refusals, latency, tokens and the cost of an update."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from .adaptertraining import DATA_URI, STORE_URI, ConfigMapKey
from .common import (
    DNS_LABEL,
    CelRule,
    CommonStatus,
    CrossNamespaceReference,
    SecretKeyReference,
    StatusModel,
    TandemModel,
)

# What counts as "I cannot answer that" when no judge decides: case-insensitive regular expressions.
DEFAULT_REFUSALS = [
    r"\bI (do not|don't) know\b",
    r"\b(not|no information) (in|about) (the|this|these) (passages?|context|documents?|handbook)\b",
    r"\bcannot (find|answer)\b",
    r"\bno (relevant )?information\b",
    r"\bnot (mentioned|stated|provided)\b",
]


def _regex(pattern: str) -> str:
    """A Python regular expression, checked when the resource is parsed rather than mid-evaluation.
    (The API server cannot check it: CEL has no Python regex; the operator and `tandem up` do.)"""
    try:
        re.compile(pattern)
    except re.error as e:
        raise ValueError(f"not a valid regular expression ({e}): {pattern!r}") from None
    return pattern


class QuestionSet(TandemModel):
    """Questions as JSONL, one object per line: `question` and `answer` (the reference) are required;
    `documents` (ids of the supporting documents), `kind` (a label to group by; `unanswerable` marks
    questions the knowledge base cannot answer) and `tenant` are optional."""

    cel_rules = (
        CelRule("has(self.configMap) != has(self.uri)", "exactly one of configMap or uri must be set"),
    )

    config_map: ConfigMapKey | None = Field(default=None, description="JSONL in a ConfigMap key.")
    uri: str | None = Field(
        default=None, pattern=DATA_URI, description="JSONL at pvc://, file://, s3:// or https://."
    )


class Strategy(TandemModel):
    """One column of the scorecard: a route of the endpoint (its adapter and retrieval setting)."""

    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL, description="Name in the report.")
    route: str = Field(
        min_length=1, max_length=63, pattern=DNS_LABEL, description="The endpoint route to ask."
    )


class AnswerFormat(TandemModel):
    """The answer format the adapter is meant to teach, checked on every answer."""

    pattern: str = Field(
        min_length=1,
        description=(
            "Python regular expression the whole answer must match (DOTALL). A named group `answer` marks "
            "the content scored for correctness and groundedness; without it the whole answer is."
        ),
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        return _regex(pattern)


class Judge(TandemModel):
    """An optional judge model, asked through an OpenAI-compatible API, for correctness and groundedness."""

    url: str | None = Field(
        default=None,
        pattern=r"^https?://.+",
        description="Base URL of an OpenAI-compatible API (…/v1); the evaluated endpoint when omitted.",
    )
    model: str = Field(min_length=1, description="Model (or route) name the judge answers with.")
    api_key_secret_ref: SecretKeyReference | None = Field(
        default=None, description="Secret key holding the judge's API key (same namespace)."
    )


class Report(TandemModel):
    """Where the report files (report.md, report.html, scorecard.json) are written."""

    uri: str = Field(pattern=STORE_URI, description="pvc://CLAIM/PATH, s3://BUCKET/PREFIX or file:///PATH.")


class EvaluationSpec(TandemModel):
    """Which endpoint, which questions, which strategies, and how to score them."""

    endpoint_ref: CrossNamespaceReference = Field(description="The HybridEndpoint whose routes are compared.")
    questions: QuestionSet = Field(description="The question set.")
    strategies: list[Strategy] = Field(
        default_factory=list,
        max_length=16,
        description="Routes to compare, at most 16, names unique; every route of the endpoint when empty.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    tenant: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        description="Tenant asking questions that name none; the endpoint's first tenant when omitted.",
    )
    answer_format: AnswerFormat | None = Field(default=None, description="The house answer format.")
    refusal_patterns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REFUSALS),
        description="Case-insensitive regular expressions that mark an answer as a refusal.",
    )
    judge: Judge | None = Field(default=None, description="Judge model; lexical scoring when omitted.")

    @field_validator("refusal_patterns")
    @classmethod
    def _refusals_compile(cls, patterns: list[str]) -> list[str]:
        return [_regex(p) for p in patterns]

    max_tokens: int = Field(default=160, ge=1, le=8192, description="Completion tokens per answer.")
    timeout_seconds: int = Field(default=120, ge=1, le=3600, description="Time limit per request.")
    update_cost: bool = Field(
        default=True,
        description=(
            "Measure the cost of updating one fact: re-indexing a supporting document (timed now) "
            "versus retraining the adapter (the AdapterTraining's recorded run time)."
        ),
    )
    report: Report | None = Field(default=None, description="Where to write the report files.")
    image: str | None = Field(default=None, description="Job image; defaults to the operator's setting.")


class StrategySummary(StatusModel):
    """Headline figures of one strategy."""

    name: str = Field(description="Strategy name.")
    route: str = Field(description="Endpoint route.")
    rung: str = Field(description="Place on the ladder: prompt, rag, fine-tune, hybrid or raft-hybrid.")
    correct: float | None = Field(default=None, description="Share of answers judged correct.")
    answer_format: float | None = Field(default=None, description="Share of answers in the house format.")
    citation_recall: float | None = Field(default=None, description="Supporting documents cited.")
    groundedness: float | None = Field(default=None, description="Answer claims supported by passages.")
    refusal: float | None = Field(default=None, description="Unanswerable questions refused.")
    latency_p50_seconds: float | None = Field(default=None, description="Median request latency.")
    prompt_tokens: float | None = Field(default=None, description="Mean prompt tokens per question.")
    errors: int = Field(default=0, description="Questions that got no answer (kept, marked).")


class EvaluationStatus(CommonStatus):
    """Progress, then the scorecard's headline and where the report is."""

    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Terminating"] | None = Field(
        default=None,
        description=(
            "Summary of the conditions: Failed whenever Stalled is True, Terminating while the resource "
            "is being deleted (see the Ready condition for its cleanup)."
        ),
    )
    questions: int | None = Field(default=None, description="Questions in the set.")
    answered: int | None = Field(default=None, description="Answers received so far, all strategies.")
    strategies: list[StrategySummary] = Field(default_factory=list, description="Headline per strategy.")
    recommendation: str | None = Field(default=None, description="What the numbers recommend, and why.")
    report_uri: str | None = Field(default=None, description="Where the report files are.")
    job: str | None = Field(default=None, description="The Job running the evaluation.")
    start_time: str | None = Field(default=None, description="When the current run started.")
    completion_time: str | None = Field(default=None, description="When the last run finished.")
