"""Asking the endpoint: each question through each strategy's route, as an OpenAI client would, with the
gateway's trace; then scoring the answer. One request at a time, so latency is the endpoint's own and
not a queue's. An endpoint that stops answering ends the run early with what was answered kept."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from . import metrics
from .questions import document_matches
from .records import Claim, Question, Record, StrategyInfo

# After this many requests in a row that could not reach the endpoint, the rest are not asked.
DOWN_AFTER = 3


@dataclass
class Scoring:
    """How answers are scored: the house format, what a refusal looks like, and an optional judge."""

    answer_format: str | None
    refusal_patterns: Sequence[str]
    judge: Judge | None = None


class Judge:
    """A model asked yes/no questions through an OpenAI-compatible API."""

    def __init__(self, client: httpx.Client, model: str, headers: dict[str, str]) -> None:
        self.client, self.model, self.headers = client, model, headers

    def _yes(self, prompt: str) -> bool:
        response = self.client.post(
            "/chat/completions",
            json={
                "model": self.model,
                "messages": [{"role": "user", "content": prompt}],
                "temperature": 0,
                "max_tokens": 3,
            },
            headers=self.headers,
        )
        response.raise_for_status()
        text = str(response.json()["choices"][0]["message"]["content"] or "")
        return text.strip().lower().startswith("yes")

    def correct(self, question: Question, answer: str) -> bool:
        return self._yes(
            f"Question: {question.question}\nReference answer: {question.reference}\n"
            f"Candidate answer: {answer}\n"
            "Does the candidate answer give the same answer as the reference? Reply yes or no."
        )

    def supported(self, claim: str, passages: Sequence[str]) -> bool:
        context = "\n\n".join(f"Passage {i}: {p}" for i, p in enumerate(passages, start=1))
        return self._yes(
            f"{context}\n\nClaim: {claim}\nIs the claim supported by the passages? Reply yes or no."
        )


def score(record: Record, body: dict[str, Any], scoring: Scoring) -> None:
    """Fill the record's figures from the gateway's response body."""
    q = record.question
    message = (body.get("choices") or [{}])[0].get("message") or {}
    record.answer = str(message.get("content") or "")
    citations = body.get("citations") or []
    record.retrieved_documents = [str(c.get("documentId")) for c in citations]
    record.cited_documents = list(
        dict.fromkeys(str(c.get("documentId")) for c in citations if c.get("cited"))
    )
    passages = [str(c.get("text") or "") for c in citations]
    tandem = body.get("tandem") or {}
    record.retrieval_path = tandem.get("retrieval")
    for stage, seconds in ((tandem.get("trace") or {}).get("latencySeconds") or {}).items():
        if stage != "total":  # the client's own clock measures the total, queueing included
            record.latency[stage] = float(seconds)
    usage = body.get("usage") or {}
    record.prompt_tokens = usage.get("prompt_tokens")
    record.completion_tokens = usage.get("completion_tokens")

    record.in_format, content = metrics.in_format(record.answer, scoring.answer_format)
    content = metrics.strip_markers(content)
    record.refused = metrics.is_refusal(content, scoring.refusal_patterns)
    # A reference in the house format is an example answer (one good answer among many, which only a
    # judge can compare); any other reference is the fact itself, which the answer must contain.
    exemplar, reference = metrics.in_format(q.reference, scoring.answer_format)
    reference = reference or q.reference
    if q.answerable:
        record.exact_match = metrics.exact_match(content, reference)
        record.token_f1 = metrics.token_f1(content, reference)
        if scoring.judge is not None:
            record.correct = scoring.judge.correct(q, content)
        elif not exemplar:
            record.correct = metrics.contains(content, reference)
    else:
        record.correct = record.refused
    record.citation_precision, record.citation_recall = metrics.citation_scores(
        record.cited_documents, q.documents, document_matches
    )
    if record.refused:
        return  # a refusal claims nothing
    if scoring.judge is not None and passages:
        record.claims = [Claim(c, scoring.judge.supported(c, passages)) for c in metrics.claims(content)]
        record.groundedness = (
            sum(c.supported for c in record.claims) / len(record.claims) if record.claims else None
        )
    else:
        record.claims, record.groundedness = metrics.ground(content, passages)


def ask_all(
    client: httpx.Client,
    strategies: Sequence[StrategyInfo],
    questions: Sequence[Question],
    headers_for: Callable[[str | None], dict[str, str]],
    scoring: Scoring,
    max_tokens: int,
    progress: Callable[[dict[str, Any]], None] = lambda event: None,
) -> tuple[list[Record], list[str]]:
    """Every question through every strategy. Returns the records and warnings (e.g. endpoint down)."""
    records: list[Record] = []
    warnings: list[str] = []
    unreachable = 0
    total = len(strategies) * len(questions)
    for strategy in strategies:
        for q in questions:
            record = Record(strategy.name, q)
            records.append(record)
            if unreachable >= DOWN_AFTER:
                record.error, record.error_cause = "not asked: the endpoint stopped answering", "not-asked"
                continue
            started = time.perf_counter()
            try:
                response = client.post(
                    "/chat/completions",
                    json={
                        "model": strategy.route,
                        "messages": [{"role": "user", "content": q.question}],
                        "temperature": 0,
                        "max_tokens": max_tokens,
                    },
                    headers={"X-Tandem-Trace": "1", **headers_for(q.tenant)},
                )
            except httpx.TransportError as e:
                unreachable += 1
                record.error = f"endpoint unreachable: {type(e).__name__}: {e}"
                record.error_cause = "unreachable"
                if unreachable == DOWN_AFTER:
                    warnings.append(
                        f"the endpoint stopped answering ({record.error}); "
                        "the remaining questions were not asked and are marked"
                    )
                continue
            unreachable = 0
            elapsed = time.perf_counter() - started
            body = _json(response)
            if response.status_code != 200:
                record.error, record.error_cause = _failure(response, body)
            else:
                record.latency["total"] = elapsed
                try:
                    score(record, body, scoring)
                except httpx.HTTPError as e:  # the judge failed: the answer stands, unscored
                    record.error, record.error_cause = f"judge failed: {e}", "judge"
            progress(
                {
                    "stage": "answer",
                    "done": len(records),
                    "total": total,
                    "strategy": strategy.name,
                    **({"error": record.error} if record.error else {}),
                }
            )
    return records, warnings


def probe_routes(
    client: httpx.Client, strategies: Sequence[StrategyInfo], headers: dict[str, str]
) -> list[str]:
    """Ask each route the strategies use one short question before any real one: what does not answer
    (a route that retrieves from a Milvus that is down, say) would otherwise fill the scorecard with
    errors. Returns one line per failing route; empty when every route answered."""
    problems = []
    for route in dict.fromkeys(s.route for s in strategies):
        try:
            response = client.post(
                "/chat/completions",
                json={
                    "model": route,
                    "messages": [{"role": "user", "content": "Reply with OK."}],
                    "temperature": 0,
                    "max_tokens": 1,
                },
                headers=headers,
            )
        except httpx.TransportError as e:
            problems.append(f"route {route}: the endpoint is unreachable ({type(e).__name__}: {e})")
            continue
        if response.status_code != 200:
            error, _ = _failure(response, _json(response))
            problems.append(f"route {route}: {error}")
    return problems


def _failure(response: httpx.Response, body: dict[str, Any]) -> tuple[str, str]:
    """An error answer's message and cause: the gateway's error code (its cause: milvus, vllm...)."""
    error = body.get("error")
    detail: dict[str, Any] = error if isinstance(error, dict) else {}
    message = detail.get("message") or response.text[:200]
    return f"HTTP {response.status_code}: {message}", str(
        detail.get("code") or f"http-{response.status_code}"
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
