"""HybridEndpoint status counts an adapter loaded on a pod only if that pod's /v1/models lists it from the
expected path (the path carries the version)."""

from __future__ import annotations

from typing import Any

from tandem.platform.kubernetes.adapters import adapter_statuses, pod_ready


def pod(ip: str | None = "10.0.0.1", ready: str = "True", deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "p"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": ready}]}}


def test_only_ready_pods_with_an_ip_that_are_not_terminating_are_asked() -> None:
    assert pod_ready(pod())
    assert not pod_ready(pod(ready="False"))
    assert not pod_ready(pod(ip=None))
    assert not pod_ready(pod(deleting=True))


def test_an_adapter_is_ready_when_every_ready_pod_serves_its_current_path() -> None:
    expected = [
        {"name": "style", "path": "/adapters/style-v2", "version": "v2"},
        {"name": "raft", "path": "/adapters/raft-v1", "version": None},
    ]
    observed = [
        {"style": "/adapters/style-v2", "raft": "/adapters/raft-v1"},
        {"style": "/adapters/style-v1"},  # still the previous version
    ]
    assert adapter_statuses(expected, observed) == [
        {"name": "style", "loadedReplicas": 1, "ready": False, "version": "v2"},
        {"name": "raft", "loadedReplicas": 1, "ready": False},
    ]
    assert adapter_statuses(expected, observed[:1])[0]["ready"] is True
    assert adapter_statuses(expected, [])[0] == {
        "name": "style",
        "loadedReplicas": 0,
        "ready": False,
        "version": "v2",
    }
