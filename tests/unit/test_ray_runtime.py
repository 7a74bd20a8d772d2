"""A local Ray start that times out is retried after stopping what the failed attempt spawned."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import psutil
import pytest
import ray

from tandem.workloads import ray_runtime


def test_a_timed_out_start_is_retried_and_its_processes_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    spawned: list[subprocess.Popen[bytes]] = []
    calls: list[dict[str, Any]] = []

    def init(**kwargs: Any) -> None:
        calls.append(kwargs)
        if len(calls) == 1:  # like Ray: processes started, then the raylet never registers
            spawned.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
            raise Exception("The current node timed out during startup. This could happen because ...")

    monkeypatch.setattr(ray, "init", init)
    ray_runtime.connect(log_to_driver=False, backoff_seconds=0.0)
    assert len(calls) == 2
    assert all(c["include_dashboard"] is False for c in calls)
    # The failed attempt's leftover was stopped and reaped (so Popen can no longer see its exit code).
    assert not psutil.pid_exists(spawned[0].pid)


def test_other_errors_and_the_last_attempt_are_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    calls: list[int] = []

    def init(**kwargs: Any) -> None:
        calls.append(1)
        raise Exception("The current node timed out during startup.")

    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(Exception, match="timed out"):
        ray_runtime.connect(log_to_driver=False, attempts=2, backoff_seconds=0.0)
    assert len(calls) == 2

    def broken(**kwargs: Any) -> None:
        raise ValueError("bad argument")

    monkeypatch.setattr(ray, "init", broken)
    with pytest.raises(ValueError):
        ray_runtime.connect(log_to_driver=False, backoff_seconds=0.0)


def test_a_cluster_address_is_joined_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(ray, "init", lambda **kw: seen.append(kw))
    ray_runtime.connect(log_to_driver=True)
    assert seen == [{"address": "ray://head:10001", "log_to_driver": True}]
