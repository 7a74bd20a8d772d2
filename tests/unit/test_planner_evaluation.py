"""The Evaluation planner: spec + the resolved HybridEndpoint in, a spec ConfigMap and a Job out.

The Job's input is the workload's own model (EvaluationJob), so these tests read it back through that
model: what the operator writes is what `python -m tandem.workloads.evaluation` parses.
"""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest

from tandem.api.v1alpha1 import EvaluationSpec, HybridEndpointSpec, KnowledgeBaseSpec
from tandem.api.v1alpha1.common import SecretKeyReference
from tandem.core.errors import PlanError
from tandem.core.references import ResolvedAdapter, ResolvedKnowledgeBase
from tandem.platform.kubernetes.ownership import Owner
from tandem.platform.kubernetes.planners import Plan
from tandem.platform.kubernetes.planners.evaluation import (
    ResolvedEndpoint,
    ResolvedTraining,
    plan_evaluation,
    retrain_seconds,
    run_name,
)
from tandem.platform.kubernetes.planners.hybridendpoint import plan_hybrid_endpoint
from tandem.platform.kubernetes.settings import OperatorSettings
from tandem.workloads.evaluation.job import EvaluationJob
from tests.manifests import example

SETTINGS = OperatorSettings()
NS = "team"
OWNER = Owner("tandem.dev/v1alpha1", "Evaluation", NS, "scorecard", "uid-scorecard")
TOKEN = SecretKeyReference(name="milvus", key="token")


def evaluation_spec(**overrides: Any) -> EvaluationSpec:
    spec: dict[str, Any] = {
        "endpointRef": {"name": "assistant"},
        "questions": {"configMap": {"name": "handbook-questions", "key": "questions.jsonl"}},
        **overrides,
    }
    return EvaluationSpec.model_validate(spec)


def endpoint(namespace: str = NS, **spec_overrides: Any) -> ResolvedEndpoint:
    """The example endpoint (adapter house-style from an AdapterTraining, KB handbook, two tenants)."""
    spec = HybridEndpointSpec.model_validate({**example("HybridEndpoint")["spec"], **spec_overrides})
    kb = ResolvedKnowledgeBase(
        namespace,
        "handbook",
        "tandem_team__handbook",
        "http://milvus:19530",
        "r1",
        database="team",
        credentials=TOKEN,
        spec=KnowledgeBaseSpec.model_validate(example("KnowledgeBase")["spec"]),
    )
    training = ResolvedTraining(
        raft=True, start_time="2026-01-05T10:00:00Z", completion_time="2026-01-05T10:42:30Z"
    )
    return ResolvedEndpoint(namespace, "assistant", spec, {"house-style": training}, [kb])


def plan(
    spec: EvaluationSpec | None = None, resolved: ResolvedEndpoint | None = None, token: str = ""
) -> Plan:
    return plan_evaluation(OWNER, spec or evaluation_spec(), SETTINGS, resolved or endpoint(), token)


def job_input(p: Plan) -> EvaluationJob:
    [config] = [c for c in p.children if c["kind"] == "ConfigMap"]
    return EvaluationJob.model_validate(json.loads(config["data"]["spec.json"]))


def pod_of(p: Plan) -> dict[str, Any]:
    assert p.work is not None
    pod: dict[str, Any] = p.work["spec"]["template"]["spec"]
    return pod


def mount_at(pod: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (volume, mount) that serves `path` in the pod's only container."""
    [container] = pod["containers"]
    mount = max(
        (m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")),
        key=lambda m: len(m["mountPath"]),
    )
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return volume, mount


def test_children_are_owned_labelled_and_valid_kubernetes() -> None:
    p = plan()
    assert [c["kind"] for c in p.children] == ["ConfigMap", "Job"] and p.work is p.children[1]
    for child in p.children:
        meta = child["metadata"]
        [ref] = meta["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
            "Evaluation",
            "scorecard",
            "uid-scorecard",
            True,
        )
        assert meta["labels"]["tandem.dev/kind"] == "evaluation" and meta["namespace"] == NS
        kubernetes_validate.validate(child, "1.32", strict=True)
    # The Job reads the ConfigMap of its own run.
    assert p.children[0]["metadata"]["name"] == p.children[1]["metadata"]["name"]


def test_job_input_validates_as_the_workloads_model_and_names_the_gateway() -> None:
    job = job_input(plan())
    assert (job.namespace, job.name) == (NS, "scorecard")
    # The endpoint's gateway Service (named after the endpoint, port 80): what its tenants call.
    he = plan_hybrid_endpoint(
        Owner("tandem.dev/v1alpha1", "HybridEndpoint", NS, "assistant", "uid-he"),
        endpoint().spec,
        SETTINGS,
        [ResolvedAdapter("house-style", "pvc://adapters/handbook/hs-v1", 8, "v1")],
        endpoint().knowledge_bases,
    )
    [service] = [c for c in he.children if c["kind"] == "Service" and c["metadata"]["name"] == "assistant"]
    assert service["spec"]["ports"][0]["port"] == 80
    assert job.gateway == "http://assistant.team.svc/v1" == he.facts.url
    # The endpoint's default routes; the adapter came from an AdapterTraining with spec.raft.
    assert [(r.name, r.adapter, r.retrieval, r.raft) for r in job.routes] == [
        ("base", None, False, False),
        ("house-style", "house-style", False, True),
        ("hybrid", "house-style", True, True),
    ]
    [retrain] = job.retrain
    assert (retrain.adapter, retrain.seconds, retrain.recorded) == (
        "house-style",
        2550.0,
        "2026-01-05T10:42:30Z",
    )
    [kb] = job.knowledge_bases
    assert (kb.collection, kb.milvus_uri, kb.embedding_model) == (
        "tandem_team__handbook",
        "http://milvus:19530",
        "all-MiniLM-L6-v2",
    )
    # Its database, and its own chunking and embedding settings, to time a re-index as it would run.
    assert kb.database == "team" and kb.spec == endpoint().knowledge_bases[0].spec
    assert kb.token_file is not None
    volume, _ = mount_at(pod_of(plan()), kb.token_file)
    assert volume["secret"] == {"secretName": "milvus", "items": [{"key": "token", "path": "token"}]}
    assert job.output is None and job.judge_api_key_file is None
    assert job.spec == evaluation_spec()


def test_every_tenants_api_key_secret_is_mounted_where_the_job_says() -> None:
    p = plan()
    files = job_input(p).api_key_files
    assert list(files) == ["staff", "guests"]  # the endpoint's order: the first is the default tenant
    pod = pod_of(p)
    for tenant, key in (("staff", "staff"), ("guests", "guests")):
        volume, mount = mount_at(pod, files[tenant])
        assert volume["secret"] == {
            "secretName": "assistant-keys",
            "items": [{"key": key, "path": "api-key"}],
        }
        assert mount["readOnly"] is True and files[tenant] == f"{mount['mountPath']}/api-key"


def test_questions_from_a_config_map_key_are_mounted() -> None:
    p = plan()
    path = job_input(p).questions
    volume, mount = mount_at(pod_of(p), path)
    assert volume["configMap"] == {"name": "handbook-questions"} and mount["readOnly"] is True
    assert path.endswith("/questions.jsonl")


def test_questions_and_report_on_claims_are_mounted_read_only_and_read_write() -> None:
    spec = evaluation_spec(
        questions={"uri": "pvc://eval-data/sets/handbook.jsonl"}, report={"uri": "pvc://reports/handbook"}
    )
    p = plan(spec)
    job = job_input(p)
    pod = pod_of(p)
    volume, mount = mount_at(pod, job.questions)
    assert volume["persistentVolumeClaim"] == {"claimName": "eval-data", "readOnly": True}
    assert job.questions == f"{mount['mountPath']}/sets/handbook.jsonl"
    assert job.output is not None
    volume, mount = mount_at(pod, job.output + "/report.md")
    assert volume["persistentVolumeClaim"] == {"claimName": "reports", "readOnly": False}
    assert mount["readOnly"] is False and p.facts.report_uri == "pvc://reports/handbook"


@pytest.mark.parametrize(
    "overrides,reason,says",
    [
        ({"questions": {"uri": "s3://bucket/q.jsonl"}}, "QuestionSourceNotSupported", "not supported yet"),
        ({"questions": {"uri": "https://example.org/q.jsonl"}}, "QuestionSourceNotSupported", "configMap"),
        ({"questions": {"uri": "file:///tmp/q.jsonl"}}, "LocalPathInCluster", "only `tandem up`"),
        ({"report": {"uri": "s3://bucket/reports"}}, "ReportStoreNotSupported", "pvc://CLAIM/PATH"),
        ({"report": {"uri": "file:///tmp/reports"}}, "LocalPathInCluster", "spec.report.uri"),
        ({"strategies": [{"name": "rag", "route": "rag"}]}, "UnknownRoute", "no route rag (routes: base,"),
        ({"tenant": "admins"}, "UnknownTenant", "no tenant admins (tenants: staff, guests)"),
    ],
    ids=["s3-questions", "https-questions", "file-questions", "s3-report", "file-report", "route", "tenant"],
)
def test_what_a_cluster_cannot_do_is_refused_with_a_reason(
    overrides: dict[str, Any], reason: str, says: str
) -> None:
    with pytest.raises(PlanError) as caught:
        plan(evaluation_spec(**overrides))
    assert caught.value.reason == reason and says in str(caught.value)


def test_an_endpoint_in_another_namespace_is_refused_naming_the_fix() -> None:
    spec = evaluation_spec(endpointRef={"name": "assistant", "namespace": "shared"})
    with pytest.raises(PlanError) as caught:
        plan(spec, endpoint(namespace="shared"))
    assert caught.value.reason == "EndpointInAnotherNamespace"
    assert "HybridEndpoint shared/assistant" in str(caught.value)
    assert "create the Evaluation in namespace shared" in str(caught.value)


def test_knowledge_base_credentials_in_another_namespace_are_unreachable() -> None:
    elsewhere = ResolvedKnowledgeBase("docs", "handbook", "c", "http://m", "r1", credentials=TOKEN)
    resolved = endpoint()
    resolved = ResolvedEndpoint(
        resolved.namespace, resolved.name, resolved.spec, resolved.trainings, [elsewhere]
    )
    with pytest.raises(PlanError) as caught:
        plan(resolved=resolved)
    assert caught.value.reason == "MilvusCredentialsUnreachable" and "namespace docs" in str(caught.value)


def test_the_job_fails_at_once_on_a_permanent_error_and_runs_restricted() -> None:
    p = plan()
    assert p.work is not None
    spec = p.work["spec"]
    assert spec["podFailurePolicy"]["rules"] == [
        {"action": "FailJob", "onExitCodes": {"containerName": "evaluate", "operator": "In", "values": [2]}}
    ]
    assert spec["backoffLimit"] >= 1 and spec["ttlSecondsAfterFinished"] > 0
    pod = pod_of(p)
    [container] = pod["containers"]
    assert container["command"] == [
        "python",
        "-m",
        "tandem.workloads.evaluation",
        "--spec",
        "/etc/tandem/spec.json",
    ]
    assert container["image"] == SETTINGS.worker_image and container["resources"]["limits"]["memory"]
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert (
        plan(evaluation_spec(image="registry.example/worker:dev")).work["spec"]["template"]["spec"][  # type: ignore[index]
            "containers"
        ][0]["image"]
        == "registry.example/worker:dev"
    )


def test_a_judge_key_is_mounted_from_the_evaluations_own_namespace() -> None:
    spec = evaluation_spec(judge={"model": "judge", "apiKeySecretRef": {"name": "judge-key", "key": "key"}})
    p = plan(spec)
    path = job_input(p).judge_api_key_file
    assert path is not None
    volume, _ = mount_at(pod_of(p), path)
    assert volume["secret"] == {"secretName": "judge-key", "items": [{"key": "key", "path": "api-key"}]}


def test_a_run_is_named_by_spec_and_run_token_only() -> None:
    first = run_name(OWNER, evaluation_spec())
    assert run_name(OWNER, evaluation_spec()) == first
    assert run_name(OWNER, evaluation_spec(maxTokens=64)) != first
    assert run_name(OWNER, evaluation_spec(), "again") != first
    # Not the operator's images or the endpoint's state: a run asks many questions, and an operator
    # upgrade or a retrained adapter must not start one on its own.
    other = plan_evaluation(OWNER, evaluation_spec(), OperatorSettings(worker_image="w:2"), endpoint())
    assert other.work is not None and other.work["metadata"]["name"] == first
    assert plan(token="again").work["metadata"]["name"] == run_name(OWNER, evaluation_spec(), "again")  # type: ignore[index]


def test_adapters_without_a_known_training_have_no_retrain_figure() -> None:
    resolved = endpoint()
    resolved = ResolvedEndpoint(
        resolved.namespace, resolved.name, resolved.spec, {}, resolved.knowledge_bases
    )
    job = job_input(plan(resolved=resolved))
    assert [(r.adapter, r.seconds, r.recorded) for r in job.retrain] == [("house-style", None, None)]
    assert not any(r.raft for r in job.routes)


@pytest.mark.parametrize(
    "start,end,seconds",
    [
        ("2026-01-05T10:00:00Z", "2026-01-05T10:00:30Z", 30.0),
        (None, "2026-01-05T10:00:30Z", None),
        ("2026-01-05T10:00:00Z", None, None),
        ("yesterday", "2026-01-05T10:00:30Z", None),
        # A new run has started since the last one finished: its time is not known yet.
        ("2026-01-06T10:00:00Z", "2026-01-05T10:00:30Z", None),
    ],
)
def test_retrain_seconds(start: str | None, end: str | None, seconds: float | None) -> None:
    assert retrain_seconds(start, end) == seconds


def test_evaluation_pods_reach_the_gateway_and_not_vllm() -> None:
    """The endpoint's only NetworkPolicy guards its vLLM pods (gateway and operator only); the gateway
    itself is open to any pod that holds a tenant key. The evaluation calls the gateway, so it passes
    retrieval and the tenant checks like any client, and needs no exception in the policy."""
    he = plan_hybrid_endpoint(
        Owner("tandem.dev/v1alpha1", "HybridEndpoint", NS, "assistant", "uid-he"),
        endpoint().spec,
        SETTINGS,
        [],
        [],
    )
    policies = [c for c in he.children if c["kind"] == "NetworkPolicy"]
    eval_labels = plan().work["spec"]["template"]["metadata"]["labels"]  # type: ignore[index]
    gateway_labels = next(
        c for c in he.children if c["kind"] == "Deployment" and c["metadata"]["name"] == "assistant-gateway"
    )["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())

    assert not [p for p in policies if selects(p["spec"]["podSelector"], gateway_labels)]
    [vllm_policy] = policies
    admitted = [peer["podSelector"] for rule in vllm_policy["spec"]["ingress"] for peer in rule["from"]]
    assert not [s for s in admitted if selects(s, eval_labels)]
