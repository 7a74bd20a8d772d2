"""KnowledgeBase -> spec ConfigMap + ingest Job (or RayJob) + refresh CronJob."""

from __future__ import annotations

from typing import Any

from tandem.api.v1alpha1 import KnowledgeBaseSpec
from tandem.api.v1alpha1.knowledgebase import S3_CREDENTIAL_KEYS, s3_env_prefix
from tandem.core.digests import digest
from tandem.core.errors import PlanError
from tandem.core.jobs import ingest_job
from tandem.workloads.jobs import IngestJob

from ..ownership import Owner, child_name
from ..pods import container, pod_spec, ray_job, resources
from ..settings import OperatorSettings
from ..volumes import Mounts, mount_milvus_token
from . import POD_SCHEMA, KnowledgeBaseFacts, Plan

SPEC_DIR = "/etc/tandem"
# How long one ingest may run (the Job, each refresh, or the RayJob): it bounds a run that hangs, not a
# large one. At the measured ~22 chunks/s of one CPU (benchmarks/README.md) a day embeds about 1.9M
# chunks, and ingest resumes: a run stopped at the deadline keeps what it wrote, and the next run (a
# refresh, or a new tandem.dev/run) re-embeds only what is missing. The spec has no field for it.
INGEST_DEADLINE_SECONDS = 24 * 3600


def _pod_shape(settings: OperatorSettings) -> dict[str, str]:
    """What, besides the spec, decides the rendered work pod; POD_SCHEMA moves when the planner's pod does."""
    return {"image": settings.worker_image, "pullPolicy": settings.image_pull_policy, "schema": POD_SCHEMA}


def _volume_name(prefix: str, source: str) -> str:
    """A pod volume name for one source: a DNS label of at most 63 characters (names that fit keep the
    readable form, so existing Jobs' pods do not change)."""
    name = f"{prefix}-{source}"
    return name if len(name) <= 63 else f"{prefix}-{digest(source, 10)}"


def _source_inputs(spec: KnowledgeBaseSpec, mounts: Mounts) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Where each source is readable inside the pod, and the env that carries its credentials."""
    locations: dict[str, str] = {}
    env: list[dict[str, Any]] = []
    for source in spec.sources:
        where = f"spec.sources[{source.name}]"
        if source.directory is not None:
            if not source.directory.claim_name:
                raise PlanError(
                    "LocalPathInCluster",
                    f"{where}.directory: a path without claimName is only readable by `tandem up`; "
                    "set claimName to the PersistentVolumeClaim holding the files",
                )
            locations[source.name] = mounts.resolve(
                f"pvc://{source.directory.claim_name}/{source.directory.path.lstrip('/')}",
                read_only=True,
                where=where,
            )
        elif source.config_map is not None:
            volume = _volume_name("cm", source.name)
            mounts.volumes.append({"name": volume, "configMap": {"name": source.config_map.name}})
            mounts.mounts.append({"name": volume, "mountPath": f"/mnt/{volume}", "readOnly": True})
            locations[source.name] = f"/mnt/{volume}"
        elif source.http is not None and source.http.headers_secret_ref is not None:
            volume = _volume_name("headers", source.name)
            locations[source.name] = mounts.add_secret(
                volume, source.http.headers_secret_ref.name, f"/mnt/{volume}"
            )
        elif source.s3 is not None and source.s3.credentials_secret_ref is not None:
            secret = source.s3.credentials_secret_ref.name
            prefix = s3_env_prefix(source.name)
            for key in S3_CREDENTIAL_KEYS:
                env.append(
                    {"name": f"{prefix}_{key}", "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
                )
    return locations, env


def ingest_input(
    owner: Owner, spec: KnowledgeBaseSpec, settings: OperatorSettings, name: str, revision: str
) -> tuple[IngestJob, Mounts, list[dict[str, Any]]]:
    """The ingest job's contract (also the cleanup Job's), with the volumes and env its pod needs: the spec
    ConfigMap `name`, each source and the Milvus token."""
    mounts = Mounts()
    mounts.add_config_map(name, SPEC_DIR)
    locations, env = _source_inputs(spec, mounts)
    job = ingest_job(
        owner.namespace,
        owner.name,
        spec,
        default_milvus_uri=settings.default_milvus_uri,
        revision=revision,
        source_locations=locations,
        token_file=mount_milvus_token(mounts, owner.name, spec.milvus.credentials_secret_ref),
    )
    return job, mounts, [{"name": "HF_HUB_OFFLINE", "value": "1"}, *env]


def plan_knowledge_base(
    owner: Owner, spec: KnowledgeBaseSpec, settings: OperatorSettings, run_token: str = ""
) -> Plan[KnowledgeBaseFacts]:
    wire_spec = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    revision = digest({"spec": wire_spec, "run": run_token})
    # The Job's name also covers the pod it runs (image, env, security context): a Job's template cannot
    # change in place, so an operator upgrade that renders another pod makes another Job (cheap: ingest
    # re-embeds only changed documents).
    name = child_name(owner.name, f"ingest-{digest({'revision': revision, 'pod': _pod_shape(settings)}, 8)}")

    job_input, mounts, env = ingest_input(owner, spec, settings, name, revision)
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": owner.metadata(name, "ingest"),
        "data": {"spec.json": job_input.to_json()},
    }
    command = ["python", "-m", "tandem.workloads.ingest", "--spec", f"{SPEC_DIR}/spec.json"]
    pod_resources = resources(spec.resources)
    ingest = container(
        "ingest",
        settings.worker_image,
        command=command,
        mounts=mounts,
        pull_policy=settings.image_pull_policy,
        env=env,
        resources_=pod_resources,
    )
    work: dict[str, Any]
    if spec.scale.engine == "RayJob":
        work = ray_job(
            owner.metadata(name, "ingest"),
            entrypoint=[*command, "--ray-workers", str(spec.scale.workers)],
            report_as="ingest",
            image=settings.worker_image,
            ray_version=settings.ray_version,
            mounts=mounts,
            pull_policy=settings.image_pull_policy,
            env=env,
            head_resources=pod_resources,
            workers=spec.scale.workers,
            worker_resources=pod_resources,
            active_deadline_seconds=INGEST_DEADLINE_SECONDS,
        )
    else:
        work = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": owner.metadata(name, "ingest"),
            "spec": _job_spec(ingest, mounts, owner),
        }
    children = [config, work]
    if spec.refresh.schedule:
        refresh = child_name(owner.name, "refresh")
        job_spec = _job_spec(ingest, mounts, owner)
        children.append(
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": owner.metadata(refresh, "refresh"),
                "spec": {
                    "schedule": spec.refresh.schedule,
                    "suspend": spec.refresh.suspend,
                    "concurrencyPolicy": "Forbid",
                    "successfulJobsHistoryLimit": 1,
                    "failedJobsHistoryLimit": 3,
                    "jobTemplate": {"metadata": {"labels": owner.labels("refresh")}, "spec": job_spec},
                },
            }
        )
    return Plan(
        children=children,
        work=work,
        facts=KnowledgeBaseFacts(collection=job_input.collection, revision=revision),
    )


def _job_spec(ingest: dict[str, Any], mounts: Mounts, owner: Owner) -> dict[str, Any]:
    # Ingest is idempotent (content-hash upserts), so a retried pod resumes rather than duplicates.
    # Exit code 2 is a configuration error (see tandem.workloads.ingest): retrying cannot help.
    permanent = {"containerName": "ingest", "operator": "In", "values": [2]}
    return {
        "backoffLimit": 4,
        "activeDeadlineSeconds": INGEST_DEADLINE_SECONDS,  # all attempts together, as Kubernetes counts
        "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": permanent}]},
        "template": {
            "metadata": {"labels": owner.labels("ingest")},
            "spec": pod_spec([ingest], mounts, restartPolicy="Never"),
        },
    }
