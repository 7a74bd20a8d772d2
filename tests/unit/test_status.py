"""Status derivations are pure: a plan, the children as observed and the work's report in, (Outcome,
figures) out. Tested like the planners, with hand-built live objects: each kind's Ready, progressing and
Stalled paths."""

from __future__ import annotations

from typing import Any

import pytest

from tandem.api.v1alpha1 import HybridEndpointSpec
from tandem.platform.kubernetes.children import Live, key
from tandem.platform.kubernetes.conditions import Outcome, conditions_for
from tandem.platform.kubernetes.observe import RETRY_HINT
from tandem.platform.kubernetes.planners import EndpointFacts, KnowledgeBaseFacts, Plan, TrainingFacts
from tandem.platform.kubernetes.ray_progress import PROGRESS_FIELDS
from tandem.platform.kubernetes.status import (
    adapter_training_status,
    evaluation_status,
    hybrid_endpoint_status,
    knowledge_base_status,
    recorded_outcome,
    strategy_summaries,
    with_failed_attempt,
)
from tandem.workloads.gateway.config import AdapterConfig

# -- live objects, as the API server would hold them -------------------------------------------------------


def job(name: str, **status: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "status": status}


def complete_job(name: str, **status: Any) -> dict[str, Any]:
    return job(name, conditions=[{"type": "Complete", "status": "True"}], succeeded=1, **status)


def failed_job(name: str) -> dict[str, Any]:
    conditions = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]
    return job(name, conditions=conditions, failed=3)


def rayjob(name: str, **status: Any) -> dict[str, Any]:
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": name}, "status": status}


def deployment(
    name: str, replicas: int, ready: int, generation: int = 1, observed: int = 1
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "generation": generation},
        "spec": {"replicas": replicas},
        "status": {"readyReplicas": ready, "observedGeneration": observed},
    }


def live(*objects: dict[str, Any]) -> Live:
    return {key(o): o for o in objects}


# -- KnowledgeBase ------------------------------------------------------------------------------------------

INGEST = "handbook-ingest-abc"
INGEST_REPORT = {
    "documents": 3,
    "chunks": 9,
    "bytes": 1200,
    "embedding_dimension": 384,
    "failed_documents": [],
    "finished_at": "2024-05-01T10:02:00Z",
}


def kb_plan(work_kind: str = "Job") -> Plan[KnowledgeBaseFacts]:
    api_version = "ray.io/v1" if work_kind == "RayJob" else "batch/v1"
    work = {"apiVersion": api_version, "kind": work_kind, "metadata": {"name": INGEST}}
    return Plan(KnowledgeBaseFacts("tandem_team__handbook", "r1"), children=[work], work=work)


def test_knowledge_base_is_ready_once_its_ingest_job_completed() -> None:
    work = complete_job(INGEST, completionTime="2024-05-01T10:03:00Z")
    outcome, figures = knowledge_base_status(kb_plan(), live(work), INGEST_REPORT)
    assert outcome == Outcome.ready("Indexed", "3 documents, 9 chunks at revision r1")
    assert figures == {
        "collection": "tandem_team__handbook",
        "ingestJob": INGEST,
        "indexedRevision": "r1",
        "documents": 3,
        "chunks": 9,
        "bytes": 1200,
        "embeddingDimension": 384,
        "failedDocuments": [],
        # The workload's own finish time wins over the Job's.
        "lastIndexedTime": "2024-05-01T10:02:00Z",
        "phase": "Ready",
    }


def test_knowledge_base_without_a_report_is_indexed_at_the_jobs_completion_time() -> None:
    work = complete_job(INGEST, completionTime="2024-05-01T10:03:00Z")
    outcome, figures = knowledge_base_status(kb_plan(), live(work), None)
    assert outcome == Outcome.ready("Indexed", "collection tandem_team__handbook holds revision r1")
    assert figures["lastIndexedTime"] == "2024-05-01T10:03:00Z"
    assert figures["indexedRevision"] == "r1" and "chunks" not in figures


def test_knowledge_base_ingest_run_on_ray_is_read_from_its_rayjob() -> None:
    work = rayjob(INGEST, jobStatus="SUCCEEDED")
    outcome, figures = knowledge_base_status(kb_plan("RayJob"), live(work), INGEST_REPORT)
    assert outcome.state == "Ready" and outcome.reason == "Indexed"
    assert figures["phase"] == "Ready" and figures["chunks"] == 9


@pytest.mark.parametrize(
    ("work", "reason", "phase"),
    [
        (None, "Creating", "Pending"),
        (job(INGEST), "Pending", "Pending"),
        (job(INGEST, active=1), "Running", "Indexing"),
    ],
    ids=["no-job-yet", "pending", "running"],
)
def test_knowledge_base_is_progressing_while_its_ingest_runs(
    work: dict[str, Any] | None, reason: str, phase: str
) -> None:
    outcome, figures = knowledge_base_status(kb_plan(), live(work) if work else {}, None)
    assert (outcome.state, outcome.reason) == ("Progressing", reason)
    assert figures == {"collection": "tandem_team__handbook", "ingestJob": INGEST, "phase": phase}


def test_knowledge_base_retrying_a_failed_attempt_says_why() -> None:
    report = {"error": "SourceUnreachable", "message": "wiki: connection refused"}
    outcome, figures = knowledge_base_status(kb_plan(), live(job(INGEST, active=1, failed=1)), report)
    assert outcome == Outcome.progressing(
        "Retrying", "the last ingest attempt failed (SourceUnreachable: wiki: connection refused); retrying"
    )
    assert figures["phase"] == "Pending" and "indexedRevision" not in figures


def test_knowledge_base_is_stalled_when_its_ingest_job_failed() -> None:
    outcome, figures = knowledge_base_status(kb_plan(), live(failed_job(INGEST)), None)
    assert (outcome.state, outcome.reason) == ("Stalled", "JobFailed")
    assert "failed after 3 attempts: BackoffLimitExceeded" in outcome.message
    assert figures["phase"] == "Failed" and "indexedRevision" not in figures
    # With the workload's own account, the cause is the reason.
    report = {"error": "SourceUnreachable", "message": "wiki: connection refused"}
    outcome, _ = knowledge_base_status(kb_plan(), live(failed_job(INGEST)), report)
    assert outcome == Outcome.stalled(
        "SourceUnreachable", f"SourceUnreachable: wiki: connection refused; {RETRY_HINT}"
    )


# -- AdapterTraining ----------------------------------------------------------------------------------------

TRAINING = "house-style-train-abc"
ADAPTER_URI = "pvc://adapters/house-style/v1"


def at_plan() -> Plan[TrainingFacts]:
    work = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": TRAINING}}
    return Plan(TrainingFacts("v1", ADAPTER_URI, "r1"), children=[work], work=work)


def test_adapter_training_is_ready_once_its_rayjob_succeeded() -> None:
    work = rayjob(
        TRAINING, jobStatus="SUCCEEDED", startTime="2024-05-01T10:00:00Z", endTime="2024-05-01T10:30:00Z"
    )
    report = {"adapterDigest": "sha256:abc", "metrics": {"steps": 40, "total_steps": 40, "loss": 0.8}}
    outcome, figures = adapter_training_status(at_plan(), live(work), {"rayJob": TRAINING}, report)
    assert outcome == Outcome.ready("Trained", f"adapter {ADAPTER_URI} written")
    assert figures == {
        "rayJob": TRAINING,
        "adapterVersion": "v1",
        "startTime": "2024-05-01T10:00:00Z",
        "adapterUri": ADAPTER_URI,
        "completionTime": "2024-05-01T10:30:00Z",
        "adapterDigest": "sha256:abc",
        "step": 40,
        "totalSteps": 40,
        "loss": 0.8,
        "etaSeconds": 0,
        "phase": "Succeeded",
    }


def test_adapter_training_running_keeps_its_progress_and_a_new_run_clears_it() -> None:
    work = rayjob(TRAINING, jobStatus="RUNNING", jobDeploymentStatus="Running", startTime="t0")
    outcome, figures = adapter_training_status(at_plan(), live(work), {"rayJob": TRAINING, "step": 7})
    assert (outcome.state, outcome.reason) == ("Progressing", "Running")
    # The same run: the step last read from the dashboard is not in the figures, so it stays as it is.
    assert figures == {"rayJob": TRAINING, "adapterVersion": "v1", "startTime": "t0", "phase": "Running"}
    _, figures = adapter_training_status(
        at_plan(), live(work), {"rayJob": "house-style-train-old", "step": 7}
    )
    assert {f: figures[f] for f in PROGRESS_FIELDS} == dict.fromkeys(PROGRESS_FIELDS)


def test_adapter_training_is_pending_until_its_rayjob_runs() -> None:
    outcome, figures = adapter_training_status(at_plan(), {}, {})
    assert (outcome.state, outcome.reason) == ("Progressing", "Creating")
    assert figures["phase"] == "Pending" and "adapterUri" not in figures and "startTime" not in figures


def test_adapter_training_is_stalled_when_its_rayjob_failed() -> None:
    work = rayjob(TRAINING, jobStatus="FAILED", message="OOM")
    outcome, figures = adapter_training_status(at_plan(), live(work), {"rayJob": TRAINING})
    assert outcome == Outcome.stalled("RayJobFailed", f"training RayJob {TRAINING} failed: OOM; {RETRY_HINT}")
    assert figures["phase"] == "Failed" and "adapterUri" not in figures
    report = {"error": "BaseModelNotFound", "message": "no such model"}
    outcome, figures = adapter_training_status(at_plan(), live(work), {"rayJob": TRAINING}, report)
    assert outcome == Outcome.stalled("BaseModelNotFound", f"BaseModelNotFound: no such model; {RETRY_HINT}")
    assert figures["phase"] == "Failed"


# -- HybridEndpoint -----------------------------------------------------------------------------------------

HE_SPEC = HybridEndpointSpec.model_validate(
    {
        "baseModel": {"uri": "pvc://models/m"},
        "adapters": [
            {"name": "house-style", "adapterTrainingRef": {"name": "house-style"}},
            {"name": "legal", "uri": "pvc://adapters/legal"},
        ],
    }
)
STYLE_PATH = "/adapters/house-style/v1"
LEGAL_PATH = "/adapters/legal"


def he_plan(adapters: list[AdapterConfig] | None = None) -> Plan[EndpointFacts]:
    if adapters is None:
        adapters = [
            AdapterConfig(name="house-style", path=STYLE_PATH, version="v1"),
            AdapterConfig(name="legal", path=LEGAL_PATH),
        ]
    return Plan(
        EndpointFacts("http://assistant.team.svc:8000", "assistant-vllm", "assistant-gateway", adapters)
    )


def serving(vllm_ready: int = 2, gateway_ready: int = 1, **vllm: int) -> Live:
    return live(
        deployment("assistant-vllm", 2, vllm_ready, **vllm), deployment("assistant-gateway", 1, gateway_ready)
    )


BOTH_LOADED = [{"house-style": STYLE_PATH, "legal": LEGAL_PATH}] * 2


def test_hybrid_endpoint_is_serving_when_every_pod_is_ready_with_every_adapter() -> None:
    outcome, figures = hybrid_endpoint_status(HE_SPEC, he_plan(), serving(), [], BOTH_LOADED)
    assert outcome == Outcome.ready("Serving", "vLLM 2/2 and gateway 1/1 ready")
    assert figures == {
        "url": "http://assistant.team.svc:8000",
        "replicas": 2,
        "readyReplicas": 2,
        "gatewayReadyReplicas": 1,
        "adapters": [
            {"name": "house-style", "loadedReplicas": 2, "ready": True, "version": "v1"},
            {"name": "legal", "loadedReplicas": 2, "ready": True},
        ],
        "phase": "Ready",
    }


MILVUS_DOWN: dict[str, Any] = {
    "ready": False,
    "vllm": {"ok": True},
    "knowledgeBases": {"team/handbook": {"ok": False, "error": "cannot connect to Milvus at milvus:19530"}},
    "routes": {"base": True, "rag": False},
}
ALL_UP: dict[str, Any] = {
    "ready": True,
    "vllm": {"ok": True},
    "knowledgeBases": {"team/handbook": {"ok": True}},
    "routes": {"base": True, "rag": True},
}


def test_hybrid_endpoint_whose_gateway_cannot_search_is_retrieval_unavailable() -> None:
    """Issue 18, item 4: a rolled-out endpoint whose gateway pod finds a KnowledgeBase unreachable is not
    Ready, saying which and what still answers (it was Serving, Ready, before: pods' readiness is vLLM's)."""
    outcome, figures = hybrid_endpoint_status(
        HE_SPEC, he_plan(), serving(), [], BOTH_LOADED, None, [ALL_UP, MILVUS_DOWN]
    )
    assert (outcome.state, outcome.reason) == ("Stalled", "RetrievalUnavailable")
    assert outcome.message == (
        "cannot connect to Milvus at milvus:19530. Routes rag fail (they retrieve); base still answers at "
        "http://assistant.team.svc:8000/v1"
    )
    assert figures["phase"] == "Failed"
    # Every pod finds its dependencies: Serving; a pod that cannot be asked claims nothing, and says so.
    outcome, _ = hybrid_endpoint_status(HE_SPEC, he_plan(), serving(), [], BOTH_LOADED, None, [ALL_UP])
    assert outcome == Outcome.ready("Serving", "vLLM 2/2 and gateway 1/1 ready")
    unread = "the gateway pod assistant-gateway-x (10.0.0.9:8080) does not answer (ConnectTimeout)"
    outcome, _ = hybrid_endpoint_status(HE_SPEC, he_plan(), serving(), [], BOTH_LOADED, None, [unread])
    assert outcome == Outcome.ready(
        "Serving", f"vLLM 2/2 and gateway 1/1 ready; dependencies not checked: {unread}"
    )


@pytest.mark.parametrize(
    ("children", "message"),
    [
        (serving(vllm_ready=1), "vLLM 1/2 ready, gateway 1/1 ready"),
        (serving(gateway_ready=0), "vLLM 2/2 ready, gateway 0/1 ready"),
        # The Deployment controller has not seen the latest template: its ready pods are the old ones.
        (serving(generation=2, observed=1), "vLLM 0/2 ready, gateway 1/1 ready"),
    ],
    ids=["vllm-starting", "gateway-starting", "rollout-not-observed"],
)
def test_hybrid_endpoint_is_deploying_until_both_deployments_are_ready(children: Live, message: str) -> None:
    outcome, figures = hybrid_endpoint_status(HE_SPEC, he_plan(), children, [], BOTH_LOADED)
    assert outcome == Outcome.progressing("Deploying", message)
    assert figures["phase"] == "Progressing"


def test_hybrid_endpoint_waits_for_adapters_whose_training_has_none_yet() -> None:
    # house-style's training has not written an adapter: the planner serves only legal.
    plan = he_plan([AdapterConfig(name="legal", path=LEGAL_PATH)])
    observed = [{"legal": LEGAL_PATH}] * 2
    outcome, figures = hybrid_endpoint_status(HE_SPEC, plan, serving(), ["house-style"], observed)
    assert outcome == Outcome.progressing("WaitingForAdapters", "waiting for adapters: house-style")
    assert figures["adapters"] == [
        {"name": "house-style", "loadedReplicas": 0, "ready": False},
        {"name": "legal", "loadedReplicas": 2, "ready": True},
    ]
    assert figures["phase"] == "Progressing"


def test_hybrid_endpoint_is_loading_until_every_pod_serves_the_current_adapter_path() -> None:
    # One pod still serves the previous version of house-style, the other has not loaded legal yet.
    observed = [{"house-style": "/adapters/house-style/v0", "legal": LEGAL_PATH}, {"house-style": STYLE_PATH}]
    outcome, figures = hybrid_endpoint_status(HE_SPEC, he_plan(), serving(), [], observed)
    assert outcome == Outcome.progressing(
        "LoadingAdapters",
        "adapters not yet loaded on every vLLM pod: house-style (1/2 pods), legal (1/2 pods)",
    )
    assert [a["ready"] for a in figures["adapters"]] == [False, False]


def test_hybrid_endpoint_whose_adapter_sync_failed_says_why_instead_of_loading_forever() -> None:
    # legal's sync failed on pod vllm-1 (its sidecar's words); house-style has a stale error from a pod
    # that has loaded it since on every pod, which no longer matters.
    observed = [{"house-style": STYLE_PATH, "legal": LEGAL_PATH}, {"house-style": STYLE_PATH}]
    errors = {"legal": ["vllm-1: /adapters/legal holds no adapter_config.json"], "house-style": ["vllm-0: x"]}
    outcome, figures = hybrid_endpoint_status(HE_SPEC, he_plan(), serving(), [], observed, None, None, errors)
    assert outcome == Outcome.stalled(
        "AdapterSyncFailed", "legal on vllm-1: /adapters/legal holds no adapter_config.json"
    )
    assert figures["phase"] == "Failed"
    outcome, _ = hybrid_endpoint_status(HE_SPEC, he_plan(), serving(), [], BOTH_LOADED, None, None, errors)
    assert outcome.state == "Ready"  # loaded everywhere now: an old error claims nothing


def test_hybrid_endpoint_base_model_fetch_failure_retries_or_stalls() -> None:
    starting = serving(vllm_ready=0)
    unreachable = {"error": "BaseModelUnreachable", "message": "timed out"}
    outcome, figures = hybrid_endpoint_status(HE_SPEC, he_plan(), starting, [], [], unreachable)
    assert outcome == Outcome.progressing(
        "Retrying", "fetching the base model failed (BaseModelUnreachable: timed out); retrying"
    )
    assert figures["phase"] == "Progressing"
    missing = {"error": "BaseModelNotFound", "message": "no such model"}
    outcome, figures = hybrid_endpoint_status(HE_SPEC, he_plan(), starting, [], [], missing)
    assert outcome == Outcome.stalled(
        "BaseModelNotFound", "fetching the base model: BaseModelNotFound: no such model"
    )
    assert figures["phase"] == "Failed"
    # Once the vLLM pods are ready, an old fetch failure no longer speaks for them.
    outcome, _ = hybrid_endpoint_status(HE_SPEC, he_plan(), serving(), [], BOTH_LOADED, missing)
    assert outcome.state == "Ready"


# -- Evaluation ---------------------------------------------------------------------------------------------

RUN = "quality-run-abc"
STRATEGIES = [
    {"name": "rag", "route": "rag", "rung": "rag", "correct": 0.8, "errors": 0},
    {"name": "hybrid", "route": "hybrid", "rung": "hybrid", "correct": 0.9, "latency_p50_seconds": 1.5},
]
EVALUATION_REPORT = {
    "questions": 10,
    "answered": 20,
    "strategies": STRATEGIES,
    "recommendation": "hybrid: +10 points correct",
    "reportFiles": ["report.md"],
    "warnings": ["judge unavailable"],
}
CLEARED = {
    "questions": None,
    "answered": None,
    "strategies": [],
    "recommendation": None,
    "reportUri": None,
    "completionTime": None,
}


def test_evaluation_is_ready_with_the_scorecards_headline() -> None:
    done = complete_job(RUN, startTime="t0", completionTime="t1")
    outcome, figures = evaluation_status(done, EVALUATION_REPORT, "s3://reports/quality")
    assert outcome == Outcome.ready(
        "Evaluated",
        "20/20 answers from 2 strategies; hybrid: +10 points correct; warnings: judge unavailable",
    )
    assert figures == {
        "phase": "Succeeded",
        "job": RUN,
        "questions": 10,
        "answered": 20,
        "strategies": [
            {"name": "rag", "route": "rag", "rung": "rag", "correct": 0.8, "errors": 0},
            {
                "name": "hybrid",
                "route": "hybrid",
                "rung": "hybrid",
                "correct": 0.9,
                "latencyP50Seconds": 1.5,
                "errors": 0,
            },
        ],
        "recommendation": "hybrid: +10 points correct",
        "reportUri": "s3://reports/quality",
        "startTime": "t0",
        "completionTime": "t1",
    }
    # No report files written: status does not name where they would be.
    _, figures = evaluation_status(done, {**EVALUATION_REPORT, "reportFiles": []}, "s3://reports/quality")
    assert figures["reportUri"] is None


def test_an_untrustworthy_evaluation_is_not_ready_and_recommends_nothing() -> None:
    """Issue 18, item 4: the cluster maps the Job's verdict as `tandem eval` does (a strategy failing every
    answer recommended a cheaper rung, Ready True, before)."""
    done = complete_job(RUN, startTime="t0", completionTime="t1")
    broken = {
        **EVALUATION_REPORT,
        "answered": 10,
        "strategies": [{**STRATEGIES[0], "errors": 10}, STRATEGIES[1]],
        "recommendation": "rag: cheaper and as good",
        "trustworthy": False,
        "untrustworthyReasons": ["rag: 10 of 10 answers are errors (over 10 %)"],
        "errors": {"rag": {"milvus": 9, "unreachable": 1}},
    }
    outcome, figures = evaluation_status(done, broken, "s3://reports/quality")
    assert (outcome.state, outcome.reason) == ("Stalled", "Untrustworthy")
    assert outcome.message.startswith("not trustworthy, no recommendation: rag: 10 of 10 answers are errors")
    assert "errors by cause: rag: milvus 9, unreachable 1" in outcome.message
    assert figures["recommendation"] is None and figures["phase"] == "Failed"
    # What was observed stays: the figures of each strategy, with its errors, and where the report is.
    assert [s["errors"] for s in figures["strategies"]] == [10, 0]
    assert figures["reportUri"] == "s3://reports/quality"
    # A trustworthy run (or one from a workload that does not say) is as before.
    for verdict in ({"trustworthy": True}, {}):
        outcome, figures = evaluation_status(done, {**EVALUATION_REPORT, **verdict}, None)
        assert outcome.state == "Ready" and figures["recommendation"] == "hybrid: +10 points correct"


def test_evaluation_that_left_no_readable_result_is_done_without_figures() -> None:
    done = complete_job(RUN, startTime="t0", completionTime="t1")
    for report in (None, {"questions": 10, "strategies": [{"name": "rag"}]}):  # none, or not a summary
        outcome, figures = evaluation_status(done, report, "s3://reports/quality")
        assert (outcome.state, outcome.reason) == ("Ready", "Evaluated")
        assert "left no readable result" in outcome.message
        assert figures == {"phase": "Succeeded", "job": RUN, "startTime": "t0", **CLEARED}


@pytest.mark.parametrize(
    ("work", "report", "reason", "phase"),
    [
        (None, None, "Creating", "Pending"),
        (job(RUN, active=1, startTime="t0"), None, "Running", "Running"),
        (
            job(RUN, active=1, failed=1, startTime="t0"),
            {"error": "EndpointUnreachable"},
            "Retrying",
            "Running",
        ),
    ],
    ids=["no-job-yet", "running", "retrying"],
)
def test_evaluation_is_progressing_while_its_job_runs(
    work: dict[str, Any] | None, report: dict[str, Any] | None, reason: str, phase: str
) -> None:
    outcome, figures = evaluation_status(work, report, None)
    assert (outcome.state, outcome.reason) == ("Progressing", reason)
    # The figures of an earlier run are cleared: nothing is measured yet.
    start = "t0" if work else None
    assert figures == {"phase": phase, "job": RUN if work else None, "startTime": start, **CLEARED}


def test_evaluation_is_stalled_when_its_job_failed() -> None:
    outcome, figures = evaluation_status(failed_job(RUN), None, None)
    assert (outcome.state, outcome.reason) == ("Stalled", "JobFailed")
    assert figures == {"phase": "Failed", "job": RUN, "startTime": None, **CLEARED}
    report = {"error": "EndpointUnreachable", "message": "connection refused"}
    outcome, _ = evaluation_status(failed_job(RUN), report, None)
    assert outcome == Outcome.stalled(
        "EndpointUnreachable", f"EndpointUnreachable: connection refused; {RETRY_HINT}"
    )


def test_a_finished_runs_outcome_is_read_back_from_its_conditions() -> None:
    ready = Outcome.ready("Evaluated", "20/20 answers from 2 strategies")
    stalled = Outcome.stalled("JobFailed", "evaluation Job failed")
    for outcome in (ready, stalled):
        assert recorded_outcome({"conditions": conditions_for(outcome, 1, [])}) == outcome


def test_strategy_summaries_are_none_unless_the_report_reads_as_one() -> None:
    assert strategy_summaries(EVALUATION_REPORT) is not None
    assert strategy_summaries({"strategies": STRATEGIES}) is None  # no question count
    assert strategy_summaries({"questions": 10, "strategies": "rag"}) is None
    assert strategy_summaries({"questions": 10, "strategies": [{"name": "rag"}]}) is None  # no route, rung


def test_a_failed_attempt_does_not_change_a_ready_outcome() -> None:
    ready = Outcome.ready("Succeeded", "done")
    assert with_failed_attempt(ready, {"error": "X", "message": "m"}, "ingest") == ready
    running = Outcome.progressing("Running", "running")
    assert with_failed_attempt(running, {}, "ingest") == running
