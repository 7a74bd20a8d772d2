"""The operator's ingest Job runs the real ingest workload: plan -> spec file -> milvus-lite -> status.

The emulator runs no pods, so the test runs the Job's command itself (with the spec file the operator
put in the Job's ConfigMap) and records the pod's termination message, as the kubelet would.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster_controllers import finish_jobs, finish_rayjobs, run_pod
from tests.emulator.server import Emulator
from tests.integration.conftest import condition, eventually
from tests.manifests import ROOT

pytestmark = pytest.mark.integration

NS = "docs"


def knowledge_base(milvus_uri: str, documents: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "apiVersion": "tandem.dev/v1alpha1",
        "kind": "KnowledgeBase",
        "metadata": {"name": "handbook", "namespace": NS},
        "spec": {
            "sources": [{"name": "notes", "inline": {"documents": documents}}],
            "milvus": {"uri": milvus_uri},
            "chunking": {"size": 64, "overlap": 8},
        },
    }


def run_ingest(
    emulator: Emulator, job: dict[str, Any], tmp_path: Path, command: list[str] | None = None
) -> tuple[int, str]:
    """Execute the Job's container command with its mounted spec file, as the pod would."""
    [config] = [
        c for c in emulator.list("configmaps", NS) if c["metadata"]["name"] == job["metadata"]["name"]
    ]
    spec_file = tmp_path / f"{job['metadata']['name']}.json"
    spec_file.write_text(config["data"]["spec.json"])
    command = command or job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["python", "-m", "tandem.workloads.ingest"]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}"}
    done = subprocess.run(
        [sys.executable, *command[1:3], "--spec", str(spec_file)], env=env, capture_output=True, text=True
    )
    return done.returncode, done.stdout.strip().splitlines()[-1]


async def test_ingest_results_reach_status(
    emulator: Emulator, api: httpx.AsyncClient, operator: None, tmp_path: Path
) -> None:
    documents = [
        {"id": "travel", "title": "Travel", "text": "The travel desk code is QF-TRV-7."},
        {"id": "broken", "format": "pdf", "text": "this is not a PDF at all"},
    ]
    kb = knowledge_base(str(tmp_path / "milvus.db"), documents)
    assert (
        await api.post(f"/apis/tandem.dev/v1alpha1/namespaces/{NS}/knowledgebases", json=kb)
    ).status_code == 201
    [job] = await eventually(lambda: emulator.list("jobs", NS), what="the ingest Job")

    code, message = await asyncio.to_thread(run_ingest, emulator, job, tmp_path)
    assert code == 0, message
    with httpx.Client(base_url=emulator.url) as client:
        await asyncio.to_thread(
            run_pod, client, NS, job["metadata"]["name"], "ingest", exit_code=0, message=message
        )
        await asyncio.to_thread(finish_jobs, client, NS)

    def ready() -> dict[str, Any] | None:
        obj = emulator.get("knowledgebases", NS, "handbook")
        return obj if condition(obj, "Ready").get("status") == "True" else None

    obj = await eventually(ready, what="Ready with the ingest figures")
    status = obj["status"]
    assert (status["documents"], status["embeddingDimension"]) == (1, 384)
    assert status["chunks"] >= 1 and status["bytes"] > 0 and status["lastIndexedTime"]
    assert status["failedDocuments"] == [
        {"source": "notes", "document": "broken", "reason": status["failedDocuments"][0]["reason"]}
    ]
    assert "could not be indexed: notes/broken" in condition(obj, "Ready")["message"]


async def test_permanent_ingest_error_stalls_with_its_reason(
    emulator: Emulator, api: httpx.AsyncClient, operator: None, tmp_path: Path
) -> None:
    kb = knowledge_base(str(tmp_path / "milvus.db"), [{"id": "a", "text": "hello"}])
    kb["spec"]["chunking"] = {"size": 1000, "overlap": 0}  # more than the model reads
    assert (
        await api.post(f"/apis/tandem.dev/v1alpha1/namespaces/{NS}/knowledgebases", json=kb)
    ).status_code == 201
    [job] = await eventually(lambda: emulator.list("jobs", NS), what="the ingest Job")
    rule = job["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [2]

    code, message = await asyncio.to_thread(run_ingest, emulator, job, tmp_path)
    assert code == 2 and json.loads(message)["result"]["error"] == "ChunkSizeTooLarge"
    with httpx.Client(base_url=emulator.url) as client:
        await asyncio.to_thread(
            run_pod, client, NS, job["metadata"]["name"], "ingest", exit_code=2, message=message
        )
        await asyncio.to_thread(finish_jobs, client, NS, failed=True)

    obj = await eventually(
        lambda: (
            condition(emulator.get("knowledgebases", NS, "handbook"), "Stalled").get("status") == "True"
            and emulator.get("knowledgebases", NS, "handbook")
        ),
        what="Stalled",
    )
    stalled = condition(obj, "Stalled")
    assert stalled["reason"] == "ChunkSizeTooLarge" and "254 tokens" in stalled["message"]


async def test_rayjob_ingest_figures_reach_status_from_the_submitter(
    emulator: Emulator, api: httpx.AsyncClient, operator: None, tmp_path: Path
) -> None:
    """scale.engine RayJob: KubeRay runs Tandem's submitter (tandem.workloads.ray_submit, tested against a
    real Ray head in test_ray_submit.py), whose termination message is the ingest's result line. The
    emulator runs no KubeRay: the test runs the ingest itself (in one process), records the submitter
    Job's pod with that message, and marks the RayJob SUCCEEDED as KubeRay would."""
    kb = knowledge_base(str(tmp_path / "milvus.db"), [{"id": "travel", "text": "The travel code is QF-7."}])
    kb["spec"]["scale"] = {"engine": "RayJob", "workers": 2}
    assert (
        await api.post(f"/apis/tandem.dev/v1alpha1/namespaces/{NS}/knowledgebases", json=kb)
    ).status_code == 201
    [rayjob] = await eventually(lambda: emulator.list("rayjobs", NS), what="the ingest RayJob")
    [submitter] = rayjob["spec"]["submitterPodTemplate"]["spec"]["containers"]
    assert submitter["command"][:4] == ["python", "-m", "tandem.workloads.ray_submit", "--"]
    entrypoint = submitter["command"][4:]
    assert entrypoint[-2:] == ["--ray-workers", "2"]

    code, message = await asyncio.to_thread(run_ingest, emulator, rayjob, tmp_path, entrypoint[:5])
    assert code == 0, message
    with httpx.Client(base_url=emulator.url) as client:
        # KubeRay names the submitter Job after the RayJob; the container is named after the workload.
        await asyncio.to_thread(
            run_pod, client, NS, rayjob["metadata"]["name"], submitter["name"], exit_code=0, message=message
        )
        await asyncio.to_thread(finish_rayjobs, client, NS)

    def ready() -> dict[str, Any] | None:
        obj = emulator.get("knowledgebases", NS, "handbook")
        return obj if condition(obj, "Ready").get("status") == "True" else None

    status = (await eventually(ready, what="Ready with the RayJob's ingest figures"))["status"]
    assert (status["documents"], status["embeddingDimension"]) == (1, 384)
    assert status["chunks"] >= 1 and status["ingestJob"] == rayjob["metadata"]["name"]
