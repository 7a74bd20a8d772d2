"""Read the state of children (Job, RayJob, Deployment) into Outcomes and figures. Pure functions."""

from __future__ import annotations

import json
from typing import Any

from .conditions import Outcome

RETRY_HINT = "fix the cause and set annotation tandem.dev/run to a new value to retry"


def job_outcome(job: dict[str, Any] | None, what: str) -> Outcome:
    """A batch/v1 Job: Complete -> Ready, Failed (retries exhausted) -> Stalled, else Progressing."""
    if job is None:
        return Outcome.progressing("Creating", f"creating the {what} Job")
    status = job.get("status") or {}
    for c in status.get("conditions") or []:
        if c.get("status") != "True":
            continue
        if c.get("type") == "Complete":
            return Outcome.ready("Succeeded", f"{what} Job {job['metadata']['name']} completed")
        if c.get("type") == "Failed":
            detail = c.get("message") or c.get("reason") or "failed"
            return Outcome.stalled(
                "JobFailed",
                f"{what} Job {job['metadata']['name']} failed after {status.get('failed', 0)} attempts: "
                f"{detail}; {RETRY_HINT}",
            )
    active, failed = status.get("active", 0), status.get("failed", 0)
    return Outcome.progressing(
        "Running" if active else "Pending",
        f"{what} Job {job['metadata']['name']}: {active} running, {failed} failed attempts so far",
    )


def rayjob_outcome(rayjob: dict[str, Any] | None, what: str) -> Outcome:
    """A KubeRay RayJob: jobStatus SUCCEEDED -> Ready; FAILED/STOPPED or deployment Failed -> Stalled."""
    if rayjob is None:
        return Outcome.progressing("Creating", f"creating the {what} RayJob")
    name = rayjob["metadata"]["name"]
    status = rayjob.get("status") or {}
    job_status = status.get("jobStatus", "")
    deployment = status.get("jobDeploymentStatus", "")
    message = status.get("message", "")
    if job_status == "SUCCEEDED":
        return Outcome.ready("Succeeded", f"{what} RayJob {name} succeeded")
    if job_status in ("FAILED", "STOPPED") or deployment in ("Failed", "ValidationFailed"):
        return Outcome.stalled(
            "RayJobFailed",
            f"{what} RayJob {name} {(job_status or deployment).lower()}: "
            f"{message or 'see the Ray job logs'}; {RETRY_HINT}",
        )
    return Outcome.progressing(
        "Running" if job_status == "RUNNING" else "Pending",
        f"{what} RayJob {name}: {deployment or 'Initializing'}{', ' + job_status if job_status else ''}",
    )


def work_outcome(work: dict[str, Any] | None, kind: str, what: str) -> Outcome:
    return rayjob_outcome(work, what) if kind == "RayJob" else job_outcome(work, what)


def termination_report(pods: list[dict[str, Any]], container: str) -> dict[str, Any] | None:
    """The JSON a workload left as its termination message, from the most recent pod that left one.

    Workloads end by writing `{"result": {...}}` to /dev/termination-log; the kubelet copies it into the
    pod's status, which is how results reach the operator without the worker needing API access.
    """
    reports = []
    for pod in pods:
        pod_status = pod.get("status") or {}
        statuses = [
            *(pod_status.get("initContainerStatuses") or []),
            *(pod_status.get("containerStatuses") or []),
        ]
        for status in statuses:
            if status.get("name") != container:
                continue
            for state in (status.get("state") or {}, status.get("lastState") or {}):
                terminated = state.get("terminated") or {}
                message = terminated.get("message")
                if message:
                    reports.append((terminated.get("finishedAt") or "", message))
    for _, message in sorted(reports, reverse=True):
        try:
            parsed = json.loads(message)
        except ValueError:
            continue
        if isinstance(parsed, dict) and isinstance(parsed.get("result"), dict):
            result: dict[str, Any] = parsed["result"]
            return result
    return None


def deployment_replicas(deployment: dict[str, Any] | None) -> tuple[int, int]:
    """(desired, ready) replicas of a Deployment, as its controller reported them."""
    if deployment is None:
        return 0, 0
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    observed = status.get("observedGeneration")
    ready = int(status.get("readyReplicas") or 0)
    if observed is not None and observed < deployment.get("metadata", {}).get("generation", 0):
        ready = 0  # the controller has not caught up with the latest template yet
    return int(spec.get("replicas", 1)), ready
