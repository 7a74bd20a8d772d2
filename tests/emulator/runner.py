"""Running the emulator on a TCP port in-process: :func:`run_emulator`."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import kmock

from tests.emulator.server import Emulator


@contextlib.asynccontextmanager
async def run_emulator(
    *,
    crds: Iterable[str | pathlib.Path | Mapping[str, Any]] = (),
    host: str = "127.0.0.1",
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
