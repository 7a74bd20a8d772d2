"""A HybridEndpoint reports an adapter loaded only once a vLLM pod's /v1/models lists it, with a real vLLM.

The emulator runs no pods, so the test records one Ready vLLM pod whose IP is 127.0.0.1, where the
session's real vLLM (the CPU build) listens behind the adapter sync's status server; the operator reads
that pod's adapters as it would in a cluster. The adapter-sync sidecar's round (`sync_once`, what the
sidecar runs in each vLLM pod) loads the adapter at run time: the status follows, and vLLM is never
restarted. Not covered: a real pod's volume mounts (the adapter's mount path is linked to the test's
adapter folder on this machine).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tandem.platform.local.vllm import VllmServer
from tandem.workloads.adapter_sync import VllmAdmin, parse_adapters, serve_status, sync_once
from tests.cluster_controllers import roll_out_deployments, run_ready_pod
from tests.emulator.server import Emulator
from tests.integration.conftest import condition, eventually
from tests.integration.test_operator import NS, children, create

pytestmark = pytest.mark.integration

ENDPOINT: dict[str, Any] = {
    "apiVersion": "tandem.dev/v1alpha1",
    "kind": "HybridEndpoint",
    "metadata": {"name": "probe", "namespace": NS},
    "spec": {
        "baseModel": {"uri": "pvc://models/smollm2"},
        "adapters": [{"name": "identity", "uri": "pvc://adapters/identity-v1", "rank": 8}],
    },
}


@pytest.fixture()
def vllm_pod_port(monkeypatch: pytest.MonkeyPatch, vllm_server: VllmServer) -> Iterator[int]:
    """The operator reads each vLLM pod's adapters from its adapter-sync status port (it holds no vLLM
    key): the sidecar's real status server, in front of the session's vLLM, on this port (set before the
    `operator` fixture starts it)."""
    admin = VllmAdmin(vllm_server.url, timeout=10)
    server = serve_status(admin, "127.0.0.1", 0)
    port = int(server.server_address[1])
    monkeypatch.setenv("TANDEM_ADAPTER_STATUS_PORT", str(port))
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()
        admin.close()


@pytest.fixture()
def mounted_adapter(identity_adapter: Path) -> Iterator[Path]:
    """The adapter where the planner mounts its claim in the vLLM pod: /mnt/pvc-adapters/identity-v1."""
    mount = Path("/mnt/pvc-adapters")
    created = not mount.exists()
    mount.mkdir(parents=True, exist_ok=True)
    link = mount / "identity-v1"
    link.symlink_to(identity_adapter)
    try:
        yield link
    finally:
        link.unlink()
        if created:
            shutil.rmtree(mount)


async def test_status_reports_an_adapter_only_after_vllm_lists_it(
    vllm_pod_port: int,
    mounted_adapter: Path,
    vllm_server: VllmServer,
    emulator: Emulator,
    api: httpx.AsyncClient,
    operator: None,
) -> None:
    pid = vllm_server.pid
    await create(api, ENDPOINT)
    [config] = await eventually(lambda: children(emulator, "configmaps", "probe"), what="the gateway config")

    def kubelet() -> None:  # sync HTTP to the emulator, which serves from this event loop: off it
        with httpx.Client(base_url=emulator.url, timeout=10) as client:
            roll_out_deployments(client, NS)
            deployments = children(emulator, "deployments", "probe")
            [vllm] = [d for d in deployments if d["metadata"]["name"].endswith("vllm")]
            run_ready_pod(client, NS, "probe-vllm-0", vllm["spec"]["selector"]["matchLabels"], "127.0.0.1")

    await asyncio.to_thread(kubelet)

    def loading() -> dict[str, Any] | None:
        obj = emulator.get("hybridendpoints", NS, "probe")
        return obj if condition(obj, "Reconciling").get("reason") == "LoadingAdapters" else None

    obj = await eventually(loading, timeout=30, what="the endpoint waiting for its adapter")
    assert condition(obj, "Ready")["status"] == "False"
    assert obj["status"]["adapters"] == [{"name": "identity", "loadedReplicas": 0, "ready": False}]
    assert "identity (0/1 pods)" in condition(obj, "Reconciling")["message"]

    # The sidecar's round: what the ConfigMap lists is loaded into the running vLLM.
    adapters = parse_adapters(json.loads(config["data"]["gateway.json"])["adapters"])
    assert [a.path for a in adapters] == [str(mounted_adapter)]
    await asyncio.to_thread(sync_once, vllm_server.url, adapters)

    def ready() -> dict[str, Any] | None:
        obj = emulator.get("hybridendpoints", NS, "probe")
        return obj if condition(obj, "Ready").get("status") == "True" else None

    obj = await eventually(ready, timeout=30, what="the endpoint Ready")
    assert obj["status"]["adapters"] == [{"name": "identity", "loadedReplicas": 1, "ready": True}]
    assert vllm_server.pid == pid and vllm_server.running()  # loaded at run time, no restart

    # E.g. the pod restarted and its sidecar has not run yet: the status follows what vLLM says.
    await asyncio.to_thread(vllm_server.unload_adapter, "identity")
    obj = await eventually(loading, timeout=30, what="the endpoint back to not Ready")
    assert obj["status"]["adapters"][0]["loadedReplicas"] == 0
