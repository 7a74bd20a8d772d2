"""Deletion: the Job that removes a resource's external state before its finalizer is released.

A KnowledgeBase owns a Milvus collection and an AdapterTraining owns adapter artifacts; both live
outside the cluster's garbage collector. Unless the spec retains them, a cleanup Job removes them
(the operator never runs workloads in its own process) and the finalizer waits for it.
"""

from __future__ import annotations

from typing import Any

from tandem.api.kinds import ADAPTER_TRAINING, KNOWLEDGE_BASE, Kind
from tandem.api.v1alpha1 import AdapterTrainingSpec, KnowledgeBaseSpec

from ..ownership import Owner, child_name
from ..pods import container, pod_spec
from ..settings import OperatorSettings
from ..volumes import Mounts, mount_milvus_token
from . import Plan
from .adaptertraining import plan_adapter_training
from .knowledgebase import SPEC_DIR, plan_knowledge_base

# How long one cleanup Job may run, retries included (dropping a collection or deleting an adapter
# folder takes seconds to minutes): one that hangs fails, and the next attempt is a new Job.
DEADLINE_SECONDS = 3600


def plan_cleanup(
    kind: Kind, owner: Owner, raw_spec: dict[str, Any], settings: OperatorSettings
) -> dict[str, Any] | None:
    mounts = Mounts()
    plan: Plan[Any]
    if kind is KNOWLEDGE_BASE:
        kb = KnowledgeBaseSpec.model_validate(raw_spec)
        if kb.retain_on_delete:
            return None
        plan = plan_knowledge_base(owner, kb, settings)
        # Dropping the collection needs the same credentials as filling it (the contract names the file).
        mount_milvus_token(mounts, owner.name, kb.milvus.credentials_secret_ref)
        command = [
            "python",
            "-m",
            "tandem.workloads.ingest",
            "--spec",
            f"{SPEC_DIR}/spec.json",
            "--drop-collection",
        ]
    elif kind is ADAPTER_TRAINING:
        at = AdapterTrainingSpec.model_validate(raw_spec)
        if at.output.retain_on_delete:
            return None
        plan = plan_adapter_training(owner, at, settings)
        mounts.resolve(at.output.uri, read_only=False, where="spec.output.uri")
        command = [
            "python",
            "-m",
            "tandem.workloads.train",
            "--spec",
            f"{SPEC_DIR}/spec.json",
            "--delete-artifacts",
        ]
    else:
        return None
    # The spec ConfigMap of the current plan is still there: children outlive the finalizer.
    config = next(c for c in plan.children if c["kind"] == "ConfigMap")
    mounts.add_config_map(config["metadata"]["name"], SPEC_DIR)
    cleaner = container(
        "cleanup",
        settings.worker_image,
        command=command,
        mounts=mounts,
        pull_policy=settings.image_pull_policy,
    )
    name = child_name(owner.name, "cleanup")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": owner.metadata(name, "cleanup"),
        "spec": {
            "backoffLimit": 6,
            "activeDeadlineSeconds": DEADLINE_SECONDS,
            "template": {
                "metadata": {"labels": owner.labels("cleanup")},
                "spec": pod_spec([cleaner], mounts, restartPolicy="Never"),
            },
        },
    }


def left_behind(kind: Kind, raw_spec: dict[str, Any], settings: OperatorSettings) -> str:
    """What stays when the cleanup cannot run, for the Warning event that says so."""
    if kind is KNOWLEDGE_BASE:
        kb = KnowledgeBaseSpec.model_validate(raw_spec)
        return f"the Milvus collection at {kb.milvus.uri or settings.default_milvus_uri}"
    at = AdapterTrainingSpec.model_validate(raw_spec)
    return f"the adapter versions under {at.output.uri}"
