"""The operator carries a published adapter across namespaces (issue 16, item 2), against the API emulator:
an AdapterTraining in `shared` with spec.output.publish mounts its credentials Secret into the RayJob, its
result line (the submitter's termination message) reports the artifact, status.artifact says it; a
HybridEndpoint in `team`, granted by a ReferenceGrant in `shared`, resolves the training to the artifact
and its adapterDigest: its vLLM pod fetches it into its cache (nothing of `shared` is mounted), and the
gateway configuration names the cached folder, the digest and the artifact URI."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.cluster_controllers import finish_rayjobs, run_pod
from tests.emulator.server import Emulator
from tests.integration.conftest import condition, eventually
from tests.integration.test_operator import children, create, in_namespace
from tests.manifests import example

pytestmark = pytest.mark.integration

SHARED, TEAM = "shared", "team"
DIGEST = "5e" * 32
MANIFEST = "sha256:" + "c4" * 32
ARTIFACT = f"oci://registry.shared.svc:5000/adapters/house-style@{MANIFEST}"


async def test_a_published_training_in_another_namespace_is_served_by_digest(
    emulator: Emulator, api: httpx.AsyncClient, operator: None
) -> None:
    at = in_namespace(example("AdapterTraining"), SHARED)
    at["spec"]["output"]["publish"] = {
        "uri": "oci://registry.shared.svc:5000/adapters/house-style",
        "credentialsSecretRef": {"name": "registry"},
        "insecure": True,
    }
    await create(api, at)
    [rayjob] = await eventually(
        lambda: children(emulator, "rayjobs", "house-style", SHARED), what="the RayJob"
    )
    assert "--publish-credentials=/var/run/tandem/publish-credentials" in rayjob["spec"]["entrypoint"]
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert any(v.get("secret", {}).get("secretName") == "registry" for v in head["volumes"])

    # The submitter leaves the training's result line as its termination message; KubeRay finishes.
    result = {
        "adapterDigest": DIGEST,
        "skipped": False,
        "metrics": {"steps": 4, "total_steps": 4, "loss": 1.2},
        "artifact": {"uri": ARTIFACT, "manifestDigest": MANIFEST},
    }

    def finish() -> None:
        with httpx.Client(base_url=emulator.url, timeout=10) as client:
            message = json.dumps({"result": result})
            run_pod(client, SHARED, rayjob["metadata"]["name"], "training", exit_code=0, message=message)
            finish_rayjobs(client, SHARED)

    await asyncio.to_thread(finish)

    def trained() -> dict[str, Any] | None:
        obj = emulator.get("adaptertrainings", SHARED, "house-style")
        return obj if condition(obj, "Ready").get("status") == "True" else None

    done = await eventually(trained, what="the AdapterTraining Ready")
    assert done["status"]["artifact"] == {"uri": ARTIFACT, "manifestDigest": MANIFEST}
    assert done["status"]["adapterDigest"] == DIGEST

    endpoint = in_namespace(example("HybridEndpoint"), TEAM)
    endpoint["spec"]["knowledgeBases"] = []
    [adapter] = endpoint["spec"]["adapters"]
    adapter["adapterTrainingRef"] = {"name": "house-style", "namespace": SHARED}
    await create(api, endpoint)
    stalled = await eventually(
        lambda: (
            condition(o := emulator.get("hybridendpoints", TEAM, "assistant"), "Stalled").get("status")
            == "True"
            and o
        ),
        what="Stalled without a grant",
    )
    assert condition(stalled, "Stalled")["reason"] == "ReferenceNotPermitted"

    grant = {
        "apiVersion": "tandem.dev/v1alpha1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "team-may-serve", "namespace": SHARED},
        "spec": {
            "from": [{"kind": "HybridEndpoint", "namespace": TEAM}],
            "to": [{"kind": "AdapterTraining"}],
        },
    }
    await create(api, grant)
    [config] = await eventually(
        lambda: children(emulator, "configmaps", "assistant", TEAM), what="the gateway config after the grant"
    )
    [served] = json.loads(config["data"]["gateway.json"])["adapters"]
    assert served["uri"] == ARTIFACT and served["digest"] == DIGEST
    assert served["path"] == f"/var/cache/tandem/adapters/{DIGEST}"

    [vllm] = [
        d
        for d in children(emulator, "deployments", "assistant", TEAM)
        if d["metadata"]["name"].endswith("vllm")
    ]
    pod = vllm["spec"]["template"]["spec"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert "adapters" not in claims  # the training's claim in `shared` is not mounted in `team`
    assert {"name": "adapter-cache", "emptyDir": {}} in pod["volumes"]
    [sync] = [c for c in pod["containers"] if c["name"] == "adapter-sync"]
    assert "--cache-dir=/var/cache/tandem/adapters" in sync["command"]
    # the endpoint's adapter names no credentials: the sync fetches anonymously, over HTTPS
    assert not any(a.startswith(("--credentials", "--insecure")) for a in sync["command"])
