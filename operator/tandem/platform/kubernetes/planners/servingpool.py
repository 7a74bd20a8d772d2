"""ServingPool -> vLLM Deployment (with the adapter-sync sidecar), headless Service, placement ConfigMap,
NetworkPolicy, HPA (or KEDA ScaledObject: scaling.py).

The placement (tandem.core.placement) is published in the ConfigMap as one adapter list per pod, under
the pod's name: each pod's sidecar reads `<its name>.json` (the downward API gives it the name) and loads
exactly its share. A pod that is not placed yet finds no file and loads nothing, then picks its share up
when the kubelet refreshes the ConfigMap. The same ConfigMap carries the guard module vLLM imports and the
digests of the attached endpoints' gateway keys (the only keys the pool's pods accept, besides the
sidecar's own).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tandem.api.v1alpha1.servingpool import ServingPoolSpec
from tandem.core import vllm_guard
from tandem.core.adapters import lora_rank_slot
from tandem.core.errors import PlanError
from tandem.core.placement import Placement, PodSlot, place
from tandem.core.pools import AttachedEndpoint, PooledAdapter
from tandem.core.vllm import ENTRYPOINT, GUARD_ARGUMENT, GUARD_MODULE, RUNTIME_LORA_ENV, pool_vllm_arguments

from ..ownership import Owner, child_name
from ..pods import container, pod_spec, resources
from ..settings import OperatorSettings
from ..vllm_key import VLLM_KEY_SECRET_KEY, vllm_key_secret_name
from ..volumes import Mounts
from . import Plan
from .hybridendpoint import (
    ADAPTER_CACHE_DIR,
    ADAPTER_CACHE_VOLUME,
    base_model_path,
    fetch_model_container,
    is_remote_model,
    vllm_probes,
)
from .scaling import pool_autoscaler

CONFIG_DIR = "/etc/tandem"
KEYS_FILE = "keys.json"
KEY_DIR = "/var/run/tandem/vllm-key"
STORES_DIR = "/var/run/tandem/adapter-stores"  # one folder per spec.adapterStores entry, in the sidecar only
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "tandem"}
GATEWAY_POD_LABELS = {"app.kubernetes.io/managed-by": "tandem", "app.kubernetes.io/component": "gateway"}


@dataclass(frozen=True)
class PoolFacts:
    vllm_deployment: str
    service: str
    placement: Placement
    adapters: list[PooledAdapter]


def pool_names(owner: Owner) -> tuple[str, str]:
    """The pool's vLLM Deployment and headless Service (one name: `<pool>-vllm`) and its ConfigMap."""
    return child_name(owner.name, "vllm"), child_name(owner.name, "placement")


def store_dir(name: str) -> str:
    return f"{STORES_DIR}/{name}"


def _sync_entry(adapter: PooledAdapter) -> dict[str, Any]:
    """One adapter as the sidecar reads it; with the credentials folder of the store the operator chose
    for it (tandem.core.pools.store_for: granted to its endpoint's namespace), never one of the sidecar's
    own choosing."""
    entry = adapter.config.model_dump(by_alias=True, exclude_none=True, mode="json")
    if adapter.store is not None:
        entry["credentials"] = store_dir(adapter.store.name)
        if adapter.store.insecure:
            entry["insecure"] = True
    return entry


def _pod_config(owner: Owner, adapters: list[PooledAdapter]) -> str:
    """What one pod's sidecar reads: the adapter-sync format (an `endpoint` for its logs, `adapters`)."""
    wire = {
        "endpoint": {"namespace": owner.namespace, "name": owner.name},
        "adapters": [_sync_entry(a) for a in adapters],
    }
    return json.dumps(wire, indent=2, sort_keys=True)


def _config_map(
    owner: Owner,
    name: str,
    placement: Placement,
    adapters: list[PooledAdapter],
    attached: list[AttachedEndpoint],
) -> dict[str, Any]:
    by_served = {a.config.name: a for a in adapters}
    data = {
        f"{GUARD_MODULE}.py": Path(vllm_guard.__file__).read_text(),
        KEYS_FILE: json.dumps(sorted({e.key_digest for e in attached if e.key_digest})),
    }
    for pod, served in placement.by_pod.items():
        data[f"{pod}.json"] = _pod_config(owner, [by_served[s] for s in served])
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": owner.metadata(name, "vllm"),
        "data": data,
    }


def _deployment(
    owner: Owner, spec: ServingPoolSpec, settings: OperatorSettings, vllm: str, config: str
) -> dict[str, Any]:
    port = settings.vllm_port
    serving = spec.serving
    labels = owner.labels("vllm")
    mounts = Mounts()
    # The base model: the hub's, fetched by an init container from an object store or https://, or a claim
    # of the pool's own namespace (its owner's data; no team's claim is mounted).
    model = base_model_path(spec.base_model, mounts)
    init = []
    if is_remote_model(spec.base_model.uri):  # before the containers copy the mounts
        init.append(fetch_model_container(spec.base_model, settings, mounts))
    mounts.add_config_map(config, CONFIG_DIR)
    mounts.add_secret_key(
        "vllm-key", vllm_key_secret_name(owner), VLLM_KEY_SECRET_KEY, KEY_DIR, VLLM_KEY_SECRET_KEY
    )
    key_file = f"{KEY_DIR}/{VLLM_KEY_SECRET_KEY}"
    mounts.volumes += [
        {"name": ADAPTER_CACHE_VOLUME, "emptyDir": {}},
        {"name": "shm", "emptyDir": {"medium": "Memory"}},
    ]
    mounts.mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    # The adapter cache: written by the sidecar (it fetches and verifies), read-only in vLLM.
    cache = {"name": ADAPTER_CACHE_VOLUME, "mountPath": ADAPTER_CACHE_DIR}
    sync_mounts = Mounts(volumes=mounts.volumes, mounts=[*mounts.mounts, cache])
    mounts.mounts.append({**cache, "readOnly": True})
    # The adapter stores' credentials: in the sidecar only (vLLM never sees them). Optional volumes: a store
    # Secret not created yet fails that store's fetches (the sidecar says so), not the whole fleet's start.
    for store in spec.adapter_stores:
        sync_mounts.add_secret(
            f"store-{store.name}", store.credentials_secret_ref.name, store_dir(store.name)
        )
        sync_mounts.volumes[-1]["secret"]["optional"] = True
    args = pool_vllm_arguments(serving, model=model, host="0.0.0.0", port=port)
    env = [
        *({"name": k, "value": v} for k, v in RUNTIME_LORA_ENV.items()),
        {"name": "HF_HUB_OFFLINE", "value": "0" if spec.base_model.uri.startswith("hf://") else "1"},
        {"name": "PYTHONPATH", "value": CONFIG_DIR},
        # The sidecar's key (the pool's own Secret), and the attached gateways' keys by digest.
        {"name": vllm_guard.KEY_FILE_ENV, "value": key_file},
        {"name": vllm_guard.DIGESTS_FILE_ENV, "value": f"{CONFIG_DIR}/{KEYS_FILE}"},
    ]
    server = container(
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
            # This pod's share of the placement ($(POD_NAME): the kubelet expands it from the env below).
            "--config",
            f"{CONFIG_DIR}/$(POD_NAME).json",
            "--vllm",
            f"http://127.0.0.1:{port}",
            f"--api-key-file={key_file}",
            f"--status-port={settings.adapter_status_port}",
            "--status-host=0.0.0.0",
            # Anonymous pulls, unless an adapter's entry names a store's credentials folder: the pool's
            # pods cannot mount the teams' registry Secrets (pools.py refuses adapters that need one).
            f"--cache-dir={ADAPTER_CACHE_DIR}",
        ],
        mounts=sync_mounts,
        pull_policy=settings.image_pull_policy,
        env=[{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        resources_={"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
        ports=[{"name": "adapters", "containerPort": settings.adapter_status_port}],
    )
    deployment: dict[str, Any] = {
        "selector": {"matchLabels": labels},
        "template": {
            "metadata": {"labels": labels},
            "spec": pod_spec([server, sync], mounts, **({"initContainers": init} if init else {})),
        },
    }
    if serving.autoscaling is None:
        deployment["replicas"] = 1 if serving.replicas is None else serving.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": owner.metadata(vllm, "vllm"),
        "spec": deployment,
    }


def _headless_service(owner: Owner, name: str, settings: OperatorSettings) -> dict[str, Any]:
    """One DNS address per ready pod: how each gateway finds the pool's pods without the Kubernetes API."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owner.metadata(name, "vllm"),
        "spec": {
            "clusterIP": "None",
            "selector": owner.labels("vllm"),
            "ports": [
                {
                    "name": "http",
                    "port": settings.vllm_port,
                    "targetPort": settings.vllm_port,
                    "protocol": "TCP",
                }
            ],
        },
    }


def _network_policy(
    owner: Owner, name: str, settings: OperatorSettings, attached: list[AttachedEndpoint]
) -> dict[str, Any]:
    namespaces = sorted({e.namespace for e in attached})
    ingress: list[dict[str, Any]] = [
        {
            "from": [
                {
                    "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: settings.operator_namespace}},
                    "podSelector": {"matchLabels": OPERATOR_POD_LABELS},
                }
            ],
            "ports": [{"protocol": "TCP", "port": settings.adapter_status_port}],
        }
    ]
    if namespaces:
        # Gateways of the attached endpoints' namespaces; each still needs its endpoint's key, whose digest
        # the pool lists only while the endpoint is attached.
        selector = {
            "matchExpressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": namespaces}]
        }
        ingress.insert(
            0,
            {
                "from": [{"namespaceSelector": selector, "podSelector": {"matchLabels": GATEWAY_POD_LABELS}}],
                "ports": [{"protocol": "TCP", "port": settings.vllm_port}],
            },
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": owner.metadata(name, "vllm"),
        "spec": {
            "podSelector": {"matchLabels": owner.labels("vllm")},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def plan_serving_pool(
    owner: Owner,
    spec: ServingPoolSpec,
    settings: OperatorSettings,
    attached: list[AttachedEndpoint],
    pods: list[str],
    previous: Placement | None = None,
) -> Plan[PoolFacts]:
    """The pool's children for the endpoints `attached` now and the pods that exist now (`pods`, by name):
    the placement covers those pods; a pod created later gets its share at the next reconcile."""
    vllm, config = pool_names(owner)
    adapters = [a for e in attached for a in e.adapters]
    for a in adapters:
        if lora_rank_slot(a.rank) > spec.serving.max_lora_rank:
            raise PlanError(
                "AdapterRankTooLarge",
                f"{a.endpoint}: adapter {a.adapter} has rank {a.rank}; the pool serves up to "
                f"spec.serving.maxLoraRank {spec.serving.max_lora_rank}",
            )
    placement = place(
        [a.config.name for a in adapters],
        [PodSlot(p, spec.serving.max_cpu_loras) for p in pods],
        spec.placement.adapter_replicas,
        previous,
    )
    children = [
        _config_map(owner, config, placement, adapters, attached),
        _deployment(owner, spec, settings, vllm, config),
        _headless_service(owner, vllm, settings),
        _network_policy(owner, vllm, settings, attached),
    ]
    scaler = pool_autoscaler(owner, spec.serving.autoscaling, settings, vllm, vllm)
    if scaler is not None:
        children.append(scaler)
    return Plan(children=children, facts=PoolFacts(vllm, vllm, placement, adapters))
