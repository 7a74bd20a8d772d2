"""
Running the emulator in-process: an async context manager and pytest fixtures.

Usage in a test module (or in a conftest.py: ``pytest_plugins = ["tests.emulator.fixtures"]``)::

    from tests.emulator.fixtures import k8s_emulator, k8s_kubeconfig  # noqa: F401  (fixtures)

    async def test_something(k8s_emulator):
        k8s_emulator.install_crds('crds/')
        ...

Or without pytest::

    async with run_emulator(crds=['crds/']) as emulator:
        print(emulator.url)
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import kmock
import pytest
import pytest_asyncio

from tests.emulator.server import Emulator


@contextlib.asynccontextmanager
async def run_emulator(
        *,
        crds: Iterable[str | pathlib.Path | Mapping[str, Any]] = (),
        host: str = '127.0.0.1',
        port: int | None = None,
        **options: Any,
) -> AsyncIterator[Emulator]:
    """
    Start the emulator on ``host:port`` (a free port by default) and yield it; stop it on exit.

    ``options`` go to :class:`Emulator` (``history_size``, ``implicit_namespaces``, ``kopf_peering``, ...).
    """
    emulator = Emulator(**options)
    crd_sources = list(crds)
    if crd_sources:
        emulator.install_crds(*crd_sources)
    async with emulator, kmock.Server(emulator, host=host, port=port):
        try:
            yield emulator
        finally:
            emulator.close_watches()


@pytest_asyncio.fixture()
async def k8s_emulator() -> AsyncIterator[Emulator]:
    """A running emulator on 127.0.0.1 with a free port; built-in kinds and kopf's peering CRDs installed."""
    async with run_emulator() as emulator:
        yield emulator


@pytest.fixture()
def k8s_kubeconfig(k8s_emulator: Emulator, tmp_path: pathlib.Path) -> pathlib.Path:
    """A kubeconfig file pointing to the ``k8s_emulator`` (namespace: default)."""
    return k8s_emulator.write_kubeconfig(tmp_path / 'kubeconfig.yaml')
