"""Fixtures that run the operator in-process against the API emulator.

What the emulator does not do, and these tests therefore do not cover: it runs no controllers (no
pods start; `tests.cluster_controllers` reports Jobs/RayJobs/Deployments finished, as their controllers
would), no admission webhooks, no RBAC, and server-side apply is a merge of the applied fields without
managedFields (see tests/emulator/README.md).
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio

# Read when the handlers module registers its resync timer: short, so drift repair shows in seconds.
os.environ.setdefault("TANDEM_RESYNC_SECONDS", "2")

import kopf

from tandem.platform.kubernetes.api import KubeApi
from tests.emulator.runner import run_emulator
from tests.emulator.server import Emulator, load_manifests
from tests.integration.vllm_server import (  # noqa: F401  (session fixtures: one vLLM for the whole suite)
    identity_adapter_fixture,
    vllm_fixture,
    vllm_server_fixture,
)
from tests.manifests import CRDS, ROOT

UPSTREAM = ROOT / "tests" / "emulator" / "upstream"


@functools.cache
def _crd_documents() -> tuple[dict[str, Any], ...]:
    # Parsed once per session: KubeRay's RayJob CRD alone is 1.4 MB of YAML.
    return tuple(load_manifests(CRDS, UPSTREAM))


@pytest.fixture(scope="session")
def embedder() -> Any:
    """all-MiniLM-L6-v2 from its Python package, loaded once for the session (about 7 s)."""
    from tandem.workloads.knowledge.embedding import Embedder

    return Embedder("all-MiniLM-L6-v2")


@pytest_asyncio.fixture()
async def emulator() -> AsyncIterator[Emulator]:
    async with run_emulator(crds=_crd_documents()) as emu:
        yield emu


@pytest_asyncio.fixture()
async def api(emulator: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=emulator.url, timeout=10) as client:
        yield client


@pytest_asyncio.fixture()
async def kube(emulator: Emulator) -> AsyncIterator[KubeApi]:
    """The operator's own API client against the emulator, for tests that drive the Reconciler directly."""
    client = await KubeApi.connect(emulator.url)
    try:
        yield client
    finally:
        await client.close()


@pytest_asyncio.fixture()
async def operator(emulator: Emulator, monkeypatch: Any) -> AsyncIterator[None]:
    """The Tandem operator (kopf, all namespaces, standalone) running in this event loop."""
    monkeypatch.setenv("TANDEM_KUBE_SERVER", emulator.url)
    from tandem.platform.kubernetes import handlers  # noqa: F401  (registers handlers)

    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(clusterwide=True, standalone=True, ready_flag=ready, stop_flag=stop)
    )
    await asyncio.wait_for(ready.wait(), 30)
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 30)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()


async def eventually(
    check: Callable[[], Awaitable[Any]] | Callable[[], Any], timeout: float = 20.0, what: str = ""
) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}: last={last!r}")


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}
