"""The long-running servers local mode supervises (milvus-lite, vLLM, gateways): started once, reused
while they run for the same inputs, restarted when their inputs change, stopped by PID."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from . import processes
from .runner import WorkFailed
from .state import Server, State


class Supervisor:
    def __init__(self, state: State, directory: Path) -> None:
        self.state = state
        self.dir = directory

    def ensure(
        self,
        name: str,
        fingerprint: str,
        argv: Callable[[int], list[str]],
        *,
        ready: str | None,
        timeout: float,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> Server:
        """The server `name` running for `fingerprint`: reused if it is, (re)started if not. `ready` is the
        path that answers 200 once it serves (None: once its port listens)."""
        existing = self.state.servers.get(name)
        if existing is not None and processes.alive(existing.pid):
            if existing.fingerprint == fingerprint:
                return existing
            processes.stop(existing.pid)
        port = (existing.port if existing else None) or port or processes.free_port()
        log = self.dir / "logs" / f"{name.replace(':', '-').replace('/', '-')}.log"
        pid = processes.start(argv(port), log, env)
        server = Server(pid=pid, port=port, log=str(log), fingerprint=fingerprint)
        self.state.servers[name] = server
        self.state.save()
        if ready is None:
            _wait_port(server, timeout, name)
        else:
            processes.wait_ready(f"{server.url}{ready}", pid, log, timeout, name)
        return server

    def stop_all(self) -> list[str]:
        stopped = []
        for name, server in list(self.state.servers.items()):
            processes.stop(server.pid)
            stopped.append(f"{name} (pid {server.pid})")
            del self.state.servers[name]
        self.state.save()
        return stopped


def _wait_port(server: Server, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not processes.alive(server.pid):
            raise WorkFailed("ServerFailed", f"{what} exited: {processes.log_tail(Path(server.log))}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", server.port)) == 0:
                return
        time.sleep(0.3)
    raise WorkFailed("ServerFailed", f"{what} did not listen on {server.port} in {timeout:.0f}s")
