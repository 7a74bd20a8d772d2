"""What each kind's status says, derived from its plan, its children as observed and its work's report.

Pure functions: no I/O, no reconciler. Each takes the plan (and the spec or old status it needs), the
observed objects and the workload's report, and returns the Outcome (which the conditions are computed
from) and the status figures. Status never claims more than was observed.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from tandem.api.v1alpha1 import HybridEndpointSpec
from tandem.api.v1alpha1.adaptertraining import TRANSIENT_MODEL_REASONS
from tandem.api.v1alpha1.evaluation import StrategySummary
from tandem.core import status as core_status
from tandem.core.endpoint_health import condition_of

from .adapters import adapter_statuses
from .children import Live, key
from .conditions import READY, STALLED, Outcome, condition
from .observe import RETRY_HINT, deployment_replicas, job_outcome, work_outcome
from .planners import EndpointFacts, KnowledgeBaseFacts, Plan, TrainingFacts
from .ray_progress import PROGRESS_FIELDS


def with_failed_attempt(outcome: Outcome, report: dict[str, Any], what: str) -> Outcome:
    """The Job's outcome, told with the workload's own account of its failed attempt (its result line has
    `error` and `message` on exit 1 or 2): Stalled names the cause, a retry says what it retries."""
    if "error" not in report:
        return outcome
    cause = f"{report['error']}: {report.get('message', '')}"
    if outcome.state == "Stalled":
        return Outcome.stalled(str(report["error"]), f"{cause}; {RETRY_HINT}")
    if outcome.state == "Progressing":
        return Outcome.progressing("Retrying", f"the last {what} attempt failed ({cause}); retrying")
    return outcome


# -- KnowledgeBase --------------------------------------------------------------------------------------


def knowledge_base_status(
    plan: Plan[KnowledgeBaseFacts], live: Live, report: dict[str, Any] | None
) -> tuple[Outcome, dict[str, Any]]:
    assert plan.work is not None
    work = live.get(key(plan.work))
    outcome = work_outcome(work, plan.work["kind"], "ingest")
    collection = plan.facts.collection
    figures: dict[str, Any] = {"collection": collection, "ingestJob": plan.work["metadata"]["name"]}
    report = report or {}
    outcome = with_failed_attempt(outcome, report, "ingest")
    if outcome.state == "Ready":
        message, indexed = core_status.indexed(report, plan.facts.revision, collection)
        figures.update(indexed)
        completed = report.get("finished_at") or ((work or {}).get("status") or {}).get("completionTime")
        if completed:
            figures["lastIndexedTime"] = completed
        outcome = Outcome.ready("Indexed", message)
    figures["phase"] = {"Ready": "Ready", "Stalled": "Failed"}.get(
        outcome.state, "Indexing" if outcome.reason == "Running" else "Pending"
    )
    return outcome, figures


# -- AdapterTraining ------------------------------------------------------------------------------------


def adapter_training_status(
    plan: Plan[TrainingFacts], live: Live, old: dict[str, Any], report: dict[str, Any] | None = None
) -> tuple[Outcome, dict[str, Any]]:
    """`old` is the status as it stands: a new run (a new RayJob) clears the last run's progress."""
    assert plan.work is not None
    rayjob = live.get(key(plan.work))
    report = report or {}
    outcome = with_failed_attempt(work_outcome(rayjob, "RayJob", "training"), report, "training")
    figures: dict[str, Any] = {
        "rayJob": plan.work["metadata"]["name"],
        "adapterVersion": plan.facts.version,
    }
    if old.get("rayJob") != figures["rayJob"]:
        # A new run (each has its own RayJob): the step and loss of the last one do not describe it.
        # Otherwise they stay as last read, also while the dashboard cannot be read (None clears).
        figures.update(dict.fromkeys(PROGRESS_FIELDS))
    # KubeRay's own times of the run: an Evaluation compares the cost of retraining with re-indexing.
    ray_status = (rayjob or {}).get("status") or {}
    if ray_status.get("startTime"):
        figures["startTime"] = ray_status["startTime"]
    if outcome.state == "Ready":
        outcome = Outcome.ready("Trained", f"adapter {plan.facts.adapter_uri} written")
        figures["adapterUri"] = plan.facts.adapter_uri
        if ray_status.get("endTime"):
            figures["completionTime"] = ray_status["endTime"]
        figures.update(core_status.trained(report))
        if old.get("artifact") and "artifact" not in figures:
            figures["artifact"] = None  # published by an earlier run; this one published nothing
    figures["phase"] = {"Ready": "Succeeded", "Stalled": "Failed"}.get(
        outcome.state, "Running" if outcome.reason == "Running" else "Pending"
    )
    return outcome, figures


# -- HybridEndpoint -------------------------------------------------------------------------------------


def hybrid_endpoint_status(
    spec: HybridEndpointSpec,
    plan: Plan[EndpointFacts],
    live: Live,
    waiting: list[str],
    observed: list[dict[str, str]],
    fetched: dict[str, Any] | None = None,
    dependencies: list[dict[str, Any] | str] | None = None,
    sync_errors: dict[str, list[str]] | None = None,
) -> tuple[Outcome, dict[str, Any]]:
    """`waiting`: adapters whose training has no adapter yet; `observed`: what each ready vLLM pod's
    /v1/models lists; `fetched`: the report of the vLLM pods' base-model fetch (init container);
    `dependencies`: what each ready gateway pod's /healthz/dependencies says (or why it could not be
    read); `sync_errors`: adapter -> "pod: error" for each pod whose adapter sync failed on it last round
    (an adapter not loaded with one of these is Stalled AdapterSyncFailed, not LoadingAdapters)."""
    desired, ready = deployment_replicas(live.get(("apps/v1", "Deployment", plan.facts.vllm_deployment)))
    gw_desired, gw_ready = deployment_replicas(
        live.get(("apps/v1", "Deployment", plan.facts.gateway_deployment))
    )
    # Adapter load state is what each ready vLLM pod's /v1/models says: status never claims more
    # than was observed (an adapter still being resolved is listed as not loaded).
    served = [a.model_dump(exclude_none=True) for a in plan.facts.adapters]
    resolved = {a["name"]: a for a in adapter_statuses(served, observed)}
    adapters = [
        resolved.get(a.name, {"name": a.name, "loadedReplicas": 0, "ready": False}) for a in spec.adapters
    ]
    figures: dict[str, Any] = {
        "url": plan.facts.url,
        "replicas": desired,
        "readyReplicas": ready,
        "gatewayReadyReplicas": gw_ready,
        "adapters": adapters,
    }
    if ready < desired and fetched and "error" in fetched:
        # The vLLM pods' init container could not fetch the base model (the kubelet retries it).
        cause = f"{fetched['error']}: {fetched.get('message', '')}"
        if fetched["error"] in TRANSIENT_MODEL_REASONS:
            outcome = Outcome.progressing("Retrying", f"fetching the base model failed ({cause}); retrying")
        else:
            outcome = Outcome.stalled(str(fetched["error"]), f"fetching the base model: {cause}")
    elif ready < desired or gw_ready < gw_desired:
        outcome = Outcome.progressing(
            "Deploying", f"vLLM {ready}/{desired} ready, gateway {gw_ready}/{gw_desired} ready"
        )
    elif waiting:
        outcome = Outcome.progressing("WaitingForAdapters", f"waiting for adapters: {', '.join(waiting)}")
    elif failing := [
        f"{a['name']} on {error}"
        for a in adapters
        if not a["ready"]
        for error in (sync_errors or {}).get(a["name"], [])
    ]:
        outcome = Outcome.stalled("AdapterSyncFailed", "; ".join(failing))
    elif not all(a["ready"] for a in adapters):
        missing = ", ".join(
            f"{a['name']} ({a['loadedReplicas']}/{len(observed)} pods)" for a in adapters if not a["ready"]
        )
        outcome = Outcome.progressing(
            "LoadingAdapters", f"adapters not yet loaded on every vLLM pod: {missing}"
        )
    else:
        outcome = serving_outcome(
            plan.facts.url, f"vLLM {ready}/{desired} and gateway {gw_ready}/{gw_desired} ready", dependencies
        )
    figures["phase"] = {"Ready": "Ready", "Stalled": "Failed"}.get(outcome.state, "Progressing")
    return outcome, figures


def serving_outcome(url: str, rollout: str, dependencies: list[dict[str, Any] | str] | None) -> Outcome:
    """A rolled-out endpoint is Serving only if no gateway pod finds a dependency down: a KnowledgeBase it
    cannot search makes it `RetrievalUnavailable` (not Ready; the routes without retrieval still answer,
    as the pods' readiness checks vLLM only). A pod that cannot be asked claims nothing either way: the
    message says its dependencies were not checked."""
    gateway = url.removesuffix("/v1")
    unread = [d for d in dependencies or [] if isinstance(d, str)]
    for body in dependencies or []:
        if isinstance(body, dict):
            found = condition_of(gateway, body)
            if not found.ready:
                return Outcome.stalled(found.reason, found.message)
    message = rollout
    if unread:
        message += f"; dependencies not checked: {unread[0]}"
    return Outcome.ready("Serving", message)


# -- Evaluation -----------------------------------------------------------------------------------------


def strategy_summaries(report: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The per-strategy headline of an evaluation result, as status holds it; None when there is none or it
    does not read as one (a truncated or foreign termination message)."""
    strategies = report.get("strategies")
    if not isinstance(strategies, list) or not isinstance(report.get("questions"), int):
        return None
    try:
        return [
            StrategySummary.model_validate(s).model_dump(by_alias=True, exclude_none=True, mode="json")
            for s in strategies
        ]
    except ValidationError:
        return None


def evaluation_figures(job: dict[str, Any] | None, outcome: Outcome) -> dict[str, Any]:
    """Status figures of the current run with nothing measured yet (None clears a field)."""
    job_status = (job or {}).get("status") or {}
    return {
        "phase": {"Ready": "Succeeded", "Stalled": "Failed"}.get(
            outcome.state, "Running" if outcome.reason in ("Running", "Retrying") else "Pending"
        ),
        "job": job["metadata"]["name"] if job else None,
        "questions": None,
        "answered": None,
        "strategies": [],
        "recommendation": None,
        "reportUri": None,
        "startTime": job_status.get("startTime"),
        "completionTime": None,
    }


def evaluation_status(
    job: dict[str, Any] | None, report: dict[str, Any] | None, report_uri: str | None
) -> tuple[Outcome, dict[str, Any]]:
    """`report_uri`: where the spec asks for report files (status names it only when they were written)."""
    outcome = job_outcome(job, "evaluation")
    report = report or {}
    outcome = with_failed_attempt(outcome, report, "evaluation")
    summaries = None
    if outcome.state == "Ready":
        summaries = strategy_summaries(report)
        if summaries is None:
            assert job is not None
            outcome = Outcome.ready(
                "Evaluated",
                f"evaluation Job {job['metadata']['name']} completed but left no readable result in its "
                "termination message; the scorecard is in its log and report files",
            )
    figures = evaluation_figures(job, outcome)
    if outcome.state != "Ready" or summaries is None:
        return outcome, figures
    assert job is not None
    figures.update(
        questions=report.get("questions"),
        answered=report.get("answered"),
        strategies=summaries,
        recommendation=report.get("recommendation"),
        # Only where files were written: status never claims more than was observed.
        reportUri=report_uri if report.get("reportFiles") else None,
        completionTime=((job.get("status") or {}).get("completionTime")),
    )
    asked = (report.get("questions") or 0) * len(summaries)
    message = f"{report.get('answered')}/{asked} answers from {len(summaries)} strategies"
    if report.get("trustworthy") is False:
        # As `tandem eval` does: a recommendation from a broken run would mislead, so there is none, and
        # the run is not Ready (the Job finished: retrying it would not help until the cause is fixed).
        figures.update(recommendation=None, phase="Failed")
        return Outcome.stalled("Untrustworthy", untrustworthy_message(report, message)), figures
    if report.get("recommendation"):
        message += f"; {report['recommendation']}"
    warnings = [str(w) for w in report.get("warnings") or []]
    if warnings:
        message += f"; warnings: {'; '.join(warnings[:3])}"
    return Outcome.ready("Evaluated", message), figures


def untrustworthy_message(report: dict[str, Any], answers: str) -> str:
    """Why a finished run is not trustworthy, with each strategy's errors by cause (the gateway's error
    code, `unreachable`, `not-asked`...): what to fix before running it again."""
    reasons = [str(r) for r in report.get("untrustworthyReasons") or []] or ["see the report"]
    found = report.get("errors")
    errors: dict[str, Any] = found if isinstance(found, dict) else {}
    by_strategy = [
        f"{name}: " + ", ".join(f"{cause} {count}" for cause, count in sorted(causes.items()))
        for name, causes in sorted(errors.items())
        if isinstance(causes, dict) and causes
    ]
    message = f"not trustworthy, no recommendation: {'; '.join(reasons)}; {answers}"
    if by_strategy:
        message += f"; errors by cause: {'; '.join(by_strategy)}"
    return message


def recorded_outcome(status: dict[str, Any]) -> Outcome:
    """The outcome status already records for a finished run."""
    ready, stalled = condition(status, READY) or {}, condition(status, STALLED) or {}
    if ready.get("status") == "True":
        return Outcome.ready(str(ready.get("reason")), str(ready.get("message")))
    return Outcome.stalled(str(stalled.get("reason")), str(stalled.get("message")))
