"""Planners turn specs into child manifests: owned, labelled, valid Kubernetes objects, deterministic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tandem.api.v1alpha1 import AdapterTrainingSpec, HybridEndpointSpec, KnowledgeBaseSpec
from tandem.core.adapters import max_lora_rank
from tandem.core.errors import PlanError
from tandem.core.references import ResolvedAdapter, ResolvedKnowledgeBase
from tandem.platform.kubernetes.ownership import Owner
from tandem.platform.kubernetes.planners.adaptertraining import plan_adapter_training
from tandem.platform.kubernetes.planners.cleanup import plan_cleanup
from tandem.platform.kubernetes.planners.hybridendpoint import plan_hybrid_endpoint
from tandem.platform.kubernetes.planners.knowledgebase import plan_knowledge_base
from tandem.platform.kubernetes.settings import OperatorSettings
from tests.manifests import example

SETTINGS = OperatorSettings()


def owner(kind: str, name: str = "x", namespace: str = "team") -> Owner:
    return Owner("tandem.dev/v1alpha1", kind, namespace, name, f"uid-{name}")


def kb_plan(spec: dict[str, Any] | None = None, token: str = ""):  # type: ignore[no-untyped-def]
    spec = spec or example("KnowledgeBase")["spec"]
    return plan_knowledge_base(
        owner("KnowledgeBase", "handbook"), KnowledgeBaseSpec.model_validate(spec), SETTINGS, token
    )


def he_plan(spec: dict[str, Any] | None = None, adapters: list[ResolvedAdapter] | None = None):  # type: ignore[no-untyped-def]
    spec = spec or example("HybridEndpoint")["spec"]
    kb = ResolvedKnowledgeBase("team", "handbook", "tandem_team__handbook", "http://milvus:19530", "r1")
    return plan_hybrid_endpoint(
        owner("HybridEndpoint", "assistant"),
        HybridEndpointSpec.model_validate(spec),
        SETTINGS,
        adapters
        if adapters is not None
        else [ResolvedAdapter("house-style", "pvc://adapters/handbook/hs-v1", 8, "v1")],
        [kb],
    )


def at_plan(spec: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
    spec = spec or example("AdapterTraining")["spec"]
    return plan_adapter_training(
        owner("AdapterTraining", "house-style"), AdapterTrainingSpec.model_validate(spec), SETTINGS
    )


def all_plans():  # type: ignore[no-untyped-def]
    return [("KnowledgeBase", kb_plan()), ("AdapterTraining", at_plan()), ("HybridEndpoint", he_plan())]


@pytest.mark.parametrize("kind,plan", all_plans(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_child_is_owned_and_labelled(kind: str, plan: Any) -> None:
    assert plan.children
    for child in plan.children:
        meta = child["metadata"]
        assert meta["namespace"] == "team"
        [ref] = meta["ownerReferences"]
        assert ref["kind"] == kind and ref["controller"] is True and ref["uid"].startswith("uid-")
        labels = meta["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "tandem"
        assert labels["tandem.dev/kind"] == kind.lower()
        assert labels["tandem.dev/name"] == ref["name"]
        assert len(meta["name"]) <= 63


@pytest.mark.parametrize("kind,plan", all_plans(), ids=lambda v: v if isinstance(v, str) else "")
def test_core_children_pass_the_kubernetes_schemas(kind: str, plan: Any) -> None:
    for child in plan.children:
        if child["apiVersion"] == "ray.io/v1":
            continue  # checked against KubeRay's own CRD in test_rayjobs_match_kuberay_schema
        kubernetes_validate.validate(child, "1.32", strict=True)


def test_pods_run_restricted() -> None:
    for _, plan in all_plans():
        for child in plan.children:
            spec = child.get("spec", {})
            template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
            pods = [template] if template else []
            if child["kind"] == "RayJob":
                cluster = spec["rayClusterSpec"]
                pods = [cluster["headGroupSpec"]["template"]] + [
                    g["template"] for g in cluster["workerGroupSpecs"]
                ]
            for pod in pods:
                assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
                for c in pod["spec"]["containers"]:
                    assert c["securityContext"]["allowPrivilegeEscalation"] is False
                    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_knowledge_base_plan_is_deterministic_and_new_spec_means_new_job() -> None:
    a, b = kb_plan(), kb_plan()
    assert a.children == b.children
    assert a.work is not None and a.work["kind"] == "Job"
    spec = example("KnowledgeBase")["spec"]
    spec["chunking"]["size"] = 512
    changed = kb_plan(spec)
    assert changed.work is not None and changed.work["metadata"]["name"] != a.work["metadata"]["name"]
    rerun = kb_plan(token="2026-11-22T10:00")
    assert rerun.work is not None and rerun.work["metadata"]["name"] != a.work["metadata"]["name"]
    assert a.facts.collection == "tandem_team__handbook"


def test_knowledge_base_refresh_and_sources_reach_the_pod() -> None:
    plan = kb_plan()
    kinds = [c["kind"] for c in plan.children]
    assert kinds == ["ConfigMap", "Job", "CronJob"]
    cron = plan.children[2]
    assert cron["spec"]["schedule"] == "*/30 * * * *" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = plan.work["spec"]["template"]["spec"]  # type: ignore[index]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["handbook-docs"]
    assert pod["containers"][0]["command"][:3] == ["python", "-m", "tandem.workloads.ingest"]


def test_knowledge_base_on_ray_when_scaled_out() -> None:
    spec = example("KnowledgeBase")["spec"]
    spec["scale"] = {"engine": "RayJob", "workers": 4}
    plan = kb_plan(spec)
    assert plan.work is not None and plan.work["kind"] == "RayJob"
    assert plan.work["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 4
    assert "--ray-workers 4" in plan.work["spec"]["entrypoint"]
    # Tandem's submitter relays the ingest's result line to its termination message, named "ingest"
    # like a plain ingest Job's container so the operator reads both alike.
    [submitter] = plan.work["spec"]["submitterPodTemplate"]["spec"]["containers"]
    assert submitter["name"] == "ingest"
    module, entrypoint = submitter["command"][:5], submitter["command"][5:]
    assert module == ["python", "-m", "tandem.workloads.ray_submit", "--", "python"]
    assert " ".join(["python", *entrypoint]) == plan.work["spec"]["entrypoint"]
    assert submitter["securityContext"]["readOnlyRootFilesystem"] is True


def test_object_store_output_is_refused_not_reported_trained() -> None:
    spec = example("AdapterTraining")["spec"]
    spec["output"] = {"uri": "s3://adapters/team"}
    with pytest.raises(PlanError) as refused:
        plan_adapter_training(
            owner("AdapterTraining", "style"), AdapterTrainingSpec.model_validate(spec), SETTINGS
        )
    assert refused.value.reason == "OutputUnsupported" and "pvc://" in str(refused.value)


def test_source_secrets_reach_the_ingest_pod() -> None:
    long_name = "w" * 63  # a source name may be 63 characters; a volume name may not be longer
    spec = {
        "sources": [
            {
                "name": "wiki",
                "http": {"urls": ["https://wiki.example/a"], "headersSecretRef": {"name": "wiki-token"}},
            },
            {"name": long_name, "configMap": {"name": "notes"}},
            {"name": "bucket", "s3": {"bucket": "docs", "credentialsSecretRef": {"name": "s3-keys"}}},
        ]
    }
    plan = kb_plan(spec)
    pod = plan.work["spec"]["template"]["spec"]
    [headers] = [v for v in pod["volumes"] if "secret" in v]
    assert headers["secret"]["secretName"] == "wiki-token"
    assert all(len(v["name"]) <= 63 for v in pod["volumes"])
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    job = json.loads(plan.children[0]["data"]["spec.json"])
    # The workload finds the headers where the Secret is mounted, as it finds a ConfigMap source.
    assert job["sourceLocations"]["wiki"] == mounts[headers["name"]]
    env = {e["name"]: e.get("valueFrom") for e in pod["containers"][0]["env"]}
    assert env["TANDEM_S3_BUCKET_AWS_SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "s3-keys", "key": "AWS_SECRET_ACCESS_KEY"}
    }


def test_local_paths_are_refused_in_a_cluster_with_a_fix() -> None:
    spec = example("KnowledgeBase")["spec"]
    spec["sources"][1]["directory"].pop("claimName")
    with pytest.raises(PlanError, match="set claimName") as err:
        kb_plan(spec)
    assert err.value.reason == "LocalPathInCluster"
    at = example("AdapterTraining")["spec"]
    at["output"]["uri"] = "file:///tmp/adapters"
    with pytest.raises(PlanError, match=r"spec\.output\.uri"):
        at_plan(at)


def test_adapter_training_rayjob_asks_for_gpus_and_writes_a_versioned_adapter() -> None:
    plan = at_plan()
    job = plan.work
    assert job is not None and job["kind"] == "RayJob"
    worker = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    version = plan.facts.version
    assert plan.facts.adapter_uri == f"pvc://adapters/handbook/house-style-{version}"
    # The same inputs make the same version (no retraining); another learning rate makes another.
    assert at_plan().facts.version == version
    spec = example("AdapterTraining")["spec"]
    spec["training"]["learningRate"] = 0.001
    assert at_plan(spec).facts.version != version
    # The output location is not an input of the adapter: moving it keeps the version.
    spec = example("AdapterTraining")["spec"]
    spec["output"]["uri"] = "pvc://other/place"
    assert at_plan(spec).facts.version == version


def test_adapter_training_workers_size_torch_threads_to_their_cpus() -> None:
    def env_of(pod: dict[str, Any]) -> dict[str, str]:
        return {e["name"]: e.get("value") for e in pod["template"]["spec"]["containers"][0]["env"]}

    spec = example("AdapterTraining")["spec"]
    spec["resources"]["cpusPerWorker"] = 6
    cluster = at_plan(spec).work["spec"]["rayClusterSpec"]
    worker = env_of(cluster["workerGroupSpecs"][0])
    assert worker["OMP_NUM_THREADS"] == worker["MKL_NUM_THREADS"] == "6"
    assert (
        cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
        == "6"
    )
    assert worker["HF_HUB_OFFLINE"] == "1"  # the planner's other variables stay
    head = env_of(cluster["headGroupSpec"])  # the driver trains nothing: its threads are not the workers'
    assert "OMP_NUM_THREADS" not in head and "MKL_NUM_THREADS" not in head
    # The API's default CPU figure (4) is what the worker requests, so it is what torch uses.
    default = env_of(at_plan().work["spec"]["rayClusterSpec"]["workerGroupSpecs"][0])
    assert default["OMP_NUM_THREADS"] == default["MKL_NUM_THREADS"] == "4"


def test_hybrid_endpoint_vllm_args_follow_the_adapters() -> None:
    plan = he_plan()
    vllm = next(
        c for c in plan.children if c["kind"] == "Deployment" and c["metadata"]["name"].endswith("-vllm")
    )
    args = vllm["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--enable-lora" in args and "--max-lora-rank=8" in args and "--max-loras=1" in args
    assert "replicas" not in vllm["spec"]  # the HPA owns it
    hpa = next(c for c in plan.children if c["kind"] == "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    assert max_lora_rank([ResolvedAdapter("a", "s3://b/a", 12, None)]) == 16
    with pytest.raises(PlanError):
        max_lora_rank([ResolvedAdapter("a", "s3://b/a", 600, None)])


def test_hybrid_endpoint_without_adapters_has_no_lora_flags_and_fixed_replicas() -> None:
    spec = example("HybridEndpoint")["spec"]
    spec["adapters"] = []
    spec["serving"] = {"replicas": 2}
    plan = he_plan(spec, adapters=[])
    vllm = next(
        c for c in plan.children if c["kind"] == "Deployment" and c["metadata"]["name"].endswith("-vllm")
    )
    assert "--enable-lora" not in vllm["spec"]["template"]["spec"]["containers"][0]["command"]
    assert vllm["spec"]["replicas"] == 2
    assert not [c for c in plan.children if c["kind"] == "HorizontalPodAutoscaler"]


@pytest.mark.parametrize("uri", ["s3://models/smollm2-360m", "https://models.example/smollm2.tar.gz"])
def test_a_remote_base_model_is_fetched_by_an_init_container(uri: str) -> None:
    spec = example("HybridEndpoint")["spec"]
    spec["baseModel"] = {"uri": uri}
    plan = he_plan(spec)
    vllm = next(
        c for c in plan.children if c["kind"] == "Deployment" and c["metadata"]["name"].endswith("-vllm")
    )
    kubernetes_validate.validate(vllm, "1.32", strict=True)
    pod = vllm["spec"]["template"]["spec"]
    [fetch] = pod["initContainers"]
    assert fetch["command"][:3] == ["python", "-m", "tandem.workloads.model_download"]
    assert f"--uri={uri}" in fetch["command"] and "--allow-private-networks" not in fetch["command"]
    link = next(a for a in fetch["command"] if a.startswith("--link=")).removeprefix("--link=")
    server = pod["containers"][0]
    assert f"--model={link}" in server["command"]
    # The folder the init container fills is the one vLLM reads.
    [models] = [v["name"] for v in pod["volumes"] if "emptyDir" in v and v["name"] == "models"]
    mounted = {c["name"]: {m["name"]: m["mountPath"] for m in c["volumeMounts"]} for c in [fetch, server]}
    assert mounted["fetch-model"][models] == mounted["vllm"][models] and link.startswith(
        mounted["vllm"][models]
    )
    assert fetch["securityContext"]["readOnlyRootFilesystem"] is True


def test_hybrid_endpoint_isolates_vllm_and_mounts_tenant_keys() -> None:
    plan = he_plan()
    policy = next(c for c in plan.children if c["kind"] == "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "vllm"
    allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert allowed["app.kubernetes.io/component"] == "gateway"
    gateway = next(
        c for c in plan.children if c["metadata"]["name"].endswith("-gateway") and c["kind"] == "Deployment"
    )
    secrets = [
        v["secret"]["secretName"] for v in gateway["spec"]["template"]["spec"]["volumes"] if "secret" in v
    ]
    assert secrets == ["assistant-vllm-key", "assistant-keys", "assistant-keys"]
    assert plan.facts.url == "http://assistant.team.svc/v1"


def test_the_vllm_pod_and_the_gateway_share_the_generated_key_and_the_guard() -> None:
    """Issue 15, item 1 in a cluster: vLLM runs behind Tandem's guard with the key from the Secret the
    operator creates (vllm_key.py); the sidecar and the gateway read the same Secret; vLLM's own
    VLLM_API_KEY is not used (it is read once: a rotated key would lock the gateway out)."""
    from tandem.core import vllm_guard
    from tandem.platform.kubernetes.vllm_key import vllm_key_secret

    plan = he_plan()
    by_name = {c["metadata"]["name"]: c for c in plan.children if c["kind"] in ("Deployment", "ConfigMap")}
    secret = vllm_key_secret(owner("HybridEndpoint", "assistant"), "k")
    vllm_pod = by_name["assistant-vllm"]["spec"]["template"]["spec"]
    server, sync = vllm_pod["containers"]

    def key_file(pod: dict[str, Any], container: dict[str, Any]) -> str:
        [volume] = [
            v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == secret["metadata"]["name"]
        ]
        [item] = volume["secret"]["items"]
        assert item["key"] in secret["stringData"]
        [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        return f"{mount['mountPath']}/{item['path']}"

    env = {e["name"]: e.get("value") for e in server["env"]}
    assert "VLLM_API_KEY" not in env and "--api-key" not in " ".join(server["command"])
    assert env[vllm_guard.KEY_FILE_ENV] == key_file(vllm_pod, server)
    assert "--middleware=tandem_vllm_guard.RequireKey" in server["command"]
    # The guard module vLLM imports is the ConfigMap's key, on its PYTHONPATH: vLLM's image has no Tandem.
    config_map = by_name["assistant-config"]
    [config_dir] = [m["mountPath"] for m in server["volumeMounts"] if m["name"] == "spec"]
    assert env["PYTHONPATH"] == config_dir
    assert config_map["data"]["tandem_vllm_guard.py"] == Path(vllm_guard.__file__).read_text()
    assert f"--api-key-file={key_file(vllm_pod, sync)}" in sync["command"]
    assert "--vllm" in sync["command"] and "http://127.0.0.1:8000" in sync["command"]  # loopback: may load
    gateway_pod = by_name["assistant-gateway"]["spec"]["template"]["spec"]
    config = json.loads(config_map["data"]["gateway.json"])
    assert config["vllmApiKeyFile"] == key_file(gateway_pod, gateway_pod["containers"][0])


def test_cleanup_job_only_when_state_is_not_retained() -> None:
    from tandem.api.kinds import ADAPTER_TRAINING, KNOWLEDGE_BASE

    kb = example("KnowledgeBase")["spec"]
    job = plan_cleanup(KNOWLEDGE_BASE, owner("KnowledgeBase", "handbook"), kb, SETTINGS)
    assert (
        job is not None and "--drop-collection" in job["spec"]["template"]["spec"]["containers"][0]["command"]
    )
    kb["retainOnDelete"] = True
    assert plan_cleanup(KNOWLEDGE_BASE, owner("KnowledgeBase", "handbook"), kb, SETTINGS) is None
    at = example("AdapterTraining")["spec"]  # artifacts are retained by default
    assert plan_cleanup(ADAPTER_TRAINING, owner("AdapterTraining", "house-style"), at, SETTINGS) is None


def test_work_is_renamed_when_the_rendered_pod_changes() -> None:
    """A Job's template is immutable: another worker image must make another Job, not a patch."""
    spec = KnowledgeBaseSpec.model_validate(example("KnowledgeBase")["spec"])
    kb = owner("KnowledgeBase", "handbook")
    before = plan_knowledge_base(kb, spec, SETTINGS).work
    after = plan_knowledge_base(kb, spec, OperatorSettings(worker_image="registry.example/worker:2")).work
    assert before is not None and after is not None
    assert before["metadata"]["name"] != after["metadata"]["name"]


def test_contains_matches_named_lists_by_name() -> None:
    from tandem.platform.kubernetes.children import contains

    desired = {"env": [{"name": "HOME", "value": "/tmp"}, {"name": "A", "value": "1"}]}
    reordered = {"env": [{"name": "A", "value": "1"}, {"name": "HOME", "value": "/tmp"}], "extra": True}
    assert contains(reordered, desired)
    assert not contains({"env": [{"name": "A", "value": "2"}, {"name": "HOME", "value": "/tmp"}]}, desired)
    assert not contains({"env": [{"name": "A", "value": "1"}]}, desired)
    assert contains({"args": ["a", "b"]}, {"args": ["a", "b"]}) and not contains(
        {"args": ["b", "a"]}, {"args": ["a", "b"]}
    )


def test_gateway_searches_knowledge_bases_as_they_were_indexed_with_their_credentials() -> None:
    from tandem.api.v1alpha1.common import SecretKeyReference

    spec = HybridEndpointSpec.model_validate(example("HybridEndpoint")["spec"])
    token = SecretKeyReference(name="milvus", key="token")
    kb = ResolvedKnowledgeBase(
        "team", "handbook", "c", "http://milvus:19530", "r1", "all-MiniLM-L6-v2", {"rrfK": 10}, "db1", token
    )
    plan = plan_hybrid_endpoint(owner("HybridEndpoint", "assistant"), spec, SETTINGS, [], [kb])
    config = json.loads(next(c for c in plan.children if c["kind"] == "ConfigMap")["data"]["gateway.json"])
    [entry] = config["knowledgeBases"]
    assert entry["embeddingModel"] == "all-MiniLM-L6-v2" and entry["search"]["rrfK"] == 10
    assert entry["database"] == "db1" and entry["tokenFile"] == "/var/run/tandem/milvus/handbook/token"
    gateway = next(
        c for c in plan.children if c["kind"] == "Deployment" and "gateway" in c["metadata"]["name"]
    )
    pod = gateway["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "milvus")
    mounts = pod["containers"][0]["volumeMounts"]
    assert {
        "name": volume["name"],
        "mountPath": "/var/run/tandem/milvus/handbook",
        "readOnly": True,
    } in mounts

    elsewhere = ResolvedKnowledgeBase("other", "handbook", "c", "http://m", "r1", credentials=token)
    with pytest.raises(PlanError, match="credentials Secret is in namespace other; copy it into team"):
        plan_hybrid_endpoint(owner("HybridEndpoint", "assistant"), spec, SETTINGS, [], [elsewhere])


def test_gateway_metrics_are_on_their_own_port_the_clients_service_leaves_out() -> None:
    """Issue 15, item 7: Prometheus scrapes `metrics` (9090); the clients' Service exposes `http` only."""
    plan = he_plan()
    gateway = next(
        c for c in plan.children if c["metadata"]["name"].endswith("-gateway") and c["kind"] == "Deployment"
    )
    template = gateway["spec"]["template"]
    [container] = template["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "metrics": 9090}
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9090" and annotations["prometheus.io/scrape"] == "true"
    [service] = [c for c in plan.children if c["kind"] == "Service" and c["metadata"]["name"] == "assistant"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [8080]


def test_gateway_caps_reach_the_gateway_config_with_their_defaults() -> None:
    """Issue 15, item 7: gateway.maxTokens and gateway.maxN, 4096 and 4 unless set."""

    def limits(spec: dict[str, Any]) -> dict[str, Any]:
        plan = he_plan(spec)
        [config_map] = [c for c in plan.children if c["kind"] == "ConfigMap"]
        return json.loads(config_map["data"]["gateway.json"])["limits"]  # type: ignore[no-any-return]

    spec = example("HybridEndpoint")["spec"]
    assert {k: limits(spec)[k] for k in ("maxTokens", "maxN")} == {"maxTokens": 4096, "maxN": 4}
    spec["gateway"] = {"maxTokens": 512, "maxN": 1}
    assert {k: limits(spec)[k] for k in ("maxTokens", "maxN")} == {"maxTokens": 512, "maxN": 1}
    for wrong in ({"maxTokens": 0}, {"maxN": 129}):
        with pytest.raises(ValueError):
            HybridEndpointSpec.model_validate({**spec, "gateway": wrong})
