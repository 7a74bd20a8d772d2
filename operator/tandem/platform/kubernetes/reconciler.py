"""Level-triggered reconciliation: spec -> plan -> children -> observed status. Knows nothing of kopf.

One `reconcile(body)` serves every trigger (create, update, resume, a child's event, the resync timer),
so they cannot disagree. Writes happen only where the observed state differs from the plan: a steady
state costs reads and no writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from tandem.api.kinds import (
    ADAPTER_TRAINING,
    EVALUATION,
    HYBRID_ENDPOINT,
    KNOWLEDGE_BASE,
    Kind,
    by_kind,
)
from tandem.api.v1alpha1 import (
    AdapterTrainingSpec,
    EvaluationSpec,
    HybridEndpointSpec,
    KnowledgeBaseSpec,
)
from tandem.api.v1alpha1.adaptertraining import TRANSIENT_MODEL_REASONS
from tandem.api.v1alpha1.evaluation import StrategySummary
from tandem.core import status as core_status
from tandem.core.errors import PlanError

from . import metrics
from .adapters import adapter_statuses, loaded_per_pod
from .api import ApiError, KubeApi
from .blocked import Blocked
from .children import CHILD_KINDS as CHILD_KINDS  # re-exported: handlers.py watches these kinds
from .children import key, owned, sync_children, write
from .conditions import READY, STALLED, Outcome, condition, conditions_for
from .observe import RETRY_HINT, deployment_replicas, job_outcome, termination_report, work_outcome
from .ownership import RECONCILE_TOKEN, Owner
from .planners import EndpointFacts, KnowledgeBaseFacts, Plan, TrainingFacts
from .planners.adaptertraining import plan_adapter_training
from .planners.cleanup import plan_cleanup
from .planners.evaluation import (
    EVALUATE_CONTAINER,
    check_endpoint_namespace,
    plan_evaluation,
    run_name,
)
from .planners.hybridendpoint import FETCH_CONTAINER, plan_hybrid_endpoint
from .planners.knowledgebase import plan_knowledge_base
from .ray_progress import PROGRESS_FIELDS, rayjob_progress
from .resolution import Resolver
from .settings import OperatorSettings

log = logging.getLogger("tandem.operator")

# (body, type, reason, message): posts a Kubernetes Event about the object.
EventSink = Callable[[dict[str, Any], str, str, str], None]

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # set on a Job's pods by the Job controller


def _strategy_summaries(report: dict[str, Any]) -> list[dict[str, Any]] | None:
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


@dataclass
class Result:
    """What one reconciliation saw and did."""

    outcome: Outcome
    writes: int = 0
    status: dict[str, Any] = field(default_factory=dict)


class Reconciler:
    def __init__(self, api: KubeApi, settings: OperatorSettings, events: EventSink | None = None) -> None:
        self.api = api
        self.settings = settings
        self.events = events or (lambda body, type_, reason, message: None)
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._queued: set[tuple[str, str, str]] = set()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.resolver = Resolver(api, settings.default_milvus_uri)

    # -- entry points -----------------------------------------------------------------------------------

    async def reconcile(self, body: dict[str, Any]) -> Result:
        """Bring one resource's children and status in line with its spec. Serialised per resource."""
        kind = by_kind(body["kind"])
        meta = body["metadata"]
        lock = self._locks.setdefault((kind.kind, meta["namespace"], meta["name"]), asyncio.Lock())
        waited = lock.locked()
        async with lock:
            if waited:
                # Another reconciliation just wrote children and status: the body we were handed is stale.
                fresh = await self.api.get(kind.api_version, kind.kind, meta["namespace"], meta["name"])
                if fresh is None:
                    return Result(outcome=Outcome.progressing("Deleted", "the resource is gone"))
                body = fresh
            started = time.monotonic()
            self._in_flight += 1
            self._idle.clear()
            try:
                result = await self._reconcile(kind, body)
            except ApiError as e:
                metrics.RECONCILE_ERRORS.labels(kind.kind, f"api_{e.status}").inc()
                raise
            finally:
                metrics.RECONCILE_SECONDS.labels(kind.kind).observe(time.monotonic() - started)
                self._in_flight -= 1
                if not self._in_flight:
                    self._idle.set()
            metrics.RECONCILES.labels(kind.kind, result.outcome.state).inc()
            return result

    async def drain(self, timeout: float) -> None:
        """Wait (at most `timeout` s) for running reconciliations, so shutdown does not cut them off."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)

    async def trigger(self, kind_name: str, namespace: str, name: str) -> Result | None:
        """Re-read a resource and reconcile it (when a child changes). A burst of child events while one
        reconciliation is queued costs that one reconciliation, not one per event."""
        resource = (kind_name, namespace, name)
        if resource in self._queued:
            return None
        self._queued.add(resource)
        try:
            async with self._locks.setdefault(resource, asyncio.Lock()):
                pass  # wait for a running reconciliation to finish, so the re-read below sees its writes
        finally:
            self._queued.discard(resource)
        kind = by_kind(kind_name)
        body = await self.api.get(kind.api_version, kind.kind, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        return await self.reconcile(body)

    async def finalize(self, body: dict[str, Any]) -> Outcome:
        """Clean up external state before the resource goes. Ready outcome = done, finalizer may go."""
        kind = by_kind(body["kind"])
        owner = Owner.from_body(body)
        try:
            job = plan_cleanup(kind, owner, body.get("spec") or {}, self.settings)
        except (ValidationError, PlanError) as e:
            # Nothing valid was ever created from an invalid spec; do not block deletion on it.
            log.warning("skipping cleanup of %s %s/%s: %s", kind.kind, owner.namespace, owner.name, e)
            return Outcome.ready("NothingToClean", str(e))
        if job is None:
            return Outcome.ready("Retained", "external state is retained by the spec")
        live = await self.api.get("batch/v1", "Job", owner.namespace, job["metadata"]["name"])
        if live is None:
            await write(self.api.apply(job), "Job", "apply")
            return Outcome.progressing("CleaningUp", f"started cleanup Job {job['metadata']['name']}")
        outcome = work_outcome(live, "Job", "cleanup")
        return outcome

    # -- per kind ---------------------------------------------------------------------------------------

    async def _reconcile(self, kind: Kind, body: dict[str, Any]) -> Result:
        owner = Owner.from_body(body)
        token = (body["metadata"].get("annotations") or {}).get(RECONCILE_TOKEN, "")
        figures: dict[str, Any] = {}
        writes = 0
        try:
            if kind is KNOWLEDGE_BASE:
                kb_spec = KnowledgeBaseSpec.model_validate(body.get("spec") or {})
                plan = plan_knowledge_base(owner, kb_spec, self.settings, token)
                live, writes = await sync_children(self.api, owner, plan)
                report = await self._work_report(owner, plan, "ingest")
                outcome, figures = self._knowledge_base_status(plan, live, report)
            elif kind is ADAPTER_TRAINING:
                at_spec = AdapterTrainingSpec.model_validate(body.get("spec") or {})
                raft_kb = None
                if at_spec.raft is not None:
                    raft_kb = await self.resolver.knowledge_base(
                        kind, owner, at_spec.raft.knowledge_base_ref, True
                    )
                at_plan = plan_adapter_training(owner, at_spec, self.settings, raft_kb, token)
                live, writes = await sync_children(self.api, owner, at_plan)
                report = await self._work_report(owner, at_plan, "training")
                outcome, figures = self._adapter_training_status(
                    at_plan, live, body.get("status") or {}, report
                )
                if figures["phase"] == "Running" and at_plan.work is not None:
                    # Only a running job has a dashboard to ask: KubeRay removes its cluster at the end.
                    progress = await rayjob_progress(live.get(key(at_plan.work)))
                    if progress is not None:
                        figures.update(progress.figures())
            elif kind is HYBRID_ENDPOINT:
                he_spec = HybridEndpointSpec.model_validate(body.get("spec") or {})
                adapters, waiting = await self.resolver.adapters(owner, he_spec)
                kbs = [
                    await self.resolver.knowledge_base(kind, owner, ref, False)
                    for ref in he_spec.knowledge_bases
                ]
                he_plan = plan_hybrid_endpoint(owner, he_spec, self.settings, adapters, kbs)
                live, writes = await sync_children(self.api, owner, he_plan)
                pods = await self.api.list("v1", "Pod", owner.namespace, owner.labels("vllm"))
                observed = await loaded_per_pod(pods, self.settings.vllm_port)
                fetched = termination_report(pods, FETCH_CONTAINER)
                outcome, figures = self._hybrid_endpoint_status(
                    he_spec, he_plan, live, waiting, observed, fetched
                )
            elif kind is EVALUATION:
                ev_spec = EvaluationSpec.model_validate(body.get("spec") or {})
                outcome, figures, writes = await self._evaluation(
                    owner, ev_spec, body.get("status") or {}, token
                )
            else:
                raise KeyError(f"{kind.kind} is not reconciled")
        except ValidationError as e:
            first = e.errors()[0]
            where = "spec." + ".".join(str(p) for p in first["loc"]) if first["loc"] else "spec"
            outcome = Outcome.stalled("InvalidSpec", f"{where}: {first['msg']}")
        except PlanError as e:
            outcome = Outcome.stalled(e.reason, str(e))
        except Blocked as e:
            outcome = e.outcome
        writes += await self._write_status(kind, body, outcome, figures)
        return Result(outcome=outcome, writes=writes, status=figures)

    async def _work_report(self, owner: Owner, plan: Plan[Any], container: str) -> dict[str, Any] | None:
        """What the work's pods reported in their termination messages: a Job's own pods, or a RayJob's
        submitter pods (KubeRay names the submitter Job after the RayJob; pods.ray_job names its
        container after the workload)."""
        if plan.work is None:
            return None
        selector = {JOB_NAME_LABEL: plan.work["metadata"]["name"]}
        return termination_report(await self.api.list("v1", "Pod", owner.namespace, selector), container)

    def _knowledge_base_status(
        self,
        plan: Plan[KnowledgeBaseFacts],
        live: dict[tuple[str, str, str], dict[str, Any]],
        report: dict[str, Any] | None,
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

    def _adapter_training_status(
        self,
        plan: Plan[TrainingFacts],
        live: dict[tuple[str, str, str], dict[str, Any]],
        old: dict[str, Any],
        report: dict[str, Any] | None = None,
    ) -> tuple[Outcome, dict[str, Any]]:
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
        figures["phase"] = {"Ready": "Succeeded", "Stalled": "Failed"}.get(
            outcome.state, "Running" if outcome.reason == "Running" else "Pending"
        )
        return outcome, figures

    def _hybrid_endpoint_status(
        self,
        spec: HybridEndpointSpec,
        plan: Plan[EndpointFacts],
        live: dict[tuple[str, str, str], dict[str, Any]],
        waiting: list[str],
        observed: list[dict[str, str]],
        fetched: dict[str, Any] | None = None,
    ) -> tuple[Outcome, dict[str, Any]]:
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
                outcome = Outcome.progressing(
                    "Retrying", f"fetching the base model failed ({cause}); retrying"
                )
            else:
                outcome = Outcome.stalled(str(fetched["error"]), f"fetching the base model: {cause}")
        elif ready < desired or gw_ready < gw_desired:
            outcome = Outcome.progressing(
                "Deploying", f"vLLM {ready}/{desired} ready, gateway {gw_ready}/{gw_desired} ready"
            )
        elif waiting:
            outcome = Outcome.progressing("WaitingForAdapters", f"waiting for adapters: {', '.join(waiting)}")
        elif not all(a["ready"] for a in adapters):
            missing = ", ".join(
                f"{a['name']} ({a['loadedReplicas']}/{len(observed)} pods)"
                for a in adapters
                if not a["ready"]
            )
            outcome = Outcome.progressing(
                "LoadingAdapters", f"adapters not yet loaded on every vLLM pod: {missing}"
            )
        else:
            outcome = Outcome.ready(
                "Serving", f"vLLM {ready}/{desired} and gateway {gw_ready}/{gw_desired} ready"
            )
        figures["phase"] = {"Ready": "Ready", "Stalled": "Failed"}.get(outcome.state, "Progressing")
        return outcome, figures

    async def _evaluation(
        self, owner: Owner, spec: EvaluationSpec, status: dict[str, Any], token: str
    ) -> tuple[Outcome, dict[str, Any], int]:
        """An Evaluation runs once per spec and tandem.dev/run value. What it asks (the endpoint's routes,
        tenants, knowledge bases) is read when the run starts and fixed from then on: a Job's pod cannot
        change, and a scorecard describes the endpoint as it was when asked. So once the run's Job exists,
        reconciling only observes it."""
        name = run_name(owner, spec, token)
        job = await self.api.get("batch/v1", "Job", owner.namespace, name)
        writes = 0
        if job is None or not owned(job, owner):
            if job is None and status.get("job") == name and status.get("phase") in ("Succeeded", "Failed"):
                # This run finished and its Job has since been collected (ttl) or deleted: its result is
                # already in status, and running it again would ask every question again.
                return self._recorded_outcome(status), {}, 0
            # A new run that cannot start yet: the figures of an earlier run must not stand for it.
            try:
                # Checked before the lookup: no ReferenceGrant makes another namespace's Secrets mountable.
                check_endpoint_namespace(owner, spec)
                endpoint = await self.resolver.endpoint(owner, spec)
                plan = plan_evaluation(owner, spec, self.settings, endpoint, token)
            except Blocked as e:
                return e.outcome, self._evaluation_figures(None, e.outcome), 0
            except PlanError as e:
                outcome = Outcome.stalled(e.reason, str(e))
                return outcome, self._evaluation_figures(None, outcome), 0
            assert plan.work is not None
            live, writes = await sync_children(self.api, owner, plan)  # also prunes the previous run
            job = live.get(key(plan.work))
        selector = {JOB_NAME_LABEL: name}
        pods = await self.api.list("v1", "Pod", owner.namespace, selector)
        report = termination_report(pods, EVALUATE_CONTAINER)
        outcome, figures = self._evaluation_status(job, report, spec.report.uri if spec.report else None)
        return outcome, figures, writes

    @staticmethod
    def _evaluation_figures(job: dict[str, Any] | None, outcome: Outcome) -> dict[str, Any]:
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

    def _evaluation_status(
        self, job: dict[str, Any] | None, report: dict[str, Any] | None, report_uri: str | None
    ) -> tuple[Outcome, dict[str, Any]]:
        outcome = job_outcome(job, "evaluation")
        report = report or {}
        outcome = with_failed_attempt(outcome, report, "evaluation")
        summaries = None
        if outcome.state == "Ready":
            summaries = _strategy_summaries(report)
            if summaries is None:
                assert job is not None
                outcome = Outcome.ready(
                    "Evaluated",
                    f"evaluation Job {job['metadata']['name']} completed but left no readable result in its "
                    "termination message; the scorecard is in its log and report files",
                )
        figures = self._evaluation_figures(job, outcome)
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
        if report.get("recommendation"):
            message += f"; {report['recommendation']}"
        warnings = [str(w) for w in report.get("warnings") or []]
        if warnings:
            message += f"; warnings: {'; '.join(warnings[:3])}"
        return Outcome.ready("Evaluated", message), figures

    @staticmethod
    def _recorded_outcome(status: dict[str, Any]) -> Outcome:
        """The outcome status already records for a finished run."""
        ready, stalled = condition(status, READY) or {}, condition(status, STALLED) or {}
        if ready.get("status") == "True":
            return Outcome.ready(str(ready.get("reason")), str(ready.get("message")))
        return Outcome.stalled(str(stalled.get("reason")), str(stalled.get("message")))

    # -- writes -----------------------------------------------------------------------------------------

    async def _write_status(
        self, kind: Kind, body: dict[str, Any], outcome: Outcome, figures: dict[str, Any]
    ) -> int:
        old = body.get("status") or {}
        generation = body["metadata"].get("generation")
        new = {
            **figures,
            "observedGeneration": generation,
            "conditions": conditions_for(outcome, generation, old.get("conditions") or []),
        }
        if all(old.get(k) == v for k, v in new.items()):
            return 0
        meta = body["metadata"]
        # The body kopf handed over may predate this operator's own last status write (a lagging watch):
        # compare with what the server holds now before writing, so a stale copy causes no second write,
        # no repeated Event and no moved lastTransitionTime. Costs a read only when a write is due.
        fresh = await self.api.get(kind.api_version, kind.kind, meta["namespace"], meta["name"])
        if fresh is None:
            return 0
        old = fresh.get("status") or {}
        new["conditions"] = conditions_for(outcome, generation, old.get("conditions") or [])
        if all(old.get(k) == v for k, v in new.items()):
            return 0
        await write(
            self.api.patch_status(kind.api_version, kind.kind, meta["namespace"], meta["name"], new),
            kind.kind,
            "status",
        )
        before = condition(old, READY)
        if before is None or (before.get("status"), before.get("reason")) != (
            "True" if outcome.state == "Ready" else "False",
            outcome.reason,
        ):
            event_type = "Warning" if outcome.state == "Stalled" else "Normal"
            self.events(body, event_type, outcome.reason, outcome.message)
        return 1


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
