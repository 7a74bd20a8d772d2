"""Level-triggered reconciliation: spec -> plan -> children -> observed status. Knows nothing of kopf.

One `reconcile(body)` serves every trigger (create, update, resume, a child's event, the resync timer),
so they cannot disagree. Writes happen only where the observed state differs from the plan: a steady
state costs reads and no writes.

This module holds the entry points (locking, metrics, the status write) and one small handler per kind;
what they use lives next to it: `resolution` follows references, `children` syncs the planned children,
`status` derives each kind's status from what was observed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from tandem.api.kinds import (
    ADAPTER_TRAINING,
    EVALUATION,
    HYBRID_ENDPOINT,
    KNOWLEDGE_BASE,
    SERVING_POOL,
    Kind,
    by_kind,
)
from tandem.api.v1alpha1 import (
    AdapterTrainingSpec,
    EvaluationSpec,
    HybridEndpointSpec,
    KnowledgeBaseSpec,
)
from tandem.api.v1alpha1.servingpool import ServingPoolSpec
from tandem.core.errors import PlanError
from tandem.core.pools import placement_of
from tandem.core.references import ResolvedAdapter, ResolvedKnowledgeBase

from . import metrics
from .adapters import observe_pods, pod_ready
from .api import ApiError, KubeApi
from .blocked import Blocked
from .children import Refusals, key, owned, sync_children, write
from .conditions import READY, Outcome, condition, conditions_for
from .gateway_health import dependencies_per_pod
from .observe import missing_secrets, secret_not_found, termination_report, work_outcome
from .ownership import RECONCILE_TOKEN, Owner
from .phases import summary
from .planners import Plan
from .planners.adaptertraining import plan_adapter_training
from .planners.cleanup import left_behind, plan_cleanup
from .planners.evaluation import EVALUATE_CONTAINER, check_endpoint_namespace, plan_evaluation, run_name
from .planners.hybridendpoint import FETCH_CONTAINER, plan_hybrid_endpoint
from .planners.knowledgebase import plan_knowledge_base
from .planners.pooled_endpoint import plan_pooled_endpoint
from .planners.servingpool import plan_serving_pool
from .pools import (
    attached_endpoints,
    endpoints_to_tell,
    missed_adapters,
    pool_of,
    pool_status,
    pooled_adapter,
    pooled_endpoint_status,
)
from .ray_progress import rayjob_progress
from .resolution import Resolver
from .settings import OperatorSettings
from .status import (
    adapter_training_status,
    evaluation_figures,
    evaluation_status,
    hybrid_endpoint_status,
    knowledge_base_status,
    recorded_outcome,
)
from .vllm_key import ensure_vllm_key

log = logging.getLogger("tandem.operator")

# (body, type, reason, message): posts a Kubernetes Event about the object.
EventSink = Callable[[dict[str, Any], str, str, str], None]
# What a kind's handler observed: the outcome, the status figures, and the writes it took.
Observed = tuple[Outcome, dict[str, Any], int]
# A kind's handler: (owner, body, tandem.dev/run token) -> what it observed.
Handler = Callable[[Owner, dict[str, Any], str], Awaitable[Observed]]

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
# What the API server says when a namespace being deleted is asked to hold a new object (403 Forbidden).
NAMESPACE_TERMINATING = "because it is being terminated"  # set on a Job's pods by the Job controller


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
        self.refusals = Refusals()
        self._background: set[asyncio.Task[Result | None]] = set()
        self._handlers: dict[str, Handler] = {
            KNOWLEDGE_BASE.kind: self._knowledge_base,
            ADAPTER_TRAINING.kind: self._adapter_training,
            HYBRID_ENDPOINT.kind: self._hybrid_endpoint,
            EVALUATION.kind: self._evaluation,
            SERVING_POOL.kind: self._serving_pool,
        }

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
        """Clean up external state before the resource goes. Ready outcome = done, finalizer may go.

        Status shows the deletion (Ready False, reason CleaningUp, CleanupFailed with the Job's cause) and
        each failure posts a Warning event; a failed cleanup Job is deleted so the next call (kopf backs
        off) starts a new attempt. In a namespace being deleted no Job can start: the finalizer is
        released with a Warning event naming what was left behind, rather than holding the namespace in
        Terminating forever."""
        kind = by_kind(body["kind"])
        owner = Owner.from_body(body)
        self.tell_dependents(body)
        try:
            job = plan_cleanup(kind, owner, body.get("spec") or {}, self.settings)
        except (ValidationError, PlanError) as e:
            # Nothing valid was ever created from an invalid spec; do not block deletion on it.
            log.warning("skipping cleanup of %s %s/%s: %s", kind.kind, owner.namespace, owner.name, e)
            return Outcome.ready("NothingToClean", str(e))
        if job is None:
            return Outcome.ready("Retained", "external state is retained by the spec")
        name = job["metadata"]["name"]
        live = await self.api.get("batch/v1", "Job", owner.namespace, name)
        if live is None:
            try:
                await write(self.api.apply(job), "Job", "apply")
            except ApiError as e:
                if e.status == 403 and NAMESPACE_TERMINATING in e.message:
                    left = left_behind(kind, body.get("spec") or {}, self.settings)
                    message = (
                        f"namespace {owner.namespace} is being deleted, so no cleanup Job can run there; "
                        f"left behind: {left} (remove it by hand)"
                    )
                    self.events(body, "Warning", "CleanupAbandoned", message)
                    return Outcome.ready("CleanupAbandoned", message)
                raise
            outcome = Outcome.progressing("CleaningUp", f"started cleanup Job {name}")
            await self._write_status(kind, body, outcome, {})
            return outcome
        outcome = work_outcome(live, "Job", "cleanup")
        if outcome.state == "Stalled":
            # The failed attempt goes (its pods with it), so the next call starts a fresh one.
            await write(self.api.delete("batch/v1", "Job", owner.namespace, name), "Job", "delete")
            outcome = Outcome.stalled(
                "CleanupFailed", f"cleanup Job {name} failed: {outcome.message}; retrying"
            )
            await self._write_status(kind, body, outcome, {})
        return outcome

    # -- per kind ---------------------------------------------------------------------------------------

    async def _reconcile(self, kind: Kind, body: dict[str, Any]) -> Result:
        owner = Owner.from_body(body)
        token = (body["metadata"].get("annotations") or {}).get(RECONCILE_TOKEN, "")
        figures: dict[str, Any] = {}
        writes = 0
        try:
            handler = self._handlers.get(kind.kind)
            if handler is None:
                raise KeyError(f"{kind.kind} is not reconciled")
            outcome, figures, writes = await handler(owner, body, token)
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

    async def _knowledge_base(self, owner: Owner, body: dict[str, Any], token: str) -> Observed:
        spec = KnowledgeBaseSpec.model_validate(body.get("spec") or {})
        plan = plan_knowledge_base(owner, spec, self.settings, token)
        live, writes = await sync_children(self.api, owner, plan, self.refusals)
        report = await self._work_report(owner, plan, "ingest")
        outcome, figures = knowledge_base_status(plan, live, report)
        return outcome, figures, writes

    async def _adapter_training(self, owner: Owner, body: dict[str, Any], token: str) -> Observed:
        spec = AdapterTrainingSpec.model_validate(body.get("spec") or {})
        raft_kb = None
        if spec.raft is not None:
            raft_kb = await self.resolver.knowledge_base(
                ADAPTER_TRAINING, owner, spec.raft.knowledge_base_ref, True
            )
        plan = plan_adapter_training(owner, spec, self.settings, raft_kb, token)
        live, writes = await sync_children(self.api, owner, plan, self.refusals)
        report = await self._work_report(owner, plan, "training")
        outcome, figures = adapter_training_status(plan, live, body.get("status") or {}, report)
        if figures["phase"] == "Running" and plan.work is not None:
            # Only a running job has a dashboard to ask: KubeRay removes its cluster at the end.
            progress = await rayjob_progress(live.get(key(plan.work)))
            if progress is not None:
                figures.update(progress.figures())
        return outcome, figures, writes

    async def _hybrid_endpoint(self, owner: Owner, body: dict[str, Any], token: str) -> Observed:
        spec = HybridEndpointSpec.model_validate(body.get("spec") or {})
        adapters, waiting = await self.resolver.adapters(owner, spec)
        kbs = [
            await self.resolver.knowledge_base(HYBRID_ENDPOINT, owner, ref, False)
            for ref in spec.knowledge_bases
        ]
        # Before the pods that mount it: created once, never read (see vllm_key.py). Its digest is known only
        # now, when it is created: status keeps it (a ServingPool accepts the endpoint's gateway by it).
        created = await ensure_vllm_key(self.api, owner)
        key_digest = created or (body.get("status") or {}).get("vllmKeyDigest")
        if pool_of(spec, owner.namespace) is not None:
            outcome, figures, writes = await self._pooled_endpoint(
                owner, spec, adapters, waiting, kbs, key_digest, key_changed=created is not None
            )
            figures["vllmKeyDigest"] = key_digest
            return outcome, figures, writes + int(created is not None)
        plan = plan_hybrid_endpoint(owner, spec, self.settings, adapters, kbs)
        live, writes = await sync_children(self.api, owner, plan, self.refusals)
        writes += int(created is not None)
        pods = await self.api.list("v1", "Pod", owner.namespace, owner.labels("vllm"))
        reports = await observe_pods(pods, self.settings.adapter_status_port)
        observed = [r.loaded for r in reports.values()]
        sync_errors: dict[str, list[str]] = {}
        for pod, report in sorted(reports.items()):
            for adapter, error in report.errors.items():
                sync_errors.setdefault(adapter, []).append(f"{pod}: {error}")
        fetched = termination_report(pods, FETCH_CONTAINER)
        gateways = await self.api.list("v1", "Pod", owner.namespace, owner.labels("gateway"))
        dependencies = await dependencies_per_pod(gateways, self.settings.gateway_port)
        outcome, figures = hybrid_endpoint_status(
            spec, plan, live, waiting, observed, fetched, dependencies, sync_errors
        )
        missing = missing_secrets([*pods, *gateways])
        if not missing and outcome.state == "Progressing" and not all(map(pod_ready, [*pods, *gateways])):
            # A secret volume's missing Secret (the gateway's API keys) shows only in the pod's FailedMount
            # Events: read them only while a pod is not ready, not at every resync.
            failed_mounts = {"involvedObject.kind": "Pod", "reason": "FailedMount"}
            events = await self.api.list("v1", "Event", owner.namespace, fields=failed_mounts)
            missing = missing_secrets([*pods, *gateways], events)
        if missing and outcome.state == "Progressing":
            # Pods that wait for a Secret would leave the endpoint Deploying forever (see observe.py).
            outcome = secret_not_found(missing, owner.namespace, _secret_uses(spec, kbs))
        figures["vllmKeyDigest"] = key_digest
        return outcome, figures, writes

    async def _pooled_endpoint(
        self,
        owner: Owner,
        spec: HybridEndpointSpec,
        adapters: list[ResolvedAdapter],
        waiting: list[str],
        kbs: list[ResolvedKnowledgeBase],
        key_digest: str | None,
        *,
        key_changed: bool = False,
    ) -> Observed:
        """An endpoint on a ServingPool: its gateway only; the pool places and loads its adapters.
        `key_changed`: its key was created just now (first attach, or its Secret deleted to rotate it)."""
        assert spec.serving_pool_ref is not None
        pool = await self.resolver.resolve(HYBRID_ENDPOINT, owner, SERVING_POOL, spec.serving_pool_ref)
        pool_owner = Owner.from_body(pool)
        pool_spec = ServingPoolSpec.model_validate(pool.get("spec") or {})
        if spec.base_model.uri != pool_spec.base_model.uri:
            raise PlanError(
                "PoolModelMismatch",
                f"spec.baseModel.uri: {spec.base_model.uri} is not what ServingPool "
                f"{pool_owner.namespace}/{pool_owner.name} serves ({pool_spec.base_model.uri})",
            )
        pooled = [pooled_adapter(owner, a, pool_spec.adapter_stores) for a in adapters]
        plan = plan_pooled_endpoint(owner, spec, self.settings, pool_owner, pool_spec, pooled, kbs)
        live, writes = await sync_children(self.api, owner, plan, self.refusals)
        # The pool places this endpoint's adapters: when what it last recorded for the endpoint is not what
        # the endpoint has now, tell it now rather than at its next resync (never otherwise: the two would
        # keep waking each other).
        me = f"{owner.namespace}/{owner.name}"
        pool_status_ = pool.get("status") or {}
        recorded = {
            e.get("servedName") for e in pool_status_.get("adapters") or [] if e.get("endpoint") == me
        }
        gateways = await self.api.list("v1", "Pod", owner.namespace, owner.labels("gateway"))
        dependencies = await dependencies_per_pod(gateways, self.settings.gateway_port)
        # A gateway that found an adapter on no pod since the last resync tells the pool too (a pod that lost
        # its adapters, or a holder gone before the pool noticed): the pool looks at its pods again.
        missed = missed_adapters(dependencies, since=time.time() - self.settings.resync_seconds)
        if (
            me not in (pool_status_.get("endpoints") or [])
            or recorded != {a.config.name for a in pooled}
            or missed
            or key_changed  # the pool accepts the gateway's key by the digest this status is about to hold
        ):
            self._in_background(self._tell_pool(owner, pool_owner))
        gateway = live.get(("apps/v1", "Deployment", plan.facts.gateway_deployment))
        outcome, figures = pooled_endpoint_status(
            owner, spec, gateway, pool, key_digest, waiting, plan.facts.url, dependencies
        )
        figures["url"] = plan.facts.url
        return outcome, figures, writes

    def tell_dependents(self, body: dict[str, Any]) -> None:
        """A resource is being deleted (its finalizer's handler, with its last body): reconcile now what
        depends on it, rather than at their resync. Every kind holds kopf's finalizer (kopf keeps one on
        any resource with a timer, and each kind has the resync timer), so this runs for every deletion."""
        kind = by_kind(body["kind"])
        owner = Owner.from_body(body)
        if kind is HYBRID_ENDPOINT:
            self._detach_from_pool(owner, body)
        elif kind is SERVING_POOL:
            # Its attached endpoints lose their vLLM now: their status says so now.
            attached = [str(e) for e in (body.get("status") or {}).get("endpoints") or []]
            self._in_background(self._tell_endpoints(owner, attached))

    def _detach_from_pool(self, owner: Owner, body: dict[str, Any]) -> None:
        """An endpoint being deleted leaves its pool now, not at the pool's next resync: the pool skips
        endpoints with a deletionTimestamp, so reconciling it drops their adapters and key digests."""
        ref = (body.get("spec") or {}).get("servingPoolRef") or {}
        if ref.get("name"):
            self._in_background(
                self.trigger(SERVING_POOL.kind, ref.get("namespace") or owner.namespace, ref["name"])
            )

    def _in_background(self, work: Coroutine[Any, Any, Result | None]) -> None:
        """Run `work` beside the current reconciliation (kept referenced until it ends)."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _serving_pool(self, owner: Owner, body: dict[str, Any], token: str) -> Observed:
        spec = ServingPoolSpec.model_validate(body.get("spec") or {})
        attached, refused = await attached_endpoints(
            self.api, self.resolver, owner, spec, self.settings.namespaces
        )
        writes = int(await ensure_vllm_key(self.api, owner) is not None)  # the sidecars' own key
        pods = await self.api.list("v1", "Pod", owner.namespace, owner.labels("vllm"))
        names = sorted(
            p["metadata"]["name"]
            for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        )
        previous = placement_of(body.get("status") or {})
        plan = plan_serving_pool(owner, spec, self.settings, attached, names, previous)
        live, applied = await sync_children(self.api, owner, plan, self.refusals)
        observed = await observe_pods(pods, self.settings.adapter_status_port)
        deployment = live.get(("apps/v1", "Deployment", plan.facts.vllm_deployment))
        outcome, figures = pool_status(plan.facts, deployment, attached, refused, observed)
        changed = endpoints_to_tell(body.get("status") or {}, figures)
        if changed:
            self._in_background(self._tell_endpoints(owner, changed))
        return outcome, figures, writes + applied

    async def _tell_pool(self, endpoint: Owner, pool: Owner) -> Result | None:
        """Reconcile the endpoint's pool once the endpoint's status is written (its reconciliation holds
        its lock until then): the pool reads the endpoint's key digest and adapters from there, and would
        otherwise keep refusing a new key until its next resync."""
        async with self._locks.setdefault(
            (HYBRID_ENDPOINT.kind, endpoint.namespace, endpoint.name), asyncio.Lock()
        ):
            pass
        return await self.trigger(SERVING_POOL.kind, pool.namespace, pool.name)

    async def _tell_endpoints(self, pool: Owner, endpoints: list[str]) -> None:
        """Reconcile the endpoints whose part of the pool's status changed, so their status follows the pool's
        now rather than at their next resync: once the pool's status is written (its reconciliation holds the
        pool's lock until then). No loop: the pool tells an endpoint only of a change of its part, and an
        endpoint tells the pool only while the pool has not recorded it as it is (see _pooled_endpoint)."""
        async with self._locks.setdefault((SERVING_POOL.kind, pool.namespace, pool.name), asyncio.Lock()):
            pass
        for who in endpoints:
            namespace, _, name = who.partition("/")
            self._in_background(self.trigger(HYBRID_ENDPOINT.kind, namespace, name))

    async def _evaluation(self, owner: Owner, body: dict[str, Any], token: str) -> Observed:
        """An Evaluation runs once per spec and tandem.dev/run value. What it asks (the endpoint's routes,
        tenants, knowledge bases) is read when the run starts and fixed from then on: a Job's pod cannot
        change, and a scorecard describes the endpoint as it was when asked. So once the run's Job exists,
        reconciling only observes it."""
        spec = EvaluationSpec.model_validate(body.get("spec") or {})
        status = body.get("status") or {}
        name = run_name(owner, spec, token)
        job = await self.api.get("batch/v1", "Job", owner.namespace, name)
        writes = 0
        if job is None or not owned(job, owner):
            if job is None and status.get("job") == name and status.get("phase") in ("Succeeded", "Failed"):
                # This run finished and its Job has since been collected (ttl) or deleted: its result is
                # already in status, and running it again would ask every question again.
                return recorded_outcome(status), {}, 0
            # A new run that cannot start yet: the figures of an earlier run must not stand for it.
            try:
                # Checked before the lookup: no ReferenceGrant makes another namespace's Secrets mountable.
                check_endpoint_namespace(owner, spec)
                endpoint = await self.resolver.endpoint(owner, spec)
                plan = plan_evaluation(owner, spec, self.settings, endpoint, token)
            except Blocked as e:
                return e.outcome, evaluation_figures(None, e.outcome), 0
            except PlanError as e:
                outcome = Outcome.stalled(e.reason, str(e))
                return outcome, evaluation_figures(None, outcome), 0
            assert plan.work is not None
            live, writes = await sync_children(
                self.api, owner, plan, self.refusals
            )  # also prunes the previous run
            job = live.get(key(plan.work))
        selector = {JOB_NAME_LABEL: name}
        pods = await self.api.list("v1", "Pod", owner.namespace, selector)
        report = termination_report(pods, EVALUATE_CONTAINER)
        outcome, figures = evaluation_status(job, report, spec.report.uri if spec.report else None)
        return outcome, figures, writes

    async def _work_report(self, owner: Owner, plan: Plan[Any], container: str) -> dict[str, Any] | None:
        """What the work's pods reported in their termination messages: a Job's own pods, or a RayJob's
        submitter pods (KubeRay names the submitter Job after the RayJob; pods.ray_job names its
        container after the workload)."""
        if plan.work is None:
            return None
        selector = {JOB_NAME_LABEL: plan.work["metadata"]["name"]}
        return termination_report(await self.api.list("v1", "Pod", owner.namespace, selector), container)

    # -- status -----------------------------------------------------------------------------------------

    async def _write_status(
        self, kind: Kind, body: dict[str, Any], outcome: Outcome, figures: dict[str, Any]
    ) -> int:
        old = body.get("status") or {}
        generation = body["metadata"].get("generation")
        new = {
            **figures,
            # every write carries a phase, also for outcomes no kind's status function saw (see phases.py)
            **summary(kind.kind, body, outcome, figures),
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


def _secret_uses(
    spec: HybridEndpointSpec, kbs: list[ResolvedKnowledgeBase]
) -> dict[tuple[str, str | None], str]:
    """(Secret, key) and (Secret, None) -> what of the endpoint needs it, for a SecretNotFound message."""
    uses: dict[tuple[str, str | None], list[str]] = {}
    refs = [(t.api_key_secret_ref, f"the API key of tenant {t.name}") for t in spec.tenants]
    refs += [(kb.credentials, f"the Milvus token of KnowledgeBase {kb.name}") for kb in kbs if kb.credentials]
    for ref, what in refs:
        uses.setdefault((ref.name, ref.key), []).append(what)
        uses.setdefault((ref.name, None), []).append(what)
    return {at: ", ".join(what) for at, what in uses.items()}
