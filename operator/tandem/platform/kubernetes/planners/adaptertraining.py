"""AdapterTraining -> spec ConfigMap + a KubeRay RayJob running PEFT training under Ray Train."""

from __future__ import annotations

from typing import Any

from tandem.api.v1alpha1 import AdapterTrainingSpec
from tandem.core.adapters import adapter_version
from tandem.core.digests import digest
from tandem.core.errors import PlanError
from tandem.core.jobs import adapter_folder, knowledge_base_target, training_job
from tandem.core.references import ResolvedKnowledgeBase
from tandem.workloads.jobs import KnowledgeBaseTarget, TrainingJob

from ..ownership import Owner, child_name
from ..pods import ray_job
from ..settings import OperatorSettings
from ..volumes import Mounts, mount_milvus_token
from . import POD_SCHEMA, Plan, TrainingFacts

SPEC_DIR = "/etc/tandem"
# Where the Secret of spec.output.publish.credentialsSecretRef is mounted (one file per key).
PUBLISH_CREDENTIALS_DIR = "/var/run/tandem/publish-credentials"
# How long a training RayJob may run before KubeRay stops it: bounds a run that hangs (a worker waiting
# on a collective forever), with room for long trainings. A stopped run resumes from its last checkpoint
# when started again. The spec has no field for it.
TRAINING_DEADLINE_SECONDS = 72 * 3600
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _raft_target(
    owner: Owner, raft_kb: ResolvedKnowledgeBase | None, mounts: Mounts
) -> KnowledgeBaseTarget | None:
    if raft_kb is None:
        return None
    if raft_kb.credentials is not None and raft_kb.namespace != owner.namespace:
        raise PlanError(
            "MilvusCredentialsUnreachable",
            f"spec.raft.knowledgeBaseRef: the Milvus credentials Secret of KnowledgeBase {raft_kb.namespace}/"
            f"{raft_kb.name} is in namespace {raft_kb.namespace}, which a pod in {owner.namespace} cannot "
            "mount; copy it into this namespace or train from a KnowledgeBase here",
        )
    return knowledge_base_target(raft_kb, mount_milvus_token(mounts, raft_kb.name, raft_kb.credentials))


def training_input(
    owner: Owner,
    spec: AdapterTrainingSpec,
    name: str,
    version: str,
    raft_kb: ResolvedKnowledgeBase | None,
) -> tuple[TrainingJob, Mounts]:
    """The training job's contract (also the cleanup Job's) and the volumes its pods need: the spec
    ConfigMap `name`, base model, dataset, output store and the RAFT knowledge base's Milvus token."""
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
    if spec.dataset is not None and spec.dataset.config_map is not None:
        ref = spec.dataset.config_map
        mounts.volumes.append({"name": "dataset", "configMap": {"name": ref.name}})
        mounts.mounts.append({"name": "dataset", "mountPath": "/mnt/dataset", "readOnly": True})
        dataset = f"/mnt/dataset/{ref.key}"
    job = training_job(
        owner.namespace,
        owner.name,
        spec,
        version=version,
        base_model=base_model,
        dataset=dataset,
        output=adapter_folder(output_root, owner.name, version),
        raft=_raft_target(owner, raft_kb, mounts),
    )
    return job, mounts


def plan_adapter_training(
    owner: Owner,
    spec: AdapterTrainingSpec,
    settings: OperatorSettings,
    raft_kb: ResolvedKnowledgeBase | None = None,
    run_token: str = "",
) -> Plan[TrainingFacts]:
    version = adapter_version(spec, raft_kb, run_token)
    revision = digest(
        {
            "version": version,
            "output": spec.output.uri,
            "run": run_token,
            "image": spec.image or settings.worker_image,
            "schema": POD_SCHEMA,
            # A store set (or changed) later runs again: the adapter is found trained and only published.
            **({"publish": spec.output.publish.model_dump(mode="json")} if spec.output.publish else {}),
        }
    )
    name = child_name(owner.name, f"train-{revision}")
    job_input, mounts = training_input(owner, spec, name, version, raft_kb)
    entrypoint = ["python", "-m", "tandem.workloads.train", "--spec", f"{SPEC_DIR}/spec.json"]
    publish = spec.output.publish
    if publish is not None and publish.credentials_secret_ref is not None:
        secret = publish.credentials_secret_ref.name
        mounts.add_secret("publish-credentials", secret, PUBLISH_CREDENTIALS_DIR)
        entrypoint.append(f"--publish-credentials={PUBLISH_CREDENTIALS_DIR}")
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": owner.metadata(name, "training"),
        "data": {"spec.json": job_input.to_json()},
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
        entrypoint=entrypoint,
        report_as="training",
        image=spec.image or settings.worker_image,
        ray_version=settings.ray_version,
        mounts=mounts,
        pull_policy=settings.image_pull_policy,
        env=[{"name": "HF_HUB_OFFLINE", "value": "0" if spec.base_model.uri.startswith("hf://") else "1"}],
        head_resources={"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}},
        workers=res.workers,
        worker_resources=worker_resources,
        active_deadline_seconds=TRAINING_DEADLINE_SECONDS,
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
        facts=TrainingFacts(
            version=version,
            adapter_uri=adapter_folder(spec.output.uri, owner.name, version),
            revision=revision,
        ),
    )
