"""`.tandem/state.json`: what local mode has done and what it runs, so a second `tandem up` resumes.

Written atomically (write, then rename) after every change: an interrupted `tandem up` leaves the last
complete state, never half a file.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def pool_server_name(namespace: str, pool: str, pod: str) -> str:
    """The supervised server that is pod `pod` of ServingPool namespace/pool (a vLLM process)."""
    return f"vllm:{namespace}/{pool}/{pod}"


@dataclass
class Server:
    pid: int
    port: int
    log: str
    fingerprint: str  # what it was started for: a change means a restart
    # processes.identity(pid) when it started: a live PID with another identity is not this server.
    # Empty in state files written before it was recorded (then a live PID answering its port counts).
    identity: str = ""
    # The path answering 200 once it serves (None: its port listening is all it offers to probe).
    health: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class ResourceState:
    kind: str
    namespace: str
    name: str
    fingerprint: str = ""  # inputs last reconciled successfully
    ready: bool = False
    reason: str = "Pending"
    message: str = ""
    # The API's status fields of the kind (what `kubectl get -o yaml` would show for the same work).
    figures: dict[str, Any] = field(default_factory=dict)
    # What only local mode needs about the work (paths, key files, the Milvus server's URL).
    local: dict[str, Any] = field(default_factory=dict)
    updated: float = 0.0


@dataclass
class State:
    path: Path
    servers: dict[str, Server] = field(default_factory=dict)
    resources: dict[str, ResourceState] = field(default_factory=dict)
    # Told of every change of a resource's condition as it happens (not saved): `tandem up` prints it.
    listener: Callable[[ResourceState], None] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def load(cls, directory: Path) -> State:
        path = directory / "state.json"
        state = cls(path)
        if path.exists():
            raw = json.loads(path.read_text())
            state.servers = {k: Server(**v) for k, v in raw.get("servers", {}).items()}
            state.resources = {k: ResourceState(**v) for k, v in raw.get("resources", {}).items()}
        return state

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "servers": {k: asdict(v) for k, v in self.servers.items()},
            "resources": {k: asdict(v) for k, v in self.resources.items()},
        }
        partial = self.path.with_suffix(".json.partial")
        partial.write_text(json.dumps(data, indent=2, sort_keys=True))
        os.replace(partial, self.path)

    def resource(self, kind: str, namespace: str, name: str) -> ResourceState:
        key = f"{kind}/{namespace}/{name}"
        if key not in self.resources:
            self.resources[key] = ResourceState(kind, namespace, name)
        return self.resources[key]

    def set(
        self,
        resource: ResourceState,
        *,
        ready: bool,
        reason: str,
        message: str,
        fingerprint: str | None = None,
        local: dict[str, Any] | None = None,
        **figures: Any,
    ) -> None:
        changed = (resource.ready, resource.reason, resource.message) != (ready, reason, message)
        resource.ready, resource.reason, resource.message = ready, reason, message
        if fingerprint is not None:
            resource.fingerprint = fingerprint
        resource.figures.update(figures)
        resource.local.update(local or {})
        resource.updated = time.time()
        self.save()
        if changed and self.listener is not None:
            self.listener(resource)
