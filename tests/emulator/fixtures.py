"""
Running the emulator in-process: an async context manager and pytest fixtures.

Enable in a test module or in the root conftest.py::

    pytest_plugins = ["tests.emulator.fixtures"]

    async def test_something(k8s_emulator):
        k8s_emulator.install_crds("crds/")
        ...

Without pytest, use :func:`tests.emulator.runner.run_emulator`::

    async with run_emulator(crds=["crds/"]) as emulator:
        print(emulator.url)
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.emulator.runner import run_emulator
from tests.emulator.server import Emulator

__all__ = ["k8s_emulator", "k8s_kubeconfig", "run_emulator"]


@pytest_asyncio.fixture()
async def k8s_emulator() -> AsyncIterator[Emulator]:
    """A running emulator on 127.0.0.1 with a free port; built-in kinds and kopf's peering CRDs installed."""
    async with run_emulator() as emulator:
        yield emulator


@pytest.fixture()
def k8s_kubeconfig(k8s_emulator: Emulator, tmp_path: pathlib.Path) -> pathlib.Path:
    """A kubeconfig file pointing to the ``k8s_emulator`` (namespace: default)."""
    return k8s_emulator.write_kubeconfig(tmp_path / "kubeconfig.yaml")
