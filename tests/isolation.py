"""Whether this process runs in a private network namespace (only loopback), where servers that bind
every interface (Ray, the Milvus standalone server) may be started. `make test` runs the suite under
scripts/isolated.sh, which provides one."""

from __future__ import annotations

import socket

import pytest


def in_private_network() -> bool:
    return all(name == "lo" for _, name in socket.if_nameindex())


requires_private_network = pytest.mark.skipif(
    not in_private_network(),
    reason="starts a server that binds every interface: run under scripts/isolated.sh (as `make test` does)",
)
