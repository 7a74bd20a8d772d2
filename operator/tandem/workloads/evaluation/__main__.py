"""`python -m tandem.workloads.evaluation --spec job.json [--result-file F]`: ask, score, report.

Before any question, each compared route is asked once; a route that does not answer stops the run
(`RouteUnavailable`, naming the route and the error) rather than filling the scorecard with errors.

Exit codes as the other workloads: 0 done (possibly partial, marked; possibly not trustworthy, see
below), 1 the endpoint or a route could not be reached (worth retrying), 2 the input is wrong (question
set, routes, tenants), with a reason.

The result line carries, beside the headline figures, `trustworthy` (false when a strategy's answers
were more than 10 % errors, or a dependency was down while document ids or the update cost were
checked), `untrustworthyReasons` (one line each), and `errors` (per strategy, errors by cause: the
gateway's error code such as `milvus` or `vllm`, or `unreachable`, `not-asked`, `judge`). The platform
maps an untrustworthy run to a status that is not Ready; the run itself finished, so it exits 0 (a retry
would not make it trustworthy unless the cause is fixed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError
from pymilvus.exceptions import MilvusException

from tandem.api.v1alpha1.evaluation import StrategySummary

from ..knowledge.store import ChunkStore, StoreError
from ..reporting import EXIT_PERMANENT, EXIT_RETRY, TERMINATION_BYTES, emit, finish
from . import scorecard
from .job import EvaluationJob
from .questions import QuestionSetError, load_questions, unknown_documents
from .records import Scorecard, StrategyInfo
from .report import write_report
from .runner import Judge, Scoring, ask_all, probe_routes
from .update_cost import measure


class EvaluationError(Exception):
    def __init__(self, reason: str, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry = retry  # the cause may go away by itself (a dependency down): worth running again


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


def indexed_documents(job: EvaluationJob, problems: list[str]) -> list[str]:
    """Every document id of the endpoint's knowledge bases; a knowledge base that cannot be read is a
    problem (the run's citation figures cannot be checked against it)."""
    ids: list[str] = []
    for kb in job.knowledge_bases:
        token = _key(kb.token_file) if kb.token_file else None
        try:
            store = ChunkStore(kb.milvus_uri, kb.collection, token=token, database=kb.database)
            try:
                ids.extend(store.documents())
            finally:
                store.close()
        except (StoreError, MilvusException) as e:  # Milvus did not answer
            problems.append(f"knowledge base {kb.name}: its document ids could not be checked ({e})")
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
    problems: list[str] = []  # what makes the run untrustworthy besides the answers' errors
    documents = indexed_documents(job, problems)
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
        emit({"stage": "probing", "routes": list(dict.fromkeys(i.route for i in infos))})
        failing = probe_routes(client, infos, headers_for(None))
        if failing:
            raise EvaluationError(
                "RouteUnavailable",
                f"{'; '.join(failing)}. Nothing was asked: a scorecard from a route that does not answer "
                "would compare an outage, not strategies",
                retry=True,
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
        except (StoreError, MilvusException) as e:
            problems.append(f"update cost not measured: a knowledge base did not answer ({e})")
    card = scorecard.build(
        job.name,
        job.spec.endpoint_ref.name,
        infos,
        records,
        len(questions),
        spec.answer_format is not None,
        cost,
        warnings,
        problems,
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
        "trustworthy": card.trustworthy,
        "untrustworthyReasons": card.untrustworthy,
        "errors": {c.info.name: c.errors_by_cause for c in card.strategies if c.errors},
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
    if size(out) > limit and out.get("untrustworthyReasons"):  # shortened, never dropped: the verdict's why
        out["untrustworthyReasons"] = [str(r)[:160] for r in out["untrustworthyReasons"][:5]]
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
        return EXIT_RETRY if e.retry else EXIT_PERMANENT
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
