"""`python -m tandem.workloads.evaluation --spec job.json [--result-file F]`: ask, score, report.

Exit codes as the other workloads: 0 done (possibly partial, marked), 1 the endpoint could not be reached
at all (worth retrying), 2 the input is wrong (question set, routes, tenants), with a reason.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from tandem.api.v1alpha1.evaluation import StrategySummary

from ..knowledge.store import ChunkStore, StoreError
from ..reporting import EXIT_PERMANENT, EXIT_RETRY, TERMINATION_BYTES, emit, finish
from . import scorecard
from .job import EvaluationJob
from .questions import QuestionSetError, load_questions, unknown_documents
from .records import Scorecard, StrategyInfo
from .report import write_report
from .runner import Judge, Scoring, ask_all
from .update_cost import measure


class EvaluationError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def strategies_of(job: EvaluationJob) -> list[StrategyInfo]:
    routes = {r.name: r for r in job.routes}
    wanted = [(s.name, s.route) for s in job.spec.strategies] or [(r.name, r.name) for r in job.routes]
    infos = []
    for name, route_name in wanted:
        route = routes.get(route_name)
        if route is None:
            raise EvaluationError(
                "UnknownRoute",
                f"strategy {name!r} names route {route_name!r}, which the endpoint does not have "
                f"(it has: {', '.join(routes) or 'none'})",
            )
        rung = scorecard.rung_of(route.adapter, route.retrieval, route.raft)
        infos.append(StrategyInfo(name, route.name, route.adapter, route.retrieval, rung))
    return infos


def _key(path: str) -> str:
    return Path(path).read_text().strip()


def indexed_documents(job: EvaluationJob, warnings: list[str]) -> list[str]:
    ids: list[str] = []
    for kb in job.knowledge_bases:
        token = _key(kb.token_file) if kb.token_file else None
        try:
            store = ChunkStore(kb.milvus_uri, kb.collection, token=token, database=kb.database)
            try:
                ids.extend(store.documents())
            finally:
                store.close()
        except StoreError as e:
            warnings.append(f"knowledge base {kb.name}: cannot list its documents to check ids ({e})")
    return ids


def run(job: EvaluationJob) -> tuple[Scorecard, list[Path]]:
    spec = job.spec
    tenants = list(job.api_key_files)
    try:
        questions = load_questions(Path(job.questions), tenants or None)
    except QuestionSetError as e:
        raise EvaluationError("InvalidQuestionSet", str(e)) from None
    if spec.tenant is not None and tenants and spec.tenant not in tenants:
        raise EvaluationError(
            "UnknownTenant", f"spec.tenant {spec.tenant!r} is not one of {', '.join(tenants)}"
        )
    infos = strategies_of(job)
    warnings: list[str] = []
    documents = indexed_documents(job, warnings)
    if job.knowledge_bases and documents:
        for ref, lines in unknown_documents(questions, documents).items():
            warnings.append(
                f"document {ref!r} (question line(s) {', '.join(map(str, lines))}) is not in the knowledge "
                "bases: citation recall counts it as never cited"
            )
    keys = {tenant: _key(path) for tenant, path in job.api_key_files.items()}
    default_tenant = spec.tenant or (tenants[0] if tenants else None)

    def headers_for(tenant: str | None) -> dict[str, str]:
        key = keys.get(tenant or default_tenant or "")
        return {"Authorization": f"Bearer {key}"} if key else {}

    with httpx.Client(base_url=job.gateway, timeout=spec.timeout_seconds) as client:
        judge = None
        if spec.judge is not None:
            judge_client = (
                httpx.Client(base_url=spec.judge.url, timeout=spec.timeout_seconds)
                if spec.judge.url
                else client
            )
            judge_headers = (
                {"Authorization": f"Bearer {_key(job.judge_api_key_file)}"}
                if job.judge_api_key_file
                else ({} if spec.judge.url else headers_for(None))
            )
            judge = Judge(judge_client, spec.judge.model, judge_headers)
        scoring = Scoring(
            spec.answer_format.pattern if spec.answer_format else None, spec.refusal_patterns, judge
        )
        emit({"stage": "asking", "questions": len(questions), "strategies": [i.name for i in infos]})
        records, down = ask_all(client, infos, questions, headers_for, scoring, spec.max_tokens, emit)
    warnings.extend(down)
    cost = None
    if spec.update_cost:
        emit({"stage": "update-cost"})
        adapters = [i.adapter for i in infos if i.adapter]
        try:
            cost = measure(questions, job.knowledge_bases, job.retrain, adapters)
        except StoreError as e:
            warnings.append(f"update cost not measured: {e}")
    card = scorecard.build(
        job.name,
        job.spec.endpoint_ref.name,
        infos,
        records,
        len(questions),
        spec.answer_format is not None,
        cost,
        warnings,
    )
    if spec.judge is not None:
        card.scoring = f"judge model {spec.judge.model} (yes/no questions through its OpenAI-compatible API)"
    files = write_report(card, Path(job.output)) if job.output else []
    return card, files


def summary(card: Scorecard, files: list[Path]) -> dict[str, Any]:
    """The result line: headline figures for the resource's status (small: a termination message)."""
    strategies = []
    for c in card.strategies:
        latency = c.latency.get("total")
        strategies.append(
            StrategySummary(
                name=c.info.name,
                route=c.info.route,
                rung=c.info.rung,
                correct=c.metrics["correct"].value,
                answer_format=c.metrics["format"].value,
                citation_recall=c.metrics["citationRecall"].value,
                groundedness=c.metrics["groundedness"].value,
                refusal=c.metrics["refusal"].value,
                latency_p50_seconds=latency.p50 if latency else None,
                prompt_tokens=c.tokens["prompt"].value,
                errors=c.errors,
            ).model_dump(by_alias=True, mode="json")
        )
    return {
        "questions": card.questions,
        "answered": sum(c.answered for c in card.strategies),
        "complete": card.complete,
        "strategies": strategies,
        "recommendation": card.recommendation.reason,
        "reportFiles": [str(f) for f in files],
        "warnings": card.warnings[:5],
    }


def fit(outcome: dict[str, Any], limit: int = TERMINATION_BYTES) -> dict[str, Any]:
    """Shrink the result line until it fits the termination message: the report files keep everything,
    so warnings, file names and the recommendation's detail go first; strategies' figures go last."""

    def size(value: dict[str, Any]) -> int:
        return len(json.dumps({"result": value}).encode())

    out = dict(outcome)
    for key in ("warnings", "reportFiles"):
        if size(out) > limit and out.get(key):
            out[key] = []
    if size(out) > limit:
        out["recommendation"] = str(out.get("recommendation", ""))[:200]
    while size(out) > limit and out.get("strategies"):
        out["strategies"] = out["strategies"][:-1]
        out["truncated"] = True
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tandem.workloads.evaluation", description=__doc__)
    parser.add_argument("--spec", required=True, help="The EvaluationJob JSON file.")
    parser.add_argument("--result-file", help="Also write the result line here.")
    args = parser.parse_args(argv)
    try:
        job = EvaluationJob.model_validate(json.loads(Path(args.spec).read_text()))
        card, files = run(job)
    except ValidationError as e:
        finish({"error": "InvalidJob", "message": str(e)}, args.result_file)
        return EXIT_PERMANENT
    except EvaluationError as e:
        finish({"error": e.reason, "message": str(e)}, args.result_file)
        return EXIT_PERMANENT
    outcome = fit(summary(card, files))
    if card.records and all(
        (r.error or "").startswith(("endpoint unreachable", "not asked")) for r in card.records
    ):
        finish({**outcome, "error": "EndpointUnavailable", "message": card.warnings[-1]}, args.result_file)
        return EXIT_RETRY
    finish(outcome, args.result_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
