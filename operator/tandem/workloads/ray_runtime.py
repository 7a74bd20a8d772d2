"""Joining Ray from a workload: the cluster KubeRay gives a RayJob, or a Ray instance started here.

In a RayJob, KubeRay sets RAY_ADDRESS for the entrypoint and this only connects. Locally (`tandem up`,
tests), `ray.init()` starts a head node in this process's tree. Ray waits a fixed 30 s for its raylet to
register and cannot be told to wait longer; on a loaded 2-core machine that wait has run out (seen in CI),
so a local start is retried, after stopping the processes the failed attempt left behind, and starts
without the dashboard, which no workload reads and which costs the most CPU while the node starts.
"""

from __future__ import annotations

import logging
import os
import time

import psutil

log = logging.getLogger(__name__)

STARTUP_TIMEOUT = "timed out during startup"  # what Ray's exception says when the raylet did not register


def connect(log_to_driver: bool, attempts: int = 3, backoff_seconds: float = 5.0) -> None:
    import ray

    address = os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=log_to_driver)
        return
    for attempt in range(1, attempts + 1):
        before = _children()
        try:
            ray.init(include_dashboard=False, log_to_driver=log_to_driver)
            return
        except Exception as e:
            if STARTUP_TIMEOUT not in str(e) or attempt == attempts:
                raise
            log.warning("local Ray did not start (attempt %d of %d): %s; retrying", attempt, attempts, e)
            _stop(_children() - before)
            time.sleep(backoff_seconds * attempt)


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _stop(pids: set[int]) -> None:
    """Stop the processes one failed start spawned (this process's own children, by pid)."""
    procs = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            proc.terminate()
            procs.append(proc)
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=10)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
