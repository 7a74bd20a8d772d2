"""Evaluation -> spec ConfigMap + a Job that asks a HybridEndpoint's routes a question set and scores them.

The Job calls the endpoint the way its tenants do: through the gateway Service, with the tenants' API
keys mounted from their Secrets. It never talks to vLLM directly, so the scorecard measures what clients
get (retrieval, prompt assembly, tenant limits included).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field

from tandem.api.v1alpha1 import EvaluationSpec, HybridEndpointSpec
from tandem.core.digests import digest
from tandem.core.errors import PlanError
from tandem.core.evaluation import evaluation_routes, knowledge_base_info
from tandem.core.references import ResolvedKnowledgeBase
from tandem.workloads.evaluation.job import EvaluationJob, KnowledgeBaseInfo, RetrainInfo, RouteInfo
from tandem.workloads.reporting import EXIT_PERMANENT

from ..ownership import Owner, child_name
from ..pods import container, pod_spec
from ..settings import OperatorSettings
from ..volumes import Mounts, mount_milvus_token
from . import EvaluationFacts, Plan
from .hybridendpoint import gateway_url, mount_api_keys

SPEC_DIR = "/etc/tandem"
QUESTIONS_DIR = "/mnt/questions"
JUDGE_KEY_DIR = "/var/run/tandem/judge"
EVALUATE_CONTAINER = "evaluate"
# An evaluation asks every question of every strategy again when retried: a few retries cover an endpoint
# that was briefly unreachable (exit 1) without multiplying the load on it.
BACKOFF_LIMIT = 2
# The result is in status once the operator has seen the finished Job (within a resync period); the Job
# and its pod are kept a while after that for `kubectl logs`, then collected.
JOB_TTL_SECONDS = 7 * 24 * 3600
# How long an evaluation may run, retries included: bounds one that hangs (each request already has
# spec.timeoutSeconds). The spec has no field for it.
DEADLINE_SECONDS = 6 * 3600
# The spec has no resources field: the workload is an HTTP client plus, for the update-cost figure, one
# embedding model (all-MiniLM-L6-v2 class) to re-index a document.
RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
# Question-set URIs that become a path in the pod (pvc:// is mounted, file:// is refused with the fix); the
# workload reads a path only, so s3:// and https:// are refused until it fetches them itself.
MOUNTED_QUESTION_SCHEMES = ("pvc", "file")


@dataclass(frozen=True)
class ResolvedTraining:
    """The AdapterTraining behind an adapter, as far as an Evaluation needs it."""

    raft: bool = False
    start_time: str | None = None  # RFC 3339, from its status
    completion_time: str | None = None


@dataclass(frozen=True)
class ResolvedEndpoint:
    """The evaluated HybridEndpoint: its spec, and what its references resolved to."""

    namespace: str
    name: str
    spec: HybridEndpointSpec
    # Adapter name -> its AdapterTraining; adapters served from a URI (or whose training is gone) are absent.
    trainings: dict[str, ResolvedTraining] = field(default_factory=dict)
    knowledge_bases: list[ResolvedKnowledgeBase] = field(default_factory=list)


def run_name(owner: Owner, spec: EvaluationSpec, run_token: str = "") -> str:
    """The Job (and ConfigMap) of one run. A new spec or a new tandem.dev/run value is a new run; nothing
    else is (not the operator's image or pod layout), because a run asks the endpoint many questions."""
    wire = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    return child_name(owner.name, f"eval-{digest({'spec': wire, 'run': run_token}, 8)}")


def check_endpoint_namespace(owner: Owner, spec: EvaluationSpec) -> None:
    """The Job mounts the endpoint's API-key Secrets, and a pod mounts Secrets of its own namespace only."""
    namespace = spec.endpoint_ref.namespace or owner.namespace
    if namespace != owner.namespace:
        raise PlanError(
            "EndpointInAnotherNamespace",
            f"spec.endpointRef: HybridEndpoint {namespace}/{spec.endpoint_ref.name} is in another namespace; "
            f"the evaluation Job needs its tenants' API-key Secrets, which a pod in {owner.namespace} "
            f"cannot mount: create the Evaluation in namespace {namespace}",
        )


def retrain_seconds(start: str | None, end: str | None) -> float | None:
    """How long the last training ran, from its status times; None when either is unknown or unreadable."""
    if not start or not end:
        return None
    try:
        began = datetime.datetime.fromisoformat(start)
        ended = datetime.datetime.fromisoformat(end)
    except ValueError:
        return None
    seconds = (ended - began).total_seconds()
    return seconds if seconds >= 0 else None


def _routes(endpoint: ResolvedEndpoint, spec: EvaluationSpec) -> list[RouteInfo]:
    raft = {name: training.raft for name, training in endpoint.trainings.items()}
    return evaluation_routes(endpoint.namespace, endpoint.name, endpoint.spec, spec, raft)


def _api_keys(endpoint: ResolvedEndpoint, spec: EvaluationSpec, mounts: Mounts) -> dict[str, str]:
    """Each tenant's key as a file, mounted the way the gateway mounts it (same Secret, same key)."""
    tenants = [t.name for t in endpoint.spec.tenants]
    if spec.tenant is not None and spec.tenant not in tenants:
        raise PlanError(
            "UnknownTenant",
            f"spec.tenant: HybridEndpoint {endpoint.namespace}/{endpoint.name} has no tenant {spec.tenant} "
            f"(tenants: {', '.join(tenants) or 'none, it accepts unauthenticated requests'})",
        )
    return mount_api_keys(mounts, endpoint.spec.tenants)


def _questions(spec: EvaluationSpec, mounts: Mounts) -> str:
    questions = spec.questions
    if questions.config_map is not None:
        mounts.volumes.append({"name": "questions", "configMap": {"name": questions.config_map.name}})
        mounts.mounts.append({"name": "questions", "mountPath": QUESTIONS_DIR, "readOnly": True})
        return f"{QUESTIONS_DIR}/{questions.config_map.key}"
    assert questions.uri is not None  # the CRD's rule: exactly one of configMap or uri
    if questions.uri.partition("://")[0] not in MOUNTED_QUESTION_SCHEMES:
        raise PlanError(
            "QuestionSourceNotSupported",
            f"spec.questions.uri: {questions.uri}: the evaluation workload reads question sets from a "
            "ConfigMap or a PersistentVolumeClaim only (s3:// and https:// are not supported yet); "
            "use configMap or pvc://CLAIM/PATH",
        )
    return mounts.resolve(questions.uri, read_only=True, where="spec.questions.uri")  # file:// is refused


def _knowledge_bases(owner: Owner, endpoint: ResolvedEndpoint, mounts: Mounts) -> list[KnowledgeBaseInfo]:
    infos = []
    for kb in endpoint.knowledge_bases:
        if kb.credentials is not None and kb.namespace != owner.namespace:
            raise PlanError(
                "MilvusCredentialsUnreachable",
                f"KnowledgeBase {kb.namespace}/{kb.name} of HybridEndpoint {endpoint.name}: its Milvus "
                f"credentials Secret is in namespace {kb.namespace}, which a pod in {owner.namespace} "
                "cannot mount; copy it into this namespace or evaluate with a KnowledgeBase here",
            )
        infos.append(knowledge_base_info(kb, mount_milvus_token(mounts, kb.name, kb.credentials)))
    return infos


def _retrain(endpoint: ResolvedEndpoint) -> list[RetrainInfo]:
    """Every adapter of the endpoint with its last training's run time (unknown for URI adapters)."""
    out = []
    for adapter in endpoint.spec.adapters:
        training = endpoint.trainings.get(adapter.name, ResolvedTraining())
        out.append(
            RetrainInfo(
                adapter=adapter.name,
                seconds=retrain_seconds(training.start_time, training.completion_time),
                recorded=training.completion_time,
            )
        )
    return out


def _report_dir(spec: EvaluationSpec, mounts: Mounts) -> str | None:
    if spec.report is None:
        return None
    if spec.report.uri.startswith("s3://"):
        raise PlanError(
            "ReportStoreNotSupported",
            f"spec.report.uri: {spec.report.uri}: the evaluation workload writes its report to a "
            "PersistentVolumeClaim only (s3:// is not supported yet); use pvc://CLAIM/PATH, or omit "
            "spec.report (the headline figures are in status either way)",
        )
    return mounts.resolve(spec.report.uri, read_only=False, where="spec.report.uri")  # file:// is refused


def _judge_key(spec: EvaluationSpec, mounts: Mounts) -> str | None:
    if spec.judge is None or spec.judge.api_key_secret_ref is None:
        return None
    ref = spec.judge.api_key_secret_ref
    return mounts.add_secret_key("judge-key", ref.name, ref.key, JUDGE_KEY_DIR, "api-key")


def plan_evaluation(
    owner: Owner,
    spec: EvaluationSpec,
    settings: OperatorSettings,
    endpoint: ResolvedEndpoint,
    run_token: str = "",
) -> Plan[EvaluationFacts]:
    check_endpoint_namespace(owner, spec)
    name = run_name(owner, spec, run_token)
    mounts = Mounts()
    mounts.add_config_map(name, SPEC_DIR)
    job_input = EvaluationJob(
        namespace=owner.namespace,
        name=owner.name,
        gateway=gateway_url(endpoint.namespace, endpoint.name),
        api_key_files=_api_keys(endpoint, spec, mounts),
        routes=_routes(endpoint, spec),
        questions=_questions(spec, mounts),
        knowledge_bases=_knowledge_bases(owner, endpoint, mounts),
        retrain=_retrain(endpoint),
        judge_api_key_file=_judge_key(spec, mounts),
        output=_report_dir(spec, mounts),
        spec=spec,
    )
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": owner.metadata(name, "evaluation"),
        # Not sort_keys: apiKeyFiles is in the endpoint's tenant order (its first tenant is the default).
        # The model's field order keeps the text stable all the same.
        "data": {
            "spec.json": json.dumps(
                job_input.model_dump(by_alias=True, exclude_none=True, mode="json"), indent=2
            )
        },
    }
    evaluate = container(
        EVALUATE_CONTAINER,
        spec.image or settings.worker_image,
        command=["python", "-m", "tandem.workloads.evaluation", "--spec", f"{SPEC_DIR}/spec.json"],
        mounts=mounts,
        pull_policy=settings.image_pull_policy,
        # The update-cost figure embeds a document with the knowledge base's model, shipped in the image.
        env=[{"name": "HF_HUB_OFFLINE", "value": "1"}],
        resources_=RESOURCES,
    )
    # Exit code 2 is a permanent error (a bad question set, an unknown route): retrying cannot help.
    permanent = {"containerName": EVALUATE_CONTAINER, "operator": "In", "values": [EXIT_PERMANENT]}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": owner.metadata(name, "evaluation"),
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "activeDeadlineSeconds": DEADLINE_SECONDS,
            "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": permanent}]},
            "template": {
                "metadata": {"labels": owner.labels("evaluation")},
                "spec": pod_spec([evaluate], mounts, restartPolicy="Never"),
            },
        },
    }
    return Plan(
        children=[config, job],
        work=job,
        facts=EvaluationFacts(report_uri=spec.report.uri if spec.report else None, gateway=job_input.gateway),
    )
