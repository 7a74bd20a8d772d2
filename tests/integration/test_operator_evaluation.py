"""The operator runs an Evaluation as a Job and copies the workload's result into status (API emulator).

The operator runs in-process against the emulator (see conftest). What this does not cover: the emulator
runs no pods and no controllers, so nothing here executes the evaluation workload or reaches a gateway.
`tests.cluster_controllers` plays the Job controller and the kubelet: it records a finished pod with the
termination message the workload would have written (`{"result": ...}`, exit code 0 or 2) and marks the
Job Complete or Failed. The podFailurePolicy (exit 2 fails the Job at once), the Job's
ttlSecondsAfterFinished, Secret and volume mounting, NetworkPolicy enforcement and DNS of the gateway
Service are therefore not exercised; the planner's unit tests check what the Job asks for.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.cluster_controllers import finish_jobs, roll_out_deployments, run_pod
from tests.emulator.server import Emulator
from tests.integration.conftest import condition, eventually
from tests.integration.test_operator import children, create, in_namespace
from tests.manifests import example

pytestmark = pytest.mark.integration

NS = "team"
EV_PATH = f"/apis/tandem.dev/v1alpha1/namespaces/{NS}/evaluations"
MERGE = {"Content-Type": "application/merge-patch+json"}

RESULT = {
    "questions": 12,
    "answered": 23,
    "complete": False,
    "strategies": [
        {
            "name": "prompt",
            "route": "base",
            "rung": "prompt",
            "correct": 0.25,
            "answerFormat": None,
            "citationRecall": None,
            "groundedness": None,
            "refusal": 0.5,
            "latencyP50Seconds": 0.8,
            "promptTokens": 41.5,
            "errors": 1,
        },
        {
            "name": "rag",
            "route": "rag",
            "rung": "rag",
            "correct": 0.5,
            "answerFormat": 0.9,
            "citationRecall": 0.75,
            "groundedness": 0.8,
            "refusal": 0.25,
            "latencyP50Seconds": 0.9,
            "promptTokens": 41.5,
            "errors": 0,
        },
    ],
    "recommendation": "retrieval answers twice as many questions correctly; use rag",
    "reportFiles": ["/mnt/pvc-reports/handbook/report.md"],
    "warnings": ["1 question got no answer from prompt"],
}


def evaluation(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tandem.dev/v1alpha1",
        "kind": "Evaluation",
        "metadata": {"name": "scorecard", "namespace": NS},
        "spec": {
            "endpointRef": {"name": "assistant"},
            "questions": {"configMap": {"name": "questions", "key": "questions.jsonl"}},
            "strategies": [{"name": "prompt", "route": "base"}, {"name": "rag", "route": "rag"}],
            "report": {"uri": "pvc://reports/handbook"},
            **spec,
        },
    }


async def deploy_endpoint(emulator: Emulator, api: httpx.AsyncClient) -> None:
    """The example endpoint (two tenants) without adapters or knowledge bases: no training or ingest to
    wait for, and Ready once its Deployments are, which the emulator can show."""
    endpoint = in_namespace(example("HybridEndpoint"))
    endpoint["spec"].update(
        adapters=[],
        knowledgeBases=[],
        routes=[{"name": "base", "retrieval": False}, {"name": "rag", "retrieval": True}],
    )
    await create(api, endpoint)
    await eventually(lambda: len(children(emulator, "deployments", "assistant")) == 2, what="the Deployments")


async def roll_out(emulator: Emulator) -> None:
    """Only the Deployments: an evaluation Job must not be finished by this."""

    def run() -> None:
        with httpx.Client(base_url=emulator.url, timeout=10) as client:
            roll_out_deployments(client, NS)

    await asyncio.to_thread(run)
    await eventually(
        lambda: condition(emulator.get("hybridendpoints", NS, "assistant"), "Ready").get("status") == "True",
        what="the endpoint Ready",
    )


async def ready_endpoint(emulator: Emulator, api: httpx.AsyncClient) -> None:
    await deploy_endpoint(emulator, api)
    await roll_out(emulator)


async def finish(emulator: Emulator, job: dict[str, Any], exit_code: int, result: dict[str, Any]) -> None:
    """The pod ends with the workload's termination message; the Job controller then marks the Job."""

    def run() -> None:
        with httpx.Client(base_url=emulator.url, timeout=10) as client:
            message = json.dumps({"result": result})
            run_pod(client, NS, job["metadata"]["name"], "evaluate", exit_code=exit_code, message=message)
            finish_jobs(client, NS, failed=exit_code != 0)

    await asyncio.to_thread(run)


def evaluation_where(emulator: Emulator, type_: str, status: str = "True") -> dict[str, Any] | None:
    obj = emulator.get("evaluations", NS, "scorecard")
    return obj if condition(obj, type_).get("status") == status else None


async def test_waits_for_the_endpoint_then_runs_and_reports_the_scorecard(
    emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    created = await create(api, evaluation())
    waiting = await eventually(lambda: evaluation_where(emulator, "Reconciling"), what="Reconciling")
    assert condition(waiting, "Reconciling")["reason"] == "WaitingForEndpoint"
    assert "HybridEndpoint team/assistant does not exist yet" in condition(waiting, "Reconciling")["message"]
    assert condition(waiting, "Ready")["status"] == "False" and waiting["status"]["phase"] == "Pending"
    assert not children(emulator, "jobs", "scorecard")

    await deploy_endpoint(emulator, api)
    # Deployed, but not Ready yet: still waiting, and saying why.
    not_ready = await eventually(
        lambda: (
            "is not Ready yet"
            in condition(evaluation_where(emulator, "Reconciling"), "Reconciling").get("message", "")
            and emulator.get("evaluations", NS, "scorecard")
        ),
        what="waiting for a not-Ready endpoint",
    )
    assert condition(not_ready, "Reconciling")["reason"] == "WaitingForEndpoint"
    assert not children(emulator, "jobs", "scorecard")

    await roll_out(emulator)
    [job] = await eventually(lambda: children(emulator, "jobs", "scorecard"), what="the evaluation Job")
    [ref] = job["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
        "Evaluation",
        "scorecard",
        created["metadata"]["uid"],
        True,
    )
    [config] = children(emulator, "configmaps", "scorecard")
    assert config["metadata"]["name"] == job["metadata"]["name"]
    job_input = json.loads(config["data"]["spec.json"])
    assert job_input["gateway"] == "http://assistant.team.svc/v1"
    assert list(job_input["apiKeyFiles"]) == ["staff", "guests"]
    running = await eventually(
        lambda: (o := evaluation_where(emulator, "Reconciling")) and o["status"].get("job") and o,
        what="the run in status",
    )
    assert running["status"]["job"] == job["metadata"]["name"]

    await finish(emulator, job, 0, RESULT)
    done = await eventually(lambda: evaluation_where(emulator, "Ready"), what="Ready with the scorecard")
    status = done["status"]
    assert status["phase"] == "Succeeded"
    assert (status["questions"], status["answered"]) == (12, 23)
    assert status["recommendation"] == RESULT["recommendation"]
    assert status["reportUri"] == "pvc://reports/handbook" and status["completionTime"]
    prompt, rag = status["strategies"]
    assert prompt == {k: v for k, v in RESULT["strategies"][0].items() if v is not None}  # type: ignore[union-attr]
    assert (rag["route"], rag["citationRecall"], rag["groundedness"]) == ("rag", 0.75, 0.8)
    ready = condition(done, "Ready")
    assert ready["reason"] == "Evaluated" and "23/24 answers from 2 strategies" in ready["message"]
    assert "1 question got no answer from prompt" in ready["message"]
    assert (
        condition(done, "Stalled")["status"] == "False"
        and condition(done, "Reconciling")["status"] == "False"
    )


async def test_a_permanent_failure_stalls_with_the_workloads_reason_and_the_run_annotation_retries(
    emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    await ready_endpoint(emulator, api)
    await create(api, evaluation())
    [job] = await eventually(lambda: children(emulator, "jobs", "scorecard"), what="the evaluation Job")
    rule = job["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [2]

    failure = {"error": "InvalidQuestionSet", "message": "questions.jsonl:3: field 'answer' is missing"}
    await finish(emulator, job, 2, failure)
    stalled = await eventually(lambda: evaluation_where(emulator, "Stalled"), what="Stalled")
    cond = condition(stalled, "Stalled")
    assert cond["reason"] == "InvalidQuestionSet" and "questions.jsonl:3" in cond["message"]
    assert "tandem.dev/run" in cond["message"]
    assert condition(stalled, "Ready")["status"] == "False" and stalled["status"]["phase"] == "Failed"
    assert stalled["status"]["strategies"] == [] and "questions" not in stalled["status"]

    patch = {"metadata": {"annotations": {"tandem.dev/run": "retry-1"}}}
    assert (await api.patch(f"{EV_PATH}/scorecard", json=patch, headers=MERGE)).status_code == 200

    def replaced() -> list[dict[str, Any]] | None:
        jobs = children(emulator, "jobs", "scorecard")
        names = [j["metadata"]["name"] for j in jobs]
        return jobs if len(names) == 1 and names != [job["metadata"]["name"]] else None  # old one pruned

    [again] = await eventually(replaced, what="a new run replacing the failed one")
    retried = await eventually(
        lambda: (
            (o := evaluation_where(emulator, "Reconciling"))
            and o["status"]["job"] == again["metadata"]["name"]
            and o
        ),
        what="the new run in status",
    )
    assert retried["status"]["phase"] in ("Pending", "Running")


async def test_a_finished_run_is_not_run_again_when_its_job_is_gone(
    emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    """The Job is collected after ttlSecondsAfterFinished (or deleted by hand); the result stays in status,
    and the evaluation does not ask every question again."""
    await ready_endpoint(emulator, api)
    await create(api, evaluation())
    [job] = await eventually(lambda: children(emulator, "jobs", "scorecard"), what="the evaluation Job")
    await finish(emulator, job, 0, RESULT)
    before = await eventually(lambda: evaluation_where(emulator, "Ready"), what="Ready")

    response = await api.delete(f"/apis/batch/v1/namespaces/{NS}/jobs/{job['metadata']['name']}")
    assert response.status_code == 200
    await asyncio.sleep(5)  # more than two resync periods (TANDEM_RESYNC_SECONDS=2)
    assert not children(emulator, "jobs", "scorecard")
    after = emulator.get("evaluations", NS, "scorecard")
    assert after["status"] == before["status"]


async def test_an_untrustworthy_run_is_not_ready_and_stays_so_when_its_job_is_gone(
    emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    """Issue 18, item 4: the Job's result says the run is not trustworthy (the rag route failed every
    question: Milvus was down); the Evaluation is Stalled Untrustworthy with the errors by cause and no
    recommendation, and stays so once the Job is collected."""
    await ready_endpoint(emulator, api)
    await create(api, evaluation())
    [job] = await eventually(lambda: children(emulator, "jobs", "scorecard"), what="the evaluation Job")
    rag_failed = [dict(RESULT["strategies"][0]), {**RESULT["strategies"][1], "errors": 12}]  # type: ignore[index]
    broken = {
        **RESULT,
        "answered": 11,
        "strategies": rag_failed,
        "trustworthy": False,
        "untrustworthyReasons": ["rag: 12 of 12 answers are errors (over the 10 % limit)"],
        "errors": {"prompt": {"vllm": 1}, "rag": {"milvus": 12}},
    }
    await finish(emulator, job, 0, broken)
    stalled = await eventually(lambda: evaluation_where(emulator, "Stalled"), what="Stalled")
    cond = condition(stalled, "Stalled")
    assert cond["reason"] == "Untrustworthy"
    assert "rag: 12 of 12 answers are errors" in cond["message"]
    assert "errors by cause: prompt: vllm 1; rag: milvus 12" in cond["message"]
    assert condition(stalled, "Ready")["status"] == "False"
    status = stalled["status"]
    assert status["phase"] == "Failed" and "recommendation" not in status
    assert [s["errors"] for s in status["strategies"]] == [1, 12]

    response = await api.delete(f"/apis/batch/v1/namespaces/{NS}/jobs/{job['metadata']['name']}")
    assert response.status_code == 200
    await asyncio.sleep(5)  # more than two resync periods (TANDEM_RESYNC_SECONDS=2)
    after = emulator.get("evaluations", NS, "scorecard")
    assert condition(after, "Stalled")["reason"] == "Untrustworthy" and not children(
        emulator, "jobs", "scorecard"
    )


async def test_an_endpoint_in_another_namespace_stalls_with_the_fix(
    emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    await create(api, evaluation(endpointRef={"name": "assistant", "namespace": "shared"}))
    stalled = await eventually(lambda: evaluation_where(emulator, "Stalled"), what="Stalled")
    cond = condition(stalled, "Stalled")
    assert cond["reason"] == "EndpointInAnotherNamespace"
    assert "create the Evaluation in namespace shared" in cond["message"]
    assert not children(emulator, "jobs", "scorecard")
