"""The operator against the API emulator: children, status, drift repair, finalizers, idempotency."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import httpx
import pytest

from tests.cluster_controllers import finish_jobs, finish_rayjobs, roll_out_deployments
from tests.emulator.server import Emulator
from tests.integration.conftest import condition, eventually
from tests.manifests import example

pytestmark = pytest.mark.integration

NS = "team"
KB_PATH = f"/apis/tandem.dev/v1alpha1/namespaces/{NS}/knowledgebases"
MERGE = {"Content-Type": "application/merge-patch+json"}
MANAGED = "app.kubernetes.io/managed-by=tandem"


def in_namespace(obj: dict[str, Any], namespace: str = NS) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    return obj


def inline_knowledge_base(name: str = "handbook") -> dict[str, Any]:
    kb = in_namespace(example("KnowledgeBase"))
    kb["metadata"]["name"] = name
    kb["spec"]["sources"] = [s for s in kb["spec"]["sources"] if "inline" in s]
    return kb


async def create(api: httpx.AsyncClient, obj: dict[str, Any]) -> dict[str, Any]:
    group_version = obj["apiVersion"]
    plural = obj["kind"].lower() + "s"
    prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    ns = obj["metadata"]["namespace"]
    response = await api.post(f"{prefix}/namespaces/{ns}/{plural}", json=obj)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def children(emulator: Emulator, resource: str, owner: str, namespace: str = NS) -> list[dict[str, Any]]:
    return emulator.list(resource, namespace, label_selector=f"{MANAGED},tandem.dev/name={owner}")


async def controllers(emulator: Emulator, namespace: str = NS, failed: bool = False) -> None:
    """Play the Job, KubeRay and Deployment controllers once (sync HTTP, so off the event loop)."""

    def run() -> None:
        with httpx.Client(base_url=emulator.url, timeout=10) as client:
            finish_jobs(client, namespace, failed=failed)
            finish_rayjobs(client, namespace, failed=failed)
            roll_out_deployments(client, namespace)

    await asyncio.to_thread(run)


async def test_knowledge_base_children_status_and_events(
    emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    kb = await create(api, inline_knowledge_base())
    uid = kb["metadata"]["uid"]
    assert kb["spec"]["embedding"]["model"] == "all-MiniLM-L6-v2"  # CRD defaults applied on create

    # The children are applied one after another: wait for all three, not only the Job (a loaded machine
    # showed the Job before the refresh CronJob, and the unpacking below failed).
    await eventually(
        lambda: all(children(emulator, r, "handbook") for r in ("configmaps", "jobs", "cronjobs")),
        what="the ingest ConfigMap, Job and refresh CronJob",
        timeout=60,
    )
    jobs = children(emulator, "jobs", "handbook")
    for resource in ("configmaps", "jobs", "cronjobs"):
        [child] = children(emulator, resource, "handbook")
        [ref] = child["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
            "KnowledgeBase",
            "handbook",
            uid,
            True,
        )
        assert child["metadata"]["labels"]["tandem.dev/kind"] == "knowledgebase"

    def reconciling() -> dict[str, Any] | None:
        obj = emulator.get("knowledgebases", NS, "handbook")
        return obj if condition(obj, "Reconciling").get("status") == "True" else None

    obj = await eventually(reconciling, what="Reconciling=True", timeout=60)
    assert condition(obj, "Ready")["status"] == "False"
    assert obj["status"]["observedGeneration"] == 1
    assert obj["status"]["ingestJob"] == jobs[0]["metadata"]["name"]

    await controllers(emulator)

    def ready() -> dict[str, Any] | None:
        obj = emulator.get("knowledgebases", NS, "handbook")
        return obj if condition(obj, "Ready").get("status") == "True" else None

    obj = await eventually(ready, what="Ready=True", timeout=60)
    assert obj["status"]["phase"] == "Ready"
    assert (
        obj["status"]["ingestJob"] == jobs[0]["metadata"]["name"]
        and len(obj["status"]["indexedRevision"]) == 10
    )
    assert condition(obj, "Stalled")["status"] == "False"
    reasons = await eventually(
        lambda: (
            {e.get("reason") for e in emulator.list("events", NS)} >= {"Indexed"}
            and {e.get("reason") for e in emulator.list("events", NS)}
        ),
        what="an Indexed event",
    )
    assert "Indexed" in reasons


async def test_deleted_or_edited_children_come_back(
    emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    await create(api, inline_knowledge_base())
    [job] = await eventually(lambda: children(emulator, "jobs", "handbook"), what="the ingest Job")
    name = job["metadata"]["name"]
    response = await api.delete(f"/apis/batch/v1/namespaces/{NS}/jobs/{name}")
    assert response.status_code == 200

    def recreated() -> bool:
        again = emulator.get("jobs", NS, name)
        return again is not None and again["metadata"]["uid"] != job["metadata"]["uid"]

    await eventually(recreated, what="the Job to be recreated")

    [config] = children(emulator, "configmaps", "handbook")
    original = config["data"]["spec.json"]
    cm_path = f"/api/v1/namespaces/{NS}/configmaps/{config['metadata']['name']}"
    response = await api.patch(cm_path, json={"data": {"spec.json": "{}"}}, headers=MERGE)
    assert response.status_code == 200
    await eventually(
        lambda: emulator.get("configmaps", NS, config["metadata"]["name"])["data"]["spec.json"] == original,
        what="the edited ConfigMap to be repaired",
    )


async def test_second_apply_of_the_same_manifest_writes_nothing(
    emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    manifest = inline_knowledge_base()
    await create(api, manifest)
    await eventually(lambda: children(emulator, "jobs", "handbook"), what="the ingest Job")
    await controllers(emulator)
    await eventually(
        lambda: condition(emulator.get("knowledgebases", NS, "handbook"), "Ready").get("status") == "True",
        what="Ready",
    )
    await asyncio.sleep(0.5)  # let the last events settle
    before = emulator.get("knowledgebases", NS, "handbook")
    emulator.reset_write_counts()

    response = await api.patch(f"{KB_PATH}/handbook", json={"spec": manifest["spec"]}, headers=MERGE)
    assert response.status_code == 200
    await asyncio.sleep(5)  # more than two resync periods (TANDEM_RESYNC_SECONDS=2)

    after = emulator.get("knowledgebases", NS, "handbook")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    operator_writes = [w for w in emulator.writes_log if w[1] != f"{KB_PATH}/handbook"]
    assert operator_writes == [], f"steady-state writes: {operator_writes}"


async def test_spec_change_runs_a_new_job_and_prunes_the_old(
    emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    await create(api, inline_knowledge_base())
    [old] = await eventually(lambda: children(emulator, "jobs", "handbook"), what="the first Job")
    response = await api.patch(
        f"{KB_PATH}/handbook", json={"spec": {"chunking": {"size": 512}}}, headers=MERGE
    )
    assert response.status_code == 200 and response.json()["metadata"]["generation"] == 2

    def replaced() -> list[dict[str, Any]] | None:
        jobs = children(emulator, "jobs", "handbook")
        names = [j["metadata"]["name"] for j in jobs]
        return jobs if len(jobs) == 1 and names[0] != old["metadata"]["name"] else None

    [new] = await eventually(replaced, what="the old Job replaced by a new one")
    obj = await eventually(
        lambda: (
            (o := emulator.get("knowledgebases", NS, "handbook"))["status"].get("observedGeneration") == 2
            and o
        ),
        what="observedGeneration 2",
    )
    assert obj["status"]["ingestJob"] == new["metadata"]["name"]
    assert condition(obj, "Ready")["observedGeneration"] == 2


async def test_failed_job_stalls_and_the_run_annotation_retries(
    emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    await create(api, inline_knowledge_base())
    [first] = await eventually(lambda: children(emulator, "jobs", "handbook"), what="the ingest Job")
    await controllers(emulator, failed=True)
    stalled = await eventually(
        lambda: (
            condition(emulator.get("knowledgebases", NS, "handbook"), "Stalled").get("status") == "True"
            and emulator.get("knowledgebases", NS, "handbook")
        ),
        what="Stalled=True",
    )
    assert condition(stalled, "Stalled")["reason"] == "JobFailed"
    assert "tandem.dev/run" in condition(stalled, "Stalled")["message"]
    assert stalled["status"]["phase"] == "Failed"
    assert "Warning" in {e.get("type") for e in emulator.list("events", NS)}

    patch = {"metadata": {"annotations": {"tandem.dev/run": "retry-1"}}}
    assert (await api.patch(f"{KB_PATH}/handbook", json=patch, headers=MERGE)).status_code == 200
    await eventually(
        lambda: [
            j
            for j in children(emulator, "jobs", "handbook")
            if j["metadata"]["name"] != first["metadata"]["name"]
        ],
        what="a new Job after the retry annotation",
    )
    await eventually(
        lambda: (
            condition(emulator.get("knowledgebases", NS, "handbook"), "Reconciling").get("status") == "True"
        ),
        what="Reconciling again",
    )


async def test_delete_runs_the_cleanup_finalizer_then_children_are_collected(
    emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    await create(api, inline_knowledge_base())
    await eventually(lambda: children(emulator, "jobs", "handbook"), what="the ingest Job")
    obj = await eventually(
        lambda: (
            (o := emulator.get("knowledgebases", NS, "handbook")) and o["metadata"].get("finalizers") and o
        ),
        what="the finalizer",
    )
    assert "tandem.dev/finalizer" in obj["metadata"]["finalizers"]

    assert (await api.delete(f"{KB_PATH}/handbook")).status_code == 200
    # The collection must be dropped first: a cleanup Job runs while the finalizer holds the object.
    cleanup = await eventually(
        lambda: [
            j for j in children(emulator, "jobs", "handbook") if j["metadata"]["name"].endswith("-cleanup")
        ],
        what="the cleanup Job",
    )
    assert "--drop-collection" in cleanup[0]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert emulator.get("knowledgebases", NS, "handbook") is not None
    await controllers(emulator)
    await eventually(lambda: emulator.get("knowledgebases", NS, "handbook") is None, what="the KB to go")
    for resource in ("configmaps", "jobs", "cronjobs"):
        await eventually(
            lambda r=resource: not children(emulator, r, "handbook"), what=f"{resource} collected"
        )


async def test_retained_knowledge_base_is_deleted_without_cleanup(
    emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    kb = inline_knowledge_base()
    kb["spec"]["retainOnDelete"] = True
    await create(api, kb)
    await eventually(lambda: children(emulator, "jobs", "handbook"), what="the ingest Job")
    await eventually(
        lambda: (emulator.get("knowledgebases", NS, "handbook") or {}).get("metadata", {}).get("finalizers"),
        what="the finalizer",
    )
    assert (await api.delete(f"{KB_PATH}/handbook")).status_code == 200
    await eventually(lambda: emulator.get("knowledgebases", NS, "handbook") is None, what="the KB to go")
    assert not [j for j in emulator.list("jobs", NS) if j["metadata"]["name"].endswith("-cleanup")]


async def test_training_then_endpoint_picks_up_the_adapter(
    emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    await create(api, in_namespace(example("AdapterTraining")))
    # The RayJob was accepted by KubeRay's own CRD schema, installed in the emulator.
    [rayjob] = await eventually(lambda: children(emulator, "rayjobs", "house-style"), what="the RayJob")
    assert rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 1

    endpoint = in_namespace(example("HybridEndpoint"))
    endpoint["spec"]["knowledgeBases"] = []
    await create(api, endpoint)
    await eventually(lambda: children(emulator, "deployments", "assistant"), what="the Deployments")
    obj = await eventually(
        lambda: (o := emulator.get("hybridendpoints", NS, "assistant")) and condition(o, "Ready") and o,
        what="endpoint status",
    )
    [config] = children(emulator, "configmaps", "assistant")
    assert '"adapters": []' in config["data"]["gateway.json"]  # the adapter is not trained yet

    await controllers(emulator)  # training finishes, Deployments roll out
    trained = await eventually(
        lambda: (
            condition(emulator.get("adaptertrainings", NS, "house-style"), "Ready").get("status") == "True"
            and emulator.get("adaptertrainings", NS, "house-style")
        ),
        what="the AdapterTraining Ready",
    )
    uri = trained["status"]["adapterUri"]
    assert uri.startswith("pvc://adapters/handbook/house-style-v")

    def adapter_configured() -> bool:
        [cm] = children(emulator, "configmaps", "assistant")
        return (
            "house-style" in cm["data"]["gateway.json"] and '"adapters": []' not in cm["data"]["gateway.json"]
        )

    await eventually(adapter_configured, timeout=30, what="the adapter in the gateway config")
    await controllers(emulator)

    def loading() -> dict[str, Any] | None:
        # Waited for by its reason: statuses written before the adapter resolved (WaitingForAdapters) or
        # while the changed Deployments rolled out (Deploying) can carry readyReplicas 1 too, and a status
        # claiming more than LoadingAdapters would never come to this and time out.
        o = emulator.get("hybridendpoints", NS, "assistant") or {}
        ready = (o.get("status") or {}).get("readyReplicas") == 1
        return o if ready and condition(o, "Reconciling").get("reason") == "LoadingAdapters" else None

    obj = await eventually(loading, what="vLLM ready, the adapter not seen on any pod")
    # Deployments are ready, but nobody has seen the adapter on a pod: not Ready, and it says why.
    assert condition(obj, "Ready")["status"] == "False"
    assert "house-style (0/0 pods)" in condition(obj, "Reconciling")["message"]
    [adapter] = obj["status"]["adapters"]
    assert (adapter["name"], adapter["loadedReplicas"], adapter["ready"]) == ("house-style", 0, False)
    assert adapter["version"] == trained["status"]["adapterVersion"]


async def test_endpoint_without_adapters_turns_ready(
    emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    endpoint = in_namespace(example("HybridEndpoint"))
    endpoint["spec"].update(adapters=[], knowledgeBases=[], serving={"replicas": 2})
    await create(api, endpoint)
    await eventually(lambda: len(children(emulator, "deployments", "assistant")) == 2, what="the Deployments")
    await controllers(emulator)
    obj = await eventually(
        lambda: (
            condition(emulator.get("hybridendpoints", NS, "assistant"), "Ready").get("status") == "True"
            and emulator.get("hybridendpoints", NS, "assistant")
        ),
        what="Ready",
    )
    assert obj["status"]["readyReplicas"] == 2 and obj["status"]["url"] == f"http://assistant.{NS}.svc/v1"


async def test_a_base_model_that_cannot_be_fetched_stalls_the_endpoint_with_its_reason(
    emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    """The vLLM pods' init container (tandem.workloads.model_download) fetches an s3/https base model; when
    it fails, its termination message is the reason. The emulator runs no kubelet: the test records the
    pod with the init container's state, as the kubelet would after a failed attempt."""
    endpoint = in_namespace(example("HybridEndpoint"))
    endpoint["spec"].update(
        adapters=[], knowledgeBases=[], baseModel={"uri": "https://models.example/smollm2.tar.gz"}
    )
    await create(api, endpoint)
    [vllm] = await eventually(
        lambda: [
            d
            for d in children(emulator, "deployments", "assistant")
            if d["metadata"]["name"].endswith("-vllm")
        ],
        what="the vLLM Deployment",
    )
    template = vllm["spec"]["template"]
    [init] = template["spec"]["initContainers"]
    failure = {"error": "BaseModelNotFound", "message": "https://models.example/smollm2.tar.gz: HTTP 404"}
    message = json.dumps({"result": failure})
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "assistant-vllm-7d9f-abcde",
            "namespace": NS,
            "labels": template["metadata"]["labels"],
        },
        "spec": template["spec"],
    }
    status = {
        "phase": "Pending",
        "initContainerStatuses": [
            {
                "name": init["name"],
                "ready": False,
                "restartCount": 1,
                "image": init["image"],
                "imageID": "",
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {
                    "terminated": {"exitCode": 2, "message": message, "finishedAt": "2026-11-29T22:00:00Z"}
                },
            }
        ],
    }
    async with httpx.AsyncClient(base_url=emulator.url) as client:
        (await client.post(f"/api/v1/namespaces/{NS}/pods", json=pod)).raise_for_status()
        path = f"/api/v1/namespaces/{NS}/pods/{pod['metadata']['name']}/status"
        patch = await client.patch(
            path, json={"status": status}, headers={"Content-Type": "application/merge-patch+json"}
        )
        patch.raise_for_status()
    await api.patch(
        f"/apis/tandem.dev/v1alpha1/namespaces/{NS}/hybridendpoints/assistant",
        json={"metadata": {"annotations": {"poke": "1"}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    obj = await eventually(
        lambda: (
            condition(o := emulator.get("hybridendpoints", NS, "assistant"), "Stalled").get("status")
            == "True"
            and o
        ),
        what="Stalled",
    )
    stalled = condition(obj, "Stalled")
    assert stalled["reason"] == "BaseModelNotFound" and "HTTP 404" in stalled["message"]


async def test_cross_namespace_reference_needs_a_grant(
    emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    await create(api, in_namespace(inline_knowledge_base(), "shared"))
    endpoint = in_namespace(example("HybridEndpoint"))
    endpoint["spec"].update(adapters=[], knowledgeBases=[{"name": "handbook", "namespace": "shared"}])
    await create(api, endpoint)
    stalled = await eventually(
        lambda: (
            condition(emulator.get("hybridendpoints", NS, "assistant"), "Stalled").get("status") == "True"
            and emulator.get("hybridendpoints", NS, "assistant")
        ),
        what="Stalled",
    )
    assert condition(stalled, "Stalled")["reason"] == "ReferenceNotPermitted"
    assert not children(emulator, "deployments", "assistant")  # fail closed: nothing deployed

    grant = {
        "apiVersion": "tandem.dev/v1alpha1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "team-may-read", "namespace": "shared"},
        "spec": {"from": [{"kind": "HybridEndpoint", "namespace": NS}], "to": [{"kind": "KnowledgeBase"}]},
    }
    await create(api, grant)
    await eventually(
        lambda: children(emulator, "deployments", "assistant"), what="deployments after the grant"
    )
    [config] = children(emulator, "configmaps", "assistant")
    assert "tandem_shared__handbook" in config["data"]["gateway.json"]
