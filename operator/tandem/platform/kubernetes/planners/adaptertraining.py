"""AdapterTraining -> spec ConfigMap + a KubeRay RayJob running PEFT training under Ray Train."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tandem.api.v1alpha1 import AdapterTrainingSpec, KnowledgeBaseSpec
from tandem.api.v1alpha1.common import SecretKeyReference

from ..ownership import Owner, child_name, digest
from ..pods import ray_job
from ..settings import OperatorSettings
from ..volumes import Mounts, PlanError
from . import POD_SCHEMA, Plan

SPEC_DIR = "/etc/tandem"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class ResolvedKnowledgeBase:
    """A referenced KnowledgeBase as far as a consumer needs it: where its chunks are."""

    namespace: str
    name: str
    collection: str
    milvus_uri: str
    revision: str | None
    # What the gateway needs to search it as ingest indexed it.
    embedding_model: str = "all-MiniLM-L6-v2"
    search: dict[str, Any] = field(default_factory=dict)
    database: str | None = None
    credentials: SecretKeyReference | None = None  # a Secret key in the KnowledgeBase's namespace
    spec: KnowledgeBaseSpec | None = None  # how it chunks and embeds (an evaluation times a re-index with it)


def adapter_version(
    spec: AdapterTrainingSpec, raft_kb: ResolvedKnowledgeBase | None, run_token: str = ""
) -> str:
    """The version an unchanged spec maps to: the workload skips training when that adapter exists with the
    same inputs. Asking for a run (annotation tandem.dev/run) makes a new version, never an overwrite."""
    if spec.output.version:
        return spec.output.version
    return "v" + digest(
        {
            "inputs": spec.training_inputs(),
            "raftRevision": raft_kb.revision if raft_kb else None,
            "run": run_token,
        },
        8,
    )


def plan_adapter_training(
    owner: Owner,
    spec: AdapterTrainingSpec,
    settings: OperatorSettings,
    raft_kb: ResolvedKnowledgeBase | None = None,
    run_token: str = "",
) -> Plan:
    version = adapter_version(spec, raft_kb, run_token)
    revision = digest(
        {
            "version": version,
            "output": spec.output.uri,
            "run": run_token,
            "image": spec.image or settings.worker_image,
            "schema": POD_SCHEMA,
        }
    )
    name = child_name(owner.name, f"train-{revision}")
    mounts = Mounts()
    mounts.add_config_map(name, SPEC_DIR)
    base_model = mounts.resolve(spec.base_model.uri, read_only=True, where="spec.baseModel.uri")
    dataset = (
        mounts.resolve(spec.dataset.uri, read_only=True, where="spec.dataset.uri")
        if spec.dataset is not None and spec.dataset.uri
        else None
    )
    if not spec.output.uri.startswith("pvc://") and not spec.output.uri.startswith("file://"):
        # The trainer writes the adapter (and its checkpoints, read by every Ray worker) to a folder; no
        # code uploads it to an object store, and vLLM loads adapters from folders. Refused here rather
        # than reported Trained with an adapter that exists nowhere.
        raise PlanError(
            "OutputUnsupported",
            f"spec.output.uri: {spec.output.uri.partition('://')[0]}:// output stores are not written yet; "
            "use pvc://CLAIM/PATH (a ReadWriteMany claim that the vLLM pods also mount)",
        )
    output_root = mounts.resolve(spec.output.uri, read_only=False, where="spec.output.uri")
    adapter_dir = f"{output_root.rstrip('/')}/{owner.name}-{version}"
    if spec.dataset is not None and spec.dataset.config_map is not None:
        ref = spec.dataset.config_map
        mounts.volumes.append({"name": "dataset", "configMap": {"name": ref.name}})
        mounts.mounts.append({"name": "dataset", "mountPath": "/mnt/dataset", "readOnly": True})
        dataset = f"/mnt/dataset/{ref.key}"

    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": owner.metadata(name, "training"),
        "data": {
            "spec.json": json.dumps(
                {
                    "namespace": owner.namespace,
                    "name": owner.name,
                    "version": version,
                    "baseModel": base_model,
                    "dataset": dataset,
                    "output": adapter_dir,
                    "raftKnowledgeBase": (
                        {"collection": raft_kb.collection, "milvusUri": raft_kb.milvus_uri}
                        if raft_kb
                        else None
                    ),
                    "spec": spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
                },
                indent=2,
                sort_keys=True,
            )
        },
    }
    res = spec.resources
    worker_resources: dict[str, Any] = {
        "requests": {"cpu": str(res.cpus_per_worker), "memory": res.memory_per_worker},
        "limits": {"memory": res.memory_per_worker},
    }
    if res.gpus_per_worker:
        worker_resources["requests"]["nvidia.com/gpu"] = res.gpus_per_worker
        worker_resources["limits"]["nvidia.com/gpu"] = res.gpus_per_worker
    job = ray_job(
        owner.metadata(name, "training"),
        entrypoint=["python", "-m", "tandem.workloads.train", "--spec", f"{SPEC_DIR}/spec.json"],
        report_as="training",
        image=spec.image or settings.worker_image,
        ray_version=settings.ray_version,
        mounts=mounts,
        pull_policy=settings.image_pull_policy,
        env=[{"name": "HF_HUB_OFFLINE", "value": "0" if spec.base_model.uri.startswith("hf://") else "1"}],
        head_resources={"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}},
        workers=res.workers,
        worker_resources=worker_resources,
    )
    worker_spec = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    if res.cpus_per_worker:
        # Torch's thread pools sized to the CPUs the worker asked for: neither one thread (Ray's default
        # when the environment is silent) nor every core of the node.
        threads = str(res.cpus_per_worker)
        for container in worker_spec["containers"]:
            container["env"] = [e for e in container.get("env", []) if e["name"] not in THREAD_VARIABLES]
            container["env"] += [{"name": variable, "value": threads} for variable in THREAD_VARIABLES]
    if res.gpu_type:
        worker_spec["nodeSelector"] = {"nvidia.com/gpu.product": res.gpu_type}
    return Plan(
        children=[config, job],
        work=job,
        facts={
            "version": version,
            "adapterUri": f"{spec.output.uri.rstrip('/')}/{owner.name}-{version}",
            "revision": revision,
        },
    )
