"""The operator as its own process (as the chart runs it): kubeconfig login, probes, metrics, peering."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from tests.emulator.server import Emulator
from tests.integration.conftest import eventually
from tests.manifests import ROOT

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OperatorProcess:
    process: subprocess.Popen[bytes]
    health: str
    metrics: str
    log: Path

    async def reconciles(self) -> float:
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(self.metrics)).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("tandem_reconciles_total{")
        )


@pytest_asyncio.fixture()
async def start_operator(emulator: Emulator, tmp_path: Path) -> AsyncIterator[object]:
    kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig")
    started: list[OperatorProcess] = []

    async def start(name: str) -> OperatorProcess:
        health, metrics = free_port(), free_port()
        log = tmp_path / f"{name}.log"
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}",
            "TANDEM_RESYNC_SECONDS": "2",
        }
        env.pop("TANDEM_KUBE_SERVER", None)  # log in through the kubeconfig, as `kopf run` would
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tandem.platform.kubernetes",
                "--health",
                f"http://127.0.0.1:{health}/healthz",
                "--metrics-port",
                str(metrics),
                "--metrics-host",
                "127.0.0.1",
                "--peering",
                "tandem",
            ],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        op = OperatorProcess(
            process, f"http://127.0.0.1:{health}/healthz", f"http://127.0.0.1:{metrics}/metrics", log
        )
        started.append(op)
        return op

    yield start
    for op in started:
        op.process.send_signal(signal.SIGTERM)
    for op in started:
        try:
            await asyncio.to_thread(op.process.wait, 20)
        except subprocess.TimeoutExpired:
            op.process.kill()


async def probe(url: str) -> int:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(url)).status_code
    except httpx.HTTPError:
        return 0


async def test_two_replicas_never_both_act(
    emulator: Emulator, api: httpx.AsyncClient, start_operator: object
) -> None:
    # The peering object is created with the operator (the chart does); kopf only updates its status.
    emulator.create(
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "tandem"}}
    )
    first = await start_operator("first")  # type: ignore[operator]
    second = await start_operator("second")  # type: ignore[operator]
    for op in (first, second):
        await eventually(lambda op=op: probe(op.health), timeout=60, what=f"{op.log.stem} liveness endpoint")
    await eventually(
        lambda: (
            len(emulator.list("kopf.dev/v1/clusterkopfpeerings")) == 1
            and len(emulator.list("kopf.dev/v1/clusterkopfpeerings")[0].get("status") or {}) >= 2
        ),
        timeout=30,
        what="both replicas to announce themselves in the peering object",
    )
    kb = {
        "apiVersion": "tandem.dev/v1alpha1",
        "kind": "KnowledgeBase",
        "metadata": {"name": "docs", "namespace": "default"},
        "spec": {"sources": [{"name": "a", "inline": {"documents": [{"id": "1", "text": "hello"}]}}]},
    }
    response = await api.post("/apis/tandem.dev/v1alpha1/namespaces/default/knowledgebases", json=kb)
    assert response.status_code == 201
    await eventually(lambda: emulator.list("jobs", "default"), timeout=30, what="the ingest Job")
    await asyncio.sleep(5)  # resync periods pass; a paused replica must still do nothing
    counts = sorted([await first.reconciles(), await second.reconciles()])
    assert counts[0] == 0 and counts[1] > 0, f"reconciles per replica: {counts}"
    # And the acting one reports its work in the Prometheus metrics.
    async with httpx.AsyncClient(timeout=5) as client:
        texts = [(await client.get(op.metrics)).text for op in (first, second)]
    assert any('tandem_api_writes_total{kind="Job",verb="apply"}' in text for text in texts)
