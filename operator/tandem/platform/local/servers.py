"""The long-running servers local mode supervises (milvus-lite, vLLM, gateways): started once, reused
while they run and answer for the same inputs, restarted when their inputs change or when they are found
stopped, crashed or unresponsive, stopped by PID (and only when the PID is still the process we started).

`check` is what a server's health is now, observed: the recorded PID alive and still the process that
was started (its identity, not just the number), and its health URL (or port) answering."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import processes
from .runner import WorkFailed
from .state import Server, State

PROBE_TIMEOUT = 5.0  # seconds a server's health check may take before it counts as not answering


@dataclass(frozen=True)
class Health:
    ok: bool  # ours, running and answering
    running: bool  # the process we started is alive (perhaps not answering)
    detail: str  # what was observed, for status messages

    def __str__(self) -> str:
        return self.detail


def check(server: Server) -> Health:
    """The server's health, observed now."""
    if not processes.alive(server.pid):
        return Health(False, False, f"pid {server.pid} is not running")
    if server.identity and processes.identity(server.pid) != server.identity:
        return Health(False, False, f"pid {server.pid} is another process now (ours exited)")
    if server.health is None:
        if processes.listening(server.port, PROBE_TIMEOUT):
            return Health(True, True, f"pid {server.pid} listening on {server.port}")
        problem = f"nothing listens on {server.url}"
    else:
        answer = processes.answers(f"{server.url}{server.health}", PROBE_TIMEOUT)
        if answer is None:
            return Health(True, True, f"pid {server.pid} answering at {server.url}{server.health}")
        problem = answer
    if not server.identity:  # recorded before identities were: a live PID that does not answer is not ours
        return Health(False, False, f"pid {server.pid}: {problem}")
    return Health(False, True, f"pid {server.pid} runs but {problem}")


class Supervisor:
    def __init__(self, state: State, directory: Path) -> None:
        self.state = state
        self.dir = directory

    def check(self, name: str) -> Health | None:
        """The health of the server `name` now (None: none is recorded)."""
        server = self.state.servers.get(name)
        return None if server is None else check(server)

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
        on_restart: Callable[[str], None] | None = None,
    ) -> Server:
        """The server `name` running and answering for `fingerprint`: reused if it is, (re)started if not.
        `ready` is the path that answers 200 once it serves (None: once its port listens); `port` the one
        to prefer when none is recorded (a recorded port is kept while it is free, so URLs stay the same).
        `on_restart` hears why a recorded server is being replaced."""
        existing = self.state.servers.get(name)
        if existing is not None:
            health = check(existing)
            if health.ok and existing.fingerprint == fingerprint:
                return existing
            if health.running:  # ours: for other inputs, or not answering
                processes.stop(existing.pid)
            # Not ours any more (exited, or the PID is another program's now): nothing to stop.
            if on_restart is not None:
                on_restart(
                    f"{name} {health.detail}: restarting it"
                    if not health.ok
                    else f"{name}: its inputs changed: restarting it"
                )
        candidates = [p for p in ((existing.port if existing else None), port) if p]
        chosen = next((p for p in candidates if processes.port_free(p)), None) or processes.free_port()
        log = self.dir / "logs" / f"{name.replace(':', '-').replace('/', '-')}.log"
        pid = processes.start(argv(chosen), log, env)
        server = Server(
            pid=pid,
            port=chosen,
            log=str(log),
            fingerprint=fingerprint,
            identity=processes.identity(pid) or "",
            health=ready,
        )
        self.state.servers[name] = server
        self.state.save()
        if ready is None:
            _wait_port(server, timeout, name)
        else:
            try:
                processes.wait_ready(f"{server.url}{ready}", pid, log, timeout, name)
            except processes.ServerFailed as e:
                raise WorkFailed("ServerFailed", str(e)) from None
        return server

    def stop(self, name: str) -> None:
        """Stop the server `name` if it is still the process we started; its record (and port) stays for
        `ensure` to start it again."""
        server = self.state.servers.get(name)
        if server is not None and check(server).running:
            processes.stop(server.pid)

    def stop_all(self) -> list[str]:
        """Stop every server that is still the process we started; forget the others (never stopped:
        their PID may be another program's now)."""
        stopped = []
        for name, server in list(self.state.servers.items()):
            if processes.alive(server.pid) and (
                not server.identity or processes.identity(server.pid) == server.identity
            ):
                processes.stop(server.pid)
                stopped.append(f"{name} (pid {server.pid})")
            else:
                stopped.append(f"{name} (pid {server.pid} was not running; nothing to stop)")
            del self.state.servers[name]
        self.state.save()
        return stopped


def _wait_port(server: Server, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not processes.alive(server.pid):
            raise WorkFailed("ServerFailed", f"{what} exited: {processes.log_tail(Path(server.log))}")
        if processes.listening(server.port, 1.0):
            return
        time.sleep(0.3)
    raise WorkFailed("ServerFailed", f"{what} did not listen on {server.port} in {timeout:.0f}s")
