"""While its RayJob runs, an AdapterTraining's status shows the step, loss and ETA the training printed,
read from the Ray dashboard's Jobs API (API emulator, and a local HTTP server playing the dashboard).

The operator runs in-process against the emulator (see conftest). An aiohttp server on 127.0.0.1 answers
`GET /api/jobs/{id}/logs` as a Ray head's dashboard does (`{"logs": "<all driver output>"}`), and the
test writes the RayJob's status as KubeRay would (jobStatus RUNNING, dashboardURL, jobId). What this
does not cover: no Ray cluster runs, so the log text is written by the test in the shape the training
workload prints (see tests/unit/test_ray_progress.py for Ray's prefixes and noise); KubeRay's own
dashboardURL (`<cluster>-head-svc.<ns>.svc.cluster.local:8265`), cluster DNS, and the chart's
NetworkPolicy egress rule to the head pods are not exercised; the dashboard's other endpoints, its
authentication (none by default) and a real Ray version's answer are not either.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiohttp import web

from tandem.platform.kubernetes.ray_progress import DashboardUnavailable, last_progress, read_log_tail
from tandem.workloads.training.trainer import TrainingOutcome
from tests.cluster_controllers import finish_rayjobs, run_pod
from tests.emulator.server import Emulator
from tests.integration.conftest import condition, eventually
from tests.integration.test_operator import children, create, in_namespace
from tests.manifests import example

pytestmark = pytest.mark.integration

NS = "team"
NAME = "house-style"
JOB_ID = "house-style-train-abc12-x7k2p"  # KubeRay's submission id of the RayJob's run
MERGE = {"Content-Type": "application/merge-patch+json"}


def step_line(step: int, total: int = 40) -> str:
    """A per-step line as rank 0's Ray Train worker prints it into the driver log."""
    event = {
        "stage": "training",
        "step": step,
        "totalSteps": total,
        "loss": round(2.0 - step / 20, 4),
        "tokensPerSecond": 850.0,
        "etaSeconds": (total - step) * 3,
    }
    return f"(RayTrainWorker pid=311, ip=10.0.0.5) {json.dumps(event)}"


@dataclass
class Dashboard:
    """A stand-in for a Ray head's dashboard: the job's driver log, as the test grows it."""

    logs: str = ""
    requests: list[str] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    async def _job_logs(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        if request.match_info["job_id"] != JOB_ID:
            return web.Response(status=404, text=f"Job {request.match_info['job_id']} does not exist")
        return web.json_response({"logs": self.logs})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/jobs/{job_id}/logs", self._job_logs)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self.runner.addresses[0][1]  # the port the OS picked

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"  # host:port, as KubeRay writes status.dashboardURL


@pytest_asyncio.fixture()
async def dashboard() -> AsyncIterator[Dashboard]:
    served = Dashboard()
    await served.start()
    try:
        yield served
    finally:
        await served.stop()


async def run_rayjob(api: httpx.AsyncClient, name: str, dashboard_url: str) -> None:
    """Report the RayJob's cluster up and its job running, as KubeRay would."""
    status = {
        "jobStatus": "RUNNING",
        "jobDeploymentStatus": "Running",
        "jobId": JOB_ID,
        "dashboardURL": dashboard_url,
        "rayClusterName": f"{name}-raycluster-x7k2p",
        "startTime": "2026-05-01T10:00:00Z",
    }
    path = f"/apis/ray.io/v1/namespaces/{NS}/rayjobs/{name}/status"
    response = await api.patch(path, json={"status": status}, headers=MERGE)
    assert response.status_code == 200, response.text


def training(emulator: Emulator) -> dict[str, Any]:
    return emulator.get("adaptertrainings", NS, NAME) or {}


def figures(obj: dict[str, Any]) -> dict[str, Any]:
    status = obj.get("status") or {}
    keys = ("step", "totalSteps", "loss", "evalLoss", "tokensPerSecond", "etaSeconds")
    return {k: status[k] for k in keys if k in status}


async def test_status_follows_the_training_log_and_keeps_the_last_figures_when_the_dashboard_goes(
    emulator: Emulator,
    api: httpx.AsyncClient,
    operator: None,
    dashboard: Dashboard,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await create(api, in_namespace(example("AdapterTraining")))
    [rayjob] = await eventually(lambda: children(emulator, "rayjobs", NAME), what="the RayJob")
    # Nothing has run yet: status has no figures to show, and makes none up.
    pending = await eventually(lambda: (o := training(emulator)).get("status", {}).get("phase") and o)
    assert pending["status"]["phase"] == "Pending" and figures(pending) == {}

    dashboard.logs = "\n".join(
        [
            json.dumps({"stage": "training-start", "examples": 44, "evalExamples": 4}),
            "(RayTrainWorker pid=311, ip=10.0.0.5) Setting up process group for: env:// [rank=0]",
            step_line(11),
            step_line(12),
            '(RayTrainWorker pid=311, ip=10.0.0.5) {"stage": "training", "step": 13, "tot',  # being written
        ]
    )
    await run_rayjob(api, rayjob["metadata"]["name"], dashboard.address)
    running = await eventually(
        lambda: (o := training(emulator)).get("status", {}).get("step") == 12 and o,
        what="step 12 in status",
    )
    assert figures(running) == {
        "step": 12,
        "totalSteps": 40,
        "loss": 1.4,
        "tokensPerSecond": 850.0,
        "etaSeconds": 84,
    }
    assert running["status"]["phase"] == "Running"
    assert dashboard.requests and set(dashboard.requests) == {f"/api/jobs/{JOB_ID}/logs"}
    reconciling = condition(running, "Reconciling")
    assert reconciling["status"] == "True" and reconciling["reason"] == "Running"

    # The log grows (the cut line completes, more steps follow): the resync timer picks it up.
    dashboard.logs += 'talSteps": 40}\n' + "\n".join(step_line(s) for s in (14, 15)) + "\n"
    grown = await eventually(
        lambda: (o := training(emulator)).get("status", {}).get("step") == 15 and o,
        what="step 15 in status",
    )
    assert figures(grown) == {
        "step": 15,
        "totalSteps": 40,
        "loss": 1.25,
        "tokensPerSecond": 850.0,
        "etaSeconds": 75,
    }

    # The dashboard goes away (the head pod restarts, a NetworkPolicy blocks it): reconciling goes on, and
    # status keeps the figures last read and its conditions as they were; it claims nothing new.
    await dashboard.stop()
    with caplog.at_level(logging.INFO, logger="tandem.operator"):
        await eventually(
            lambda: any("not read" in r.getMessage() and JOB_ID in r.getMessage() for r in caplog.records),
            what="a failed read of the dashboard",
        )
        before = len([r for r in caplog.records if "not read" in r.getMessage()])
        await eventually(
            lambda: len([r for r in caplog.records if "not read" in r.getMessage()]) > before,
            what="a second failed read (the resync goes on)",
        )
    kept = training(emulator)
    assert figures(kept) == figures(grown)
    assert kept["status"]["conditions"] == grown["status"]["conditions"]
    assert kept["status"]["phase"] == "Running"

    # The job finishes (KubeRay removes its cluster): Ready. The submitter (tandem.workloads.ray_submit)
    # left the training's result line as its termination message: the final figures come from there.
    outcome = TrainingOutcome(
        steps=40,
        total_steps=40,
        loss=0.91,
        eval_loss=1.07,
        tokens_per_second=870.5,
        resumed_from=0,
        seconds=812.0,
    )
    result = {"adapterDigest": "sha256:5e1f", "metrics": asdict(outcome), "skipped": False}
    with httpx.Client(base_url=emulator.url, timeout=10) as client:
        name = rayjob["metadata"]["name"]
        message = json.dumps({"result": result})
        await asyncio.to_thread(run_pod, client, NS, name, "training", exit_code=0, message=message)
    await asyncio.to_thread(finish_rayjobs_sync, emulator)
    done = await eventually(
        lambda: condition(o := training(emulator), "Ready").get("status") == "True" and o,
        what="the AdapterTraining Ready",
    )
    assert figures(done) == {
        "step": 40,
        "totalSteps": 40,
        "loss": 0.91,
        "evalLoss": 1.07,
        "tokensPerSecond": 870.5,
        "etaSeconds": 0,
    }
    assert done["status"]["adapterDigest"] == "sha256:5e1f"
    assert done["status"]["phase"] == "Succeeded"


async def test_a_failed_training_is_stalled_with_the_workloads_own_reason(
    emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    await create(api, in_namespace(example("AdapterTraining")))
    [rayjob] = await eventually(lambda: children(emulator, "rayjobs", NAME), what="the RayJob")
    result = {"error": "DatasetInvalid", "message": "line 7: not JSON (Expecting value)"}
    with httpx.Client(base_url=emulator.url, timeout=10) as client:
        message = json.dumps({"result": result})
        name = rayjob["metadata"]["name"]
        await asyncio.to_thread(run_pod, client, NS, name, "training", exit_code=0, message=message)
        await asyncio.to_thread(finish_rayjobs, client, NS, failed=True)
    stalled = await eventually(
        lambda: condition(o := training(emulator), "Stalled").get("status") == "True" and o,
        what="the AdapterTraining Stalled",
    )
    assert condition(stalled, "Stalled")["reason"] == "DatasetInvalid"
    assert "line 7: not JSON" in condition(stalled, "Stalled")["message"]


def finish_rayjobs_sync(emulator: Emulator) -> int:
    with httpx.Client(base_url=emulator.url, timeout=10) as client:
        return finish_rayjobs(client, NS)


async def test_a_long_log_is_read_from_its_end_only(dashboard: Dashboard) -> None:
    noise = "\n".join(
        f"INFO line {i} of Ray's chatter, with a path C:\\new\\n and ünïcode" for i in range(4000)
    )
    dashboard.logs = noise + "\n" + "\n".join(step_line(s) for s in range(1, 31)) + "\n"
    assert len(json.dumps({"logs": dashboard.logs})) > 4 * 64 * 1024  # several times the kept tail

    tail = await read_log_tail(dashboard.address, JOB_ID)
    assert len(tail) <= 64 * 1024 and tail.endswith(step_line(30) + "\n")
    assert tail.split("\n")[-31:] == [*(step_line(s) for s in range(1, 31)), ""]
    progress = last_progress(tail)
    assert progress is not None and (progress.step, progress.eta_seconds) == (30, 30)


async def test_a_missing_job_or_a_dead_dashboard_is_reported_not_guessed(dashboard: Dashboard) -> None:
    with pytest.raises(DashboardUnavailable, match="HTTP 404"):
        await read_log_tail(dashboard.address, "another-job")
    address = dashboard.address
    await dashboard.stop()
    with pytest.raises(DashboardUnavailable, match="ConnectError"):
        await read_log_tail(address, JOB_ID, timeout=1.0)
