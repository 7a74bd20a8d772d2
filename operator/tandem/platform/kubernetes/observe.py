"""Read the state of children (Job, RayJob, Deployment) into Outcomes and figures. Pure functions."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
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


# What the kubelet says when a pod needs a Secret (or a key of one) that is not there. The operator may not
# read Secrets (and must not), so a missing one is inferred from what the pods that need it report:
# - an env var's secretKeyRef / envFrom: the container waits in CreateContainerConfigError with
#   `secret "x" not found` or `couldn't find key k in Secret ns/x` (pod status, which the operator lists);
# - a secret volume: the pod waits in ContainerCreating with no message, and the kubelet says why only in
#   a FailedMount Event on the pod: `MountVolume.SetUp failed for volume "v" : secret "x" not found` or
#   `... : references non-existent secret key: k` (Events, which need `list` on events to read).
_SECRET_NOT_FOUND = re.compile(r'secrets? "(?P<name>[^"]+)" not found')
_KEY_NOT_FOUND = re.compile(r"couldn't find key (?P<key>\S+) in Secret (?:[^/\s]+/)?(?P<name>[^\s,;]+)")
_MOUNT_FAILED = re.compile(r'MountVolume\.SetUp failed for volume "(?P<volume>[^"]+)"')
_MOUNT_KEY_MISSING = re.compile(r"references non-existent secret key: (?P<key>[^\s,;]+)")


@dataclass(frozen=True)
class MissingSecret:
    """A Secret (or one key of it) a pod cannot start without, and what said so."""

    name: str
    key: str | None
    pod: str
    message: str


def missing_secrets(
    pods: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]] = ()
) -> list[MissingSecret]:
    """Secrets the given pods wait for, from their container statuses and (if given) their FailedMount
    Events; each Secret and key once, in the order found."""
    found: dict[tuple[str, str | None], MissingSecret] = {}
    for pod in pods:
        name = pod["metadata"]["name"]
        status = pod.get("status") or {}
        for container in [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") != "CreateContainerConfigError":
                continue
            message = str(waiting.get("message") or "")
            key_match = _KEY_NOT_FOUND.search(message)
            if key_match:
                found.setdefault(
                    (key_match["name"], key_match["key"]),
                    MissingSecret(key_match["name"], key_match["key"], name, message),
                )
            elif (secret_match := _SECRET_NOT_FOUND.search(message)) is not None:
                found.setdefault(
                    (secret_match["name"], None), MissingSecret(secret_match["name"], None, name, message)
                )
    volumes = {
        (pod["metadata"]["name"], v["name"]): v["secret"].get("secretName", "")
        for pod in pods
        for v in (pod.get("spec") or {}).get("volumes") or []
        if isinstance(v.get("secret"), dict)
    }
    for event in events:
        involved = event.get("involvedObject") or {}
        if involved.get("kind") != "Pod" or event.get("reason") != "FailedMount":
            continue
        pod_name, message = str(involved.get("name") or ""), str(event.get("message") or "")
        mount = _MOUNT_FAILED.search(message)
        secret = volumes.get((pod_name, mount["volume"])) if mount else None
        if secret is None:
            continue  # not a pod of ours, or not a secret volume
        if (key_match := _MOUNT_KEY_MISSING.search(message)) is not None:
            found.setdefault(
                (secret, key_match["key"]), MissingSecret(secret, key_match["key"], pod_name, message)
            )
        elif _SECRET_NOT_FOUND.search(message):
            found.setdefault((secret, None), MissingSecret(secret, None, pod_name, message))
    return list(found.values())


def secret_not_found(
    missing: list[MissingSecret], namespace: str, used_by: dict[tuple[str, str | None], str]
) -> Outcome:
    """Stalled SecretNotFound naming each missing Secret (or key) and what needs it (`used_by`: (Secret,
    key) and (Secret, None) -> e.g. "the API key of tenant acme"). Stalled, not an error retried: nothing
    the operator does brings a Secret back; creating it does (the kubelet retries), and the next look at
    the pods sees them start."""
    parts = []
    for m in missing:
        what = f"key {m.key} of Secret {m.name}" if m.key else f"Secret {m.name}"
        user = used_by.get((m.name, m.key)) or used_by.get((m.name, None)) or "mounted by the pods"
        parts.append(f"{what} ({user}) is missing: pod {m.pod} cannot start")
    return Outcome.stalled(
        "SecretNotFound", f"{'; '.join(parts)}; create it in namespace {namespace}, the pods then start"
    )
