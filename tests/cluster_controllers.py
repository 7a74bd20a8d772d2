"""Stand-ins for the controllers a real cluster runs, which the API emulator does not have.

The emulator stores objects; nothing runs them. Tests and the emulator demo use these functions to
report what kube-controller-manager (Jobs, Deployments) and KubeRay (RayJobs) would report once the
work is done, through the same status subresource those controllers write. They decide nothing about
Tandem: they only flip the children's status, and the operator must notice and react.
"""

from __future__ import annotations

import datetime
from typing import Any

import httpx

MERGE = {"Content-Type": "application/merge-patch+json"}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _items(client: httpx.Client, path: str, selector: str) -> list[dict[str, Any]]:
    response = client.get(path, params={"labelSelector": selector})
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json().get("items", [])
    return items


def _patch_status(client: httpx.Client, path: str, status: dict[str, Any]) -> None:
    client.patch(f"{path}/status", json={"status": status}, headers=MERGE).raise_for_status()


SELECTOR = "app.kubernetes.io/managed-by=tandem"


def finish_jobs(client: httpx.Client, namespace: str, *, failed: bool = False) -> int:
    """Mark every unfinished Tandem Job Complete (or Failed), as the Job controller would."""
    count = 0
    for job in _items(client, f"/apis/batch/v1/namespaces/{namespace}/jobs", SELECTOR):
        conditions = (job.get("status") or {}).get("conditions") or []
        if any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions):
            continue
        now = _now()
        kind = "Failed" if failed else "Complete"
        status: dict[str, Any] = {
            "startTime": now,
            "conditions": [
                {
                    "type": kind,
                    "status": "True",
                    "lastTransitionTime": now,
                    **(
                        {
                            "reason": "BackoffLimitExceeded",
                            "message": "Job has reached the specified backoff limit",
                        }
                        if failed
                        else {}
                    ),
                }
            ],
            **({"failed": 5} if failed else {"succeeded": 1, "completionTime": now}),
        }
        _patch_status(client, f"/apis/batch/v1/namespaces/{namespace}/jobs/{job['metadata']['name']}", status)
        count += 1
    return count


def finish_rayjobs(client: httpx.Client, namespace: str, *, failed: bool = False) -> int:
    """Mark every unfinished Tandem RayJob SUCCEEDED (or FAILED), as KubeRay would."""
    count = 0
    for job in _items(client, f"/apis/ray.io/v1/namespaces/{namespace}/rayjobs", SELECTOR):
        if (job.get("status") or {}).get("jobStatus") in ("SUCCEEDED", "FAILED"):
            continue
        status = {
            "jobStatus": "FAILED" if failed else "SUCCEEDED",
            "jobDeploymentStatus": "Failed" if failed else "Complete",
            "message": "training raised RuntimeError" if failed else "Job finished successfully.",
            "endTime": _now(),
        }
        _patch_status(
            client, f"/apis/ray.io/v1/namespaces/{namespace}/rayjobs/{job['metadata']['name']}", status
        )
        count += 1
    return count


def roll_out_deployments(client: httpx.Client, namespace: str) -> int:
    """Report every Tandem Deployment's replicas ready, as the Deployment controller would."""
    count = 0
    for dep in _items(client, f"/apis/apps/v1/namespaces/{namespace}/deployments", SELECTOR):
        replicas = dep["spec"].get("replicas", 1)
        status = dep.get("status") or {}
        if status.get("readyReplicas") == replicas and status.get("observedGeneration") == dep[
            "metadata"
        ].get("generation"):
            continue
        _patch_status(
            client,
            f"/apis/apps/v1/namespaces/{namespace}/deployments/{dep['metadata']['name']}",
            {
                "observedGeneration": dep["metadata"].get("generation"),
                "replicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "updatedReplicas": replicas,
            },
        )
        count += 1
    return count


def run_pod(
    client: httpx.Client, namespace: str, job_name: str, container: str, *, exit_code: int, message: str
) -> None:
    """Record a finished pod of a Job, with its termination message, as the Job controller and kubelet
    would (the message is what the workload wrote to /dev/termination-log)."""
    pod_name = f"{job_name}-{_now().replace(':', '').lower()[-6:]}-{exit_code}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "namespace": namespace,
            "labels": {"batch.kubernetes.io/job-name": job_name, "job-name": job_name},
        },
        "spec": {"restartPolicy": "Never", "containers": [{"name": container, "image": "worker"}]},
    }
    client.post(f"/api/v1/namespaces/{namespace}/pods", json=pod).raise_for_status()
    terminated = {"exitCode": exit_code, "message": message, "finishedAt": _now(), "reason": "Completed"}
    status = {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "containerStatuses": [
            {
                "name": container,
                "ready": False,
                "restartCount": 0,
                "image": "worker",
                "imageID": "",
                "state": {"terminated": terminated},
            }
        ],
    }
    _patch_status(client, f"/api/v1/namespaces/{namespace}/pods/{pod_name}", status)


def run_ready_pod(client: httpx.Client, namespace: str, name: str, labels: dict[str, str], ip: str) -> None:
    """Record a running, Ready pod with an IP, as the scheduler and kubelet would for a Deployment."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "vllm", "image": "vllm"}]},
    }
    client.post(f"/api/v1/namespaces/{namespace}/pods", json=pod).raise_for_status()
    status = {
        "phase": "Running",
        "podIP": ip,
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": _now()}],
    }
    _patch_status(client, f"/api/v1/namespaces/{namespace}/pods/{name}", status)
