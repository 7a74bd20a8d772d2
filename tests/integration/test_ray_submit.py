"""Tandem's RayJob submitter against a real Ray head with its dashboard: it submits the ingest once, echoes
its log, and leaves the ingest's result as its termination message (what the operator copies to status).

KubeRay itself is not here: the test plays it by giving the submitter the two variables KubeRay sets
(RAY_DASHBOARD_ADDRESS, RAY_JOB_SUBMISSION_ID) and by starting the head node. The entrypoint is the real
ingest workload embedding on a Ray worker, writing to milvus-lite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.corpus import write_handbook
from tests.integration.test_knowledge_ray import ingest_spec_file
from tests.isolation import requires_private_network
from tests.manifests import ROOT

pytestmark = [pytest.mark.integration, requires_private_network]

HEAD = """
import json, time, ray
context = ray.init(include_dashboard=True, dashboard_host="127.0.0.1", num_cpus=2, log_to_driver=False)
print(json.dumps({"dashboard": context.dashboard_url}), flush=True)
time.sleep(3600)
"""


def jobs_api(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(f"http://{address}")


def _environment() -> dict[str, str]:
    # The Ray job's driver inherits the head's environment: it must find `python` and the tandem package.
    # Token authentication off, as on the clusters Tandem's RayJobs start (a local ray.init() would turn
    # it on by default).
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    return {
        **os.environ,
        "PATH": path,
        "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}",
        "RAY_ADDRESS": "",
        "RAY_AUTH_MODE": "disabled",
    }


@pytest.fixture(scope="module")
def dashboard() -> Iterator[str]:
    head = subprocess.Popen(
        [sys.executable, "-c", HEAD],
        env=_environment(),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert head.stdout is not None
        address = json.loads(head.stdout.readline())["dashboard"]
        deadline = time.monotonic() + 120
        while True:  # the dashboard answers some seconds after ray.init returns
            try:
                jobs_api(address).list_jobs()
                break
            except (RuntimeError, ConnectionError):
                assert time.monotonic() < deadline, "the Ray dashboard did not come up"
                time.sleep(1)
        yield address
    finally:
        # Stop what was started, by process id: the head and every process it spawned.
        processes = [head.pid, *(p.pid for p in psutil.Process(head.pid).children(recursive=True))]
        os.killpg(head.pid, signal.SIGTERM)
        _, alive = psutil.wait_procs([psutil.Process(p) for p in processes if psutil.pid_exists(p)], 15)
        for proc in alive:
            proc.kill()
        head.wait(10)


def ingest_spec(tmp_path: Path, name: str, model: str = "all-MiniLM-L6-v2") -> Path:
    docs = write_handbook(tmp_path / name)
    return ingest_spec_file(tmp_path, name, docs, workers=1, embedding={"model": model})


def submit(dashboard: str, submission_id: str, spec: Path, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """Run the submitter as KubeRay runs it; (its output, the termination message it left)."""
    message = tmp_path / f"{submission_id}.termination-log"
    entrypoint = ["python", "-m", "tandem.workloads.ingest", "--spec", str(spec), "--ray-workers", "1"]
    env = {**_environment(), "RAY_DASHBOARD_ADDRESS": dashboard, "RAY_JOB_SUBMISSION_ID": submission_id}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tandem.workloads.ray_submit",
            "--termination-log",
            str(message),
            "--",
            *entrypoint,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result: dict[str, Any] = json.loads(message.read_text())["result"]
    return done.stdout, result


def test_the_ingest_result_becomes_the_submitters_termination_message(dashboard: str, tmp_path: Path) -> None:
    spec = ingest_spec(tmp_path, "handbook")
    output, result = submit(dashboard, "tandem-ingest-1", spec, tmp_path)
    assert "submitted Ray job tandem-ingest-1" in output
    assert '"stage": "read"' in output  # the driver's log is echoed, as KubeRay's submitter does
    assert result["documents"] == 4 and result["chunks"] > 4
    assert result["embedded_chunks"] == result["chunks"]
    assert result["failed_document_count"] == 0

    # A retried submitter pod follows the job it finds instead of running the ingest again.
    output, again = submit(dashboard, "tandem-ingest-1", spec, tmp_path)
    assert "already submitted" in output
    assert again == result
    jobs = jobs_api(dashboard).list_jobs()
    assert [j.submission_id for j in jobs].count("tandem-ingest-1") == 1


def test_a_failing_ingest_reports_its_own_reason(dashboard: str, tmp_path: Path) -> None:
    spec = ingest_spec(tmp_path, "nomodel", model="/no/such/model")
    output, result = submit(dashboard, "tandem-ingest-2", spec, tmp_path)
    assert "ended FAILED" in output
    assert result["error"] == "EmbeddingModelUnavailable"
    assert "/no/such/model" in result["message"]
