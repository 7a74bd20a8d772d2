"""Pod, container and RayJob building blocks with the security defaults every Tandem pod gets."""

from __future__ import annotations

import shlex
from typing import Any

from tandem.api.v1alpha1.common import ComputeResources

from .volumes import Mounts

POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "fsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
TMP_VOLUME = {"name": "tmp", "emptyDir": {}}
TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}


def resources(spec: ComputeResources | None, *, gpus: int = 0) -> dict[str, Any]:
    """Container resources from the spec; `gpus` adds nvidia.com/gpu to requests and limits."""
    out: dict[str, dict[str, Any]] = {}
    for part in ("requests", "limits"):
        values = getattr(spec, part, None) if spec else None
        entry: dict[str, Any] = {}
        if values is not None:
            if values.cpu:
                entry["cpu"] = values.cpu
            if values.memory:
                entry["memory"] = values.memory
            if values.gpu:
                entry["nvidia.com/gpu"] = values.gpu
        if gpus:
            entry["nvidia.com/gpu"] = gpus
        if entry:
            out[part] = entry
    return out


def container(
    name: str,
    image: str,
    *,
    command: list[str],
    mounts: Mounts,
    pull_policy: str,
    env: list[dict[str, Any]] | None = None,
    resources_: dict[str, Any] | None = None,
    ports: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    # The root filesystem is read-only: caches (HF, torch, pip) go under HOME on the /tmp emptyDir.
    env = [{"name": "HOME", "value": "/tmp"}, *[e for e in env or [] if e["name"] != "HOME"]]
    out: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": command,
        "env": env,
        "volumeMounts": [TMP_MOUNT, *mounts.mounts],
        "securityContext": CONTAINER_SECURITY,
    }
    if resources_:
        out["resources"] = resources_
    if ports:
        out["ports"] = ports
    out.update(extra or {})
    return out


def pod_spec(containers: list[dict[str, Any]], mounts: Mounts, **extra: Any) -> dict[str, Any]:
    """Every Tandem pod: restricted, and without a service-account token (no Tandem workload talks to
    the Kubernetes API, so a token in the pod could only be stolen through it)."""
    return {
        "automountServiceAccountToken": False,
        "securityContext": POD_SECURITY,
        "containers": containers,
        "volumes": [TMP_VOLUME, *mounts.volumes],
        **extra,
    }


# The submitter only follows the Ray job's log and relays its result (tandem.workloads.ray_submit).
SUBMITTER_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def ray_job(
    metadata: dict[str, Any],
    *,
    entrypoint: list[str],
    report_as: str,
    image: str,
    ray_version: str,
    mounts: Mounts,
    pull_policy: str,
    env: list[dict[str, Any]],
    head_resources: dict[str, Any],
    workers: int,
    worker_resources: dict[str, Any],
    active_deadline_seconds: int,
) -> dict[str, Any]:
    """A KubeRay RayJob that starts its own cluster, runs `entrypoint`, and shuts the cluster down.

    `active_deadline_seconds`: how long the RayJob may run; KubeRay then stops it (jobDeploymentStatus
    Failed, reason DeadlineExceeded), which the operator reports as it reports any failed RayJob.

    Its submitter is Tandem's (`tandem.workloads.ray_submit`, in a container named `report_as`): it leaves
    the workload's result line as its termination message, which the operator reads from the submitter
    Job's pods (KubeRay names that Job after the RayJob) as it reads a plain Job's.
    """

    def ray_pod(name: str, res: dict[str, Any]) -> dict[str, Any]:
        ray_container = container(
            name, image, command=[], mounts=mounts, pull_policy=pull_policy, env=env, resources_=res
        )
        del ray_container["command"]  # KubeRay supplies `ray start`
        # Ray writes its session files to /tmp (an emptyDir); the root filesystem stays read-only.
        return {"spec": pod_spec([ray_container], mounts)}

    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": metadata,
        "spec": {
            "entrypoint": shlex.join(entrypoint),
            "submissionMode": "K8sJobMode",
            "submitterPodTemplate": {
                "spec": pod_spec(
                    [
                        container(
                            report_as,
                            image,
                            command=["python", "-m", "tandem.workloads.ray_submit", "--", *entrypoint],
                            mounts=Mounts(),
                            pull_policy=pull_policy,
                            resources_=SUBMITTER_RESOURCES,
                        )
                    ],
                    Mounts(),
                    restartPolicy="Never",
                )
            },
            "shutdownAfterJobFinishes": True,
            "backoffLimit": 2,
            "activeDeadlineSeconds": active_deadline_seconds,
            "rayClusterSpec": {
                "rayVersion": ray_version,
                "headGroupSpec": {
                    "rayStartParams": {"num-cpus": "0"},
                    "template": ray_pod("ray-head", head_resources),
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "workers",
                        "replicas": workers,
                        "minReplicas": workers,
                        "maxReplicas": workers,
                        "rayStartParams": {},
                        "template": ray_pod("ray-worker", worker_resources),
                    }
                ],
            },
        },
    }
