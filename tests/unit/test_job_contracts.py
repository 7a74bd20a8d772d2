"""Job contracts: what a planner (or local mode) writes is what the workload parses, field by field.

Each workload takes one JSON file (`--spec`), typed in `tandem.workloads.jobs`. These tests take the file
a planner renders into its ConfigMap, parse it with the workload's own loader, and check every field
against what the spec and its references say; and they check that the pods mount what the contract
names (a token file the pod does not have is a contract broken at run time).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tandem.api.kinds import KNOWLEDGE_BASE
from tandem.api.v1alpha1 import AdapterTrainingSpec, KnowledgeBaseSpec
from tandem.core.jobs import ingest_job, training_job
from tandem.core.naming import collection_name
from tandem.core.references import resolve_knowledge_base
from tandem.platform.kubernetes.ownership import Owner
from tandem.platform.kubernetes.planners.adaptertraining import plan_adapter_training
from tandem.platform.kubernetes.planners.cleanup import plan_cleanup
from tandem.platform.kubernetes.planners.knowledgebase import plan_knowledge_base
from tandem.platform.kubernetes.settings import OperatorSettings
from tandem.workloads import ingest as ingest_workload
from tandem.workloads import train as train_workload
from tandem.workloads.jobs import IngestJob, JobSpecError, TrainingJob, load_job
from tests.manifests import example

SETTINGS = OperatorSettings()


def owner(kind: str, name: str) -> Owner:
    return Owner("tandem.dev/v1alpha1", kind, "team", name, f"uid-{name}")


def spec_file(children: list[dict[str, Any]], tmp_path: Path) -> Path:
    config = next(c for c in children if c["kind"] == "ConfigMap")
    path = tmp_path / "spec.json"
    path.write_text(config["data"]["spec.json"])
    return path


def mounted_files(pod: dict[str, Any], container: str | None = None) -> set[str]:
    """Every file path a pod's containers get from Secret volumes with items (key -> path)."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    out = set()
    for c in pod["containers"]:
        if container is not None and c["name"] != container:
            continue
        for mount in c.get("volumeMounts", []):
            secret = volumes[mount["name"]].get("secret") or {}
            for item in secret.get("items", []):
                out.add(f"{mount['mountPath']}/{item['path']}")
    return out


def kb_spec_with_credentials(**milvus: Any) -> KnowledgeBaseSpec:
    raw = example("KnowledgeBase")["spec"]
    raw["milvus"] = {"credentialsSecretRef": {"name": "milvus", "key": "token"}, **milvus}
    return KnowledgeBaseSpec.model_validate(raw)


def test_ingest_contract_is_what_the_workload_reads(tmp_path: Path) -> None:
    spec = kb_spec_with_credentials(database="tenant_db")
    plan = plan_knowledge_base(owner("KnowledgeBase", "handbook"), spec, SETTINGS)
    job = load_job(spec_file(plan.children, tmp_path), IngestJob)
    assert job.namespace == "team" and job.name == "handbook"
    assert job.collection == collection_name("team", "handbook") == plan.facts.collection
    assert job.milvus_uri == SETTINGS.default_milvus_uri
    assert job.revision == plan.facts.revision
    assert set(job.source_locations) <= {s.name for s in spec.sources}
    assert job.spec == spec
    target = job.target()
    assert (target.database, target.embedding_model) == ("tenant_db", spec.embedding.model)
    # The token is a file the ingest pod has (mounted from the Secret key), not an env var it lacks.
    assert plan.work is not None
    pod = plan.work["spec"]["template"]["spec"]
    assert job.token_file in mounted_files(pod, "ingest")
    assert not any(e["name"] == "TANDEM_MILVUS_TOKEN" for c in pod["containers"] for e in c.get("env", []))


def test_cleanup_job_mounts_the_milvus_token_that_dropping_the_collection_needs(tmp_path: Path) -> None:
    """Bug: the cleanup Job got no Milvus credentials, so a KnowledgeBase on a Milvus with authentication
    could never drop its collection (and its finalizer waited for a Job that kept failing)."""
    spec = kb_spec_with_credentials()
    kb_owner = owner("KnowledgeBase", "handbook")
    plan = plan_knowledge_base(kb_owner, spec, SETTINGS)
    job = load_job(spec_file(plan.children, tmp_path), IngestJob)
    cleanup = plan_cleanup(KNOWLEDGE_BASE, kb_owner, spec.model_dump(by_alias=True), SETTINGS)
    assert cleanup is not None
    pod = cleanup["spec"]["template"]["spec"]
    assert "--drop-collection" in pod["containers"][0]["command"]
    assert job.token_file is not None and job.token_file in mounted_files(pod)
    config = next(c for c in plan.children if c["kind"] == "ConfigMap")["metadata"]["name"]
    assert any(v.get("configMap", {}).get("name") == config for v in pod["volumes"])


def raft_training(tmp_path: Path) -> tuple[TrainingJob, dict[str, Any]]:
    raw = example("AdapterTraining")["spec"]
    raw["raft"] = {"knowledgeBaseRef": {"name": "handbook"}}
    spec = AdapterTrainingSpec.model_validate(raw)
    kb_spec = kb_spec_with_credentials(database="tenant_db", uri="http://milvus.team:19530")
    kb_spec.embedding.model = "paraphrase-MiniLM-L3-v2"
    kb = resolve_knowledge_base(
        "team", "handbook", kb_spec, default_milvus_uri="unused", revision="r1", collection="c_handbook"
    )
    plan = plan_adapter_training(owner("AdapterTraining", "house-style"), spec, SETTINGS, kb)
    return load_job(spec_file(plan.children, tmp_path), TrainingJob), plan.work or {}


def test_raft_knowledge_base_carries_its_database_embedding_model_and_token(tmp_path: Path) -> None:
    """Bug: the training spec named only the collection and Milvus URI of the RAFT knowledge base, so the
    trainer searched the default database with the default embedding model and no token."""
    job, rayjob = raft_training(tmp_path)
    kb = job.raft_knowledge_base
    assert kb is not None
    assert (kb.collection, kb.milvus_uri) == ("c_handbook", "http://milvus.team:19530")
    assert (kb.database, kb.embedding_model) == ("tenant_db", "paraphrase-MiniLM-L3-v2")
    # Every Ray pod (the driver runs on the head, RAFT search may run anywhere) has the token file.
    cluster = rayjob["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]
    assert kb.token_file is not None
    assert kb.token_file in mounted_files(head) and kb.token_file in mounted_files(worker)


def test_raft_workload_opens_the_knowledge_base_it_is_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trainer's side of the same contract: the store it opens and the model it embeds with."""
    job, _ = raft_training(tmp_path)
    assert job.raft_knowledge_base is not None
    token = tmp_path / "token"
    token.write_text("root:Milvus\n")
    kb = job.raft_knowledge_base.model_copy(update={"token_file": str(token)})
    opened: dict[str, Any] = {}

    class Store:
        def __init__(self, uri: str, collection: str, *, token: str | None, database: str | None) -> None:
            opened.update(uri=uri, collection=collection, token=token, database=database)

        def close(self) -> None:
            opened["closed"] = True

    class Embedder:
        def __init__(self, model: str) -> None:
            opened["model"] = model

    monkeypatch.setattr("tandem.workloads.knowledge.targets.ChunkStore", Store)
    monkeypatch.setattr("tandem.workloads.knowledge.embedding.Embedder", Embedder)
    monkeypatch.setattr(train_workload.raft, "from_knowledge_base", lambda *a, **k: [])
    assert train_workload._raft_examples(kb, job.spec, []) == []
    assert opened == {
        "uri": "http://milvus.team:19530",
        "collection": "c_handbook",
        "token": "root:Milvus",
        "database": "tenant_db",
        "model": "paraphrase-MiniLM-L3-v2",
        "closed": True,
    }


def test_training_contract_is_what_the_workload_reads(tmp_path: Path) -> None:
    spec = AdapterTrainingSpec.model_validate(example("AdapterTraining")["spec"])
    plan = plan_adapter_training(owner("AdapterTraining", "house-style"), spec, SETTINGS)
    job = load_job(spec_file(plan.children, tmp_path), TrainingJob)
    assert (job.namespace, job.name, job.version) == ("team", "house-style", plan.facts.version)
    assert job.base_model.startswith("/mnt/pvc-models/")  # the claim, mounted in the Ray pods
    assert job.dataset is not None and job.dataset.startswith("/mnt/pvc-training-data/")
    assert job.output.endswith(f"/house-style-{plan.facts.version}")
    assert job.raft_knowledge_base is None and job.spec == spec


def test_both_platforms_build_the_same_contract_from_the_same_inputs() -> None:
    """Local mode and the planner call the same builders: only where things are differs."""
    spec = kb_spec_with_credentials()
    a = ingest_job(
        "team", "kb", spec, default_milvus_uri="http://a", revision="r", source_locations={}, token_file="/t"
    )
    b = IngestJob.model_validate_json(a.to_json())
    assert a == b and b.collection == collection_name("team", "kb")
    at = AdapterTrainingSpec.model_validate(example("AdapterTraining")["spec"])
    t = training_job("team", "at", at, version="v1", base_model="/m", dataset="/d", output="/o", raft=None)
    assert TrainingJob.model_validate_json(t.to_json()) == t


def test_a_job_file_that_breaks_the_contract_is_refused_with_the_field(tmp_path: Path) -> None:
    spec = AdapterTrainingSpec.model_validate(example("AdapterTraining")["spec"])
    good = training_job(
        "team", "at", spec, version="v1", base_model="/m", dataset=None, output="/o", raft=None
    )
    raw = json.loads(good.to_json())
    raw["raftKnowledgeBase"] = {"collection": "c"}  # no milvusUri
    raw["milvusToken"] = "x"  # not a field of the contract
    path = tmp_path / "job.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(JobSpecError) as refused:
        load_job(path, TrainingJob)
    assert "raftKnowledgeBase.milvusUri" in str(refused.value) and "milvusToken" in str(refused.value)
    # The workloads say so in their result line and exit 2 (permanent: a retry cannot help).
    assert train_workload.main(["--spec", str(path), "--delete-artifacts"]) == 2
    assert ingest_workload.main(["--spec", str(path)]) == 2
