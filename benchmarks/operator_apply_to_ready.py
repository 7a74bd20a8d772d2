#!/usr/bin/env python3
"""Operator benchmark against the API emulator: apply -> Ready, steady-state writes, and a floor.

One run measures, for N KnowledgeBases (examples/basic/10-knowledgebase.yaml, renamed, spread over
a few namespaces):

1. apply -> Ready: all N are POSTed through the emulator's HTTP API as fast as a small pool of
   concurrent requests allows, while a watch-driven stand-in for the Job controller reports each
   ingest Job Complete 0.5 s after it appears. Per resource we time apply -> ingest Job created,
   Job Complete -> Ready and apply -> Ready, and count the API writes the operator (kopf included) made.
2. restart: a second operator process (short resync) resumes the N Ready resources; no writes expected.
3. steady state: the write counts are reset and that process runs for at least two resync periods,
   until every resource was reconciled at least twice; writes / reconcile should be zero.
4. a floor: on a fresh emulator without the operator, the same N KnowledgeBases and the same children
   (built by the operator's own planner) are written directly with the fewest requests possible, and
   their status patched to Ready once.

The emulator runs in this process (so its write log and request log can be read exactly); the operator
runs as its own process, as it does in a cluster. See benchmarks/README.md for what the numbers mean.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import datetime
import functools
import hashlib
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from tests.emulator.fixtures import run_emulator  # noqa: E402
from tests.emulator.server import Emulator  # noqa: E402
from tests.manifests import CRDS, example  # noqa: E402

from tandem.api.v1alpha1 import KnowledgeBaseSpec  # noqa: E402
from tandem.platform.kubernetes.conditions import Outcome, conditions_for, is_ready  # noqa: E402
from tandem.platform.kubernetes.ownership import Owner  # noqa: E402
from tandem.platform.kubernetes.planners.knowledgebase import plan_knowledge_base  # noqa: E402
from tandem.platform.kubernetes.settings import OperatorSettings  # noqa: E402

UPSTREAM_CRDS = ROOT / "tests" / "emulator" / "upstream"
KB_PLURAL = "knowledgebases.tandem.dev"
KB_API = "/apis/tandem.dev/v1alpha1"
MERGE = {"Content-Type": "application/merge-patch+json"}
MANAGED = "app.kubernetes.io/managed-by=tandem"
CREATE_CONCURRENCY = 32  # in-flight POSTs while applying; the emulator serialises them anyway
JOB_RUN_SECONDS = 0.5  # how long an ingest Job "runs" before the stand-in Job controller reports Complete
READY_TIMEOUT = 180.0
# A real apiserver keeps minutes of watch history; the emulator's default (1000 events per resource) can
# run out during a 200-object burst and force kopf into 410-Gone relists that no cluster would see.
HISTORY_SIZE = 20_000


# ---------------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation: every reported value was actually observed)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": max(values, default=math.nan),
        "mean": statistics.fmean(values) if values else math.nan,
    }


def write_key(method: str, path: str) -> str:
    """`PATCH knowledgebases.tandem.dev/status` from a request line: what was written, and how."""
    segs = [s for s in path.split("?", 1)[0].split("/") if s]
    group, rest = ("", segs[2:]) if segs[0] == "api" else (segs[1], segs[3:])
    if rest[0] == "namespaces" and len(rest) >= 3 and not (group == "" and rest[2] in ("status", "finalize")):
        rest = rest[2:]  # drop namespaces/<ns>/, unless the path is a Namespace's own subresource
    resource = f"{rest[0]}.{group}" if group else rest[0]
    sub = f"/{rest[2]}" if len(rest) > 2 else ""
    return f"{method} {resource}{sub}"


@functools.cache
def _template() -> dict[str, Any]:
    # Loaded once: `example()` parses every YAML file of examples/basic per call, and this process
    # also runs the emulator, so 200 parses would slow the API server down during the burst.
    return example("KnowledgeBase")


def knowledge_base(namespace: str, name: str) -> dict[str, Any]:
    kb = copy.deepcopy(_template())
    kb["metadata"] = {"name": name, "namespace": namespace}
    return kb


def layout(count: int, namespaces: int) -> list[tuple[str, str]]:
    """(namespace, name) of every KnowledgeBase, round-robin over the namespaces."""
    return [(f"bench-{i % namespaces}", f"kb-{i:04d}") for i in range(count)]


# ---------------------------------------------------------------------------------------------------
# What the emulator saw: writes (from its write log) and reads (from kmock's request log)
# ---------------------------------------------------------------------------------------------------


@dataclass
class Writes:
    by_key: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)  # non-2xx answers (conflicts, invalid, ...)
    status_patches_per_kb: Counter[tuple[str, str]] = field(default_factory=Counter)

    @classmethod
    def from_log(cls, log: Iterable[tuple[str, str, int]]) -> Writes:
        writes = cls()
        for method, path, status in log:
            key = write_key(method, path)
            writes.by_key[key] += 1
            if not 200 <= status < 300:
                writes.failed[f"{key} -> {status}"] += 1
            if key == f"PATCH {KB_PLURAL}/status":
                segs = path.split("?", 1)[0].split("/")
                writes.status_patches_per_kb[(segs[5], segs[7])] += 1
        return writes

    def minus(self, driver: Counter[str]) -> Counter[str]:
        """What is left once the benchmark's own writes (user creates, the Job controller) are removed."""
        left = Counter(self.by_key)
        left.subtract(driver)
        if any(v < 0 for v in left.values()):
            raise AssertionError(f"the emulator saw fewer writes than the benchmark made: {left}")
        return +left


def reads_by_resource(emulator: Emulator, since: int) -> tuple[Counter[str], Counter[tuple[str, str]]]:
    """GETs after request number `since`, by resource; and ConfigMap lists per KnowledgeBase.

    Every reconciliation of a KnowledgeBase lists its ConfigMaps by the owner's name label, so the
    second counter says how often each resource was reconciled, independently of the operator's metrics.
    """
    reads: Counter[str] = Counter()
    per_kb: Counter[tuple[str, str]] = Counter()
    for request in list(emulator)[since:]:
        if request.method != "GET" or "watch" in request.params:
            continue
        reads[write_key("GET", request.url.path).removeprefix("GET ")] += 1
        selector = request.params.get("labelSelector", "")
        if request.url.path.endswith("/configmaps") and "tandem.dev/name=" in selector:
            name = selector.split("tandem.dev/name=", 1)[1].split(",", 1)[0]
            per_kb[(request.url.path.split("/")[4], name)] += 1
    return reads, per_kb


# ---------------------------------------------------------------------------------------------------
# The operator process and its metrics
# ---------------------------------------------------------------------------------------------------


# Prometheus samples: (sample name, sorted labels) -> value.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class OperatorProcess:
    process: asyncio.subprocess.Process
    metrics_url: str
    log_path: Path

    async def scrape(self, client: httpx.AsyncClient) -> Samples:
        text = (await client.get(self.metrics_url)).text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def log_records(self, skip: int = 0) -> list[dict[str, Any]]:
        """The operator's log after line `skip`: kopf logs one JSON object per line."""
        lines = self.log_path.read_text(errors="replace").splitlines()[skip:]
        return [
            json.loads(line) if line.startswith("{") else {"severity": "raw", "message": line}
            for line in lines
        ]

    def cpu_seconds(self) -> float:
        """User + system CPU time of the operator process so far (Linux /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def operator_process(url: str, resync: float, log_path: Path) -> AsyncIterator[OperatorProcess]:
    """`python -m tandem.platform.kubernetes` against the emulator; stopped by its PID on exit."""
    health = f"http://127.0.0.1:{free_port()}/healthz"
    metrics_port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}",
        "TANDEM_KUBE_SERVER": url,
        "TANDEM_RESYNC_SECONDS": str(resync),
    }
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tandem.platform.kubernetes", "--health", health,
            "--metrics-port", str(metrics_port), "--metrics-host", "127.0.0.1", "--peering", "",
            cwd=ROOT, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield OperatorProcess(process, f"http://127.0.0.1:{metrics_port}/metrics", log_path)
    finally:
        await stop_process(process)


async def stop_process(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), 20)
    except TimeoutError:
        process.kill()
        await process.wait()


async def wait_until_watching(emulator: Emulator, operator: OperatorProcess, timeout: float = 60.0) -> float:
    """Until kopf has opened its KnowledgeBase watch, so the clock does not include its start-up."""
    started = time.monotonic()
    since = len(list(emulator))  # an earlier operator's watch does not count
    while time.monotonic() - started < timeout:
        if operator.process.returncode is not None:
            raise RuntimeError(f"the operator exited with {operator.process.returncode}: {operator.log_path}")
        requests = list(emulator)[since:]
        if any(r.params.get("watch") == "true" and r.url.path.endswith("/knowledgebases") for r in requests):
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the operator did not watch knowledgebases within {timeout}s: {operator.log_path}")


@dataclass(frozen=True)
class CpuSnapshot:
    """Wall clock and CPU time of the operator and of this process (the emulator and the benchmark)."""

    wall: float
    operator: float
    emulator: float
    machine: float  # all CPUs, all processes: to see what else ran on the machine meanwhile

    @classmethod
    def take(cls, operator: OperatorProcess) -> CpuSnapshot:
        return cls(time.monotonic(), operator.cpu_seconds(), time.process_time(), machine_busy_seconds())

    def since(self, before: CpuSnapshot) -> dict[str, float]:
        wall = self.wall - before.wall
        operator, emulator = self.operator - before.operator, self.emulator - before.emulator
        return {
            "wall_seconds": wall,
            "operator_cpu_seconds": operator,
            "emulator_and_benchmark_cpu_seconds": emulator,
            "operator_cpu_share": operator / wall if wall else math.nan,
            "other_processes_cpu_seconds": max(0.0, self.machine - before.machine - operator - emulator),
        }


def machine_busy_seconds() -> float:
    """Non-idle CPU time of the whole machine (Linux /proc/stat: user nice system idle iowait irq ...)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # up to steal, without idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def log_problems(records: list[dict[str, Any]]) -> dict[str, int]:
    """Log lines above info, by severity and message."""
    problems = Counter(
        f"{r.get('severity')}: {str(r.get('message', ''))[:160]}"
        for r in records
        if r.get("severity") not in ("debug", "info")
    )
    return dict(problems.most_common(20))


def handler_runs(records: list[dict[str, Any]]) -> dict[str, int]:
    """How often each kopf handler / timer finished, from kopf's "Handler 'x' succeeded." lines.

    `reconcile-knowledgebase` is the create/update/resume handler: more runs than resources means
    kopf handled a creation twice.
    """
    runs = Counter(
        str(r["message"]).split("'")[1]
        for r in records
        if str(r.get("message", "")).endswith("' succeeded.")
        and str(r["message"]).startswith(("Handler", "Timer"))
    )
    return dict(runs.most_common())


def metric_delta(before: Samples, after: Samples, name: str, **match: str) -> dict[str, float]:
    """after - before of one metric's samples that carry `match`, keyed by their remaining labels."""
    result: dict[str, float] = {}
    for (sample, labels), value in after.items():
        label_map = dict(labels)
        if sample != name or any(label_map.get(k) != v for k, v in match.items()):
            continue
        rest = ",".join(f"{k}={v}" for k, v in labels if k not in match) or "all"
        delta = value - before.get((sample, labels), 0.0)
        if delta:
            result[rest] = result.get(rest, 0.0) + delta
    return result


def reconcile_figures(before: Samples, after: Samples) -> dict[str, Any]:
    kind = {"kind": "KnowledgeBase"}
    seconds = sum(metric_delta(before, after, "tandem_reconcile_duration_seconds_sum", **kind).values())
    count = sum(metric_delta(before, after, "tandem_reconcile_duration_seconds_count", **kind).values())
    return {
        "reconciles_by_outcome": metric_delta(before, after, "tandem_reconciles_total", **kind),
        "reconciles": sum(metric_delta(before, after, "tandem_reconciles_total", **kind).values()),
        "reconcile_errors": metric_delta(before, after, "tandem_reconcile_errors_total"),
        "reconcile_seconds_mean": seconds / count if count else math.nan,
        "reconcile_seconds_p95_le": histogram_p95(before, after),
        "operator_writes_metric": metric_delta(before, after, "tandem_api_writes_total"),
    }


def histogram_p95(before: Samples, after: Samples) -> float:
    """The upper bound of the histogram bucket holding the 95th percentile reconcile duration."""
    buckets = metric_delta(before, after, "tandem_reconcile_duration_seconds_bucket", kind="KnowledgeBase")
    cumulative = sorted((float(k.removeprefix("le=")), v) for k, v in buckets.items())
    total = cumulative[-1][1] if cumulative else 0.0
    return next((le for le, v in cumulative if v >= 0.95 * total), math.nan) if total else math.nan


# ---------------------------------------------------------------------------------------------------
# Phase 1: apply -> Ready
# ---------------------------------------------------------------------------------------------------


@dataclass
class Timeline:
    applied: float = math.nan
    job_created: float = math.nan
    job_completed: float = math.nan
    ready: float = math.nan
    ready_lost: int = 0  # Ready True -> not True again (a flap): should never happen here


EventHandler = Callable[[str, dict[str, Any], float], None]  # (event type, object, monotonic time)


@contextlib.asynccontextmanager
async def watch(
    client: httpx.AsyncClient, path: str, params: dict[str, str], handler: EventHandler
) -> AsyncIterator[None]:
    """A cluster-wide watch through the HTTP API, fed to `handler` by a task while the context is open.

    Returns once the server has answered, so nothing created afterwards can be missed.
    """
    params = {**params, "watch": "true"}
    async with client.stream("GET", path, params=params, timeout=None) as response:
        response.raise_for_status()

        async def consume() -> None:
            async for line in response.aiter_lines():
                if line:
                    event = json.loads(line)
                    handler(event["type"], event["object"], time.monotonic())

        task = asyncio.create_task(consume())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class Tracker:
    """Timestamps from HTTP watches on KnowledgeBases and Tandem Jobs, as `kubectl wait` would see them.

    Watching through the API (not the emulator's internals) costs one more watcher's serialisation, the
    same as any other client; it keeps the benchmark independent of how the emulator stores objects.
    """

    def __init__(self, client: httpx.AsyncClient, keys: list[tuple[str, str]]) -> None:
        self.client = client
        self.timelines = {key: Timeline() for key in keys}
        self.all_ready = asyncio.Event()
        self._pending = set(keys)

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[Tracker]:
        async with (
            watch(self.client, f"{KB_API}/knowledgebases", {}, self._on_knowledge_base),
            watch(self.client, "/apis/batch/v1/jobs", {"labelSelector": MANAGED}, self._on_job),
        ):
            yield self

    def _on_knowledge_base(self, event_type: str, obj: dict[str, Any], now: float) -> None:
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        timeline = self.timelines.get(key)
        if timeline is None or event_type not in ("ADDED", "MODIFIED"):
            return
        if is_ready(obj):
            if math.isnan(timeline.ready):
                timeline.ready = now
                self._pending.discard(key)
                if not self._pending:
                    self.all_ready.set()
        elif not math.isnan(timeline.ready):
            timeline.ready_lost += 1

    def _on_job(self, event_type: str, obj: dict[str, Any], now: float) -> None:
        meta = obj["metadata"]
        timeline = self.timelines.get((meta["namespace"], meta.get("labels", {}).get("tandem.dev/name", "")))
        if timeline is None:
            return
        if event_type == "ADDED" and math.isnan(timeline.job_created):
            timeline.job_created = now
        if math.isnan(timeline.job_completed) and job_finished(obj):
            timeline.job_completed = now


def job_finished(job: dict[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)


def completed_job_status() -> dict[str, Any]:
    """What the Job controller reports for a Job whose pod succeeded (as tests.cluster_controllers does)."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "startTime": now,
        "completionTime": now,
        "succeeded": 1,
        "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": now}],
    }


class JobController:
    """Plays the Job controller: each Tandem Job that appears reports Complete JOB_RUN_SECONDS later.

    Watch-driven like the real one. `tests.cluster_controllers.finish_jobs` polls instead, listing
    every Job of a namespace per sweep: in this process that would put a load on the emulator that a
    real Job controller (an informer) does not put on an apiserver, and make the Job's run time
    depend on the sweep period.
    """

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.patched = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[JobController]:
        try:
            async with watch(self.client, "/apis/batch/v1/jobs", {"labelSelector": MANAGED}, self._on_job):
                yield self
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_job(self, event_type: str, obj: dict[str, Any], _: float) -> None:
        if event_type == "ADDED" and not job_finished(obj):
            task = asyncio.create_task(self._complete(obj["metadata"]["namespace"], obj["metadata"]["name"]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _complete(self, namespace: str, name: str) -> None:
        await asyncio.sleep(JOB_RUN_SECONDS)
        path = f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}/status"
        response = await self.client.patch(path, json={"status": completed_job_status()}, headers=MERGE)
        if response.status_code != 404:  # a Job pruned meanwhile is no failure of the benchmark
            response.raise_for_status()
            self.patched += 1


@contextlib.asynccontextmanager
async def api_latency_probe(client: httpx.AsyncClient, period: float = 0.2) -> AsyncIterator[list[float]]:
    """Round trips of a trivial GET every `period` s: how long any request waits in the emulator's queue.

    When this is high while neither process uses a full core, the time goes to waiting in line at
    the (single-threaded) API server, which is what every reconcile's sequential requests pay too.
    """
    samples: list[float] = []

    async def loop() -> None:
        while True:
            started = time.monotonic()
            (await client.get("/api/v1/namespaces/default")).raise_for_status()
            samples.append(time.monotonic() - started)
            await asyncio.sleep(period)

    task = asyncio.create_task(loop())
    try:
        yield samples
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def create_namespaces(client: httpx.AsyncClient, keys: list[tuple[str, str]]) -> None:
    for namespace in sorted({ns for ns, _ in keys}):
        response = await client.post("/api/v1/namespaces", json={"metadata": {"name": namespace}})
        if response.status_code != 409:
            response.raise_for_status()


async def create_all(
    client: httpx.AsyncClient, keys: list[tuple[str, str]], tracker: Tracker
) -> Counter[str]:
    """POST every KnowledgeBase with CREATE_CONCURRENCY requests in flight; count the writes."""
    written: Counter[str] = Counter()
    gate = asyncio.Semaphore(CREATE_CONCURRENCY)

    async def create(namespace: str, name: str) -> None:
        async with gate:
            tracker.timelines[(namespace, name)].applied = time.monotonic()
            path = f"{KB_API}/namespaces/{namespace}/knowledgebases"
            (await client.post(path, json=knowledge_base(namespace, name))).raise_for_status()
            written[write_key("POST", path)] += 1

    await asyncio.gather(*(create(ns, name) for ns, name in keys))
    return written


def event_driven_runs(operator: OperatorProcess) -> int:
    """kopf handler runs other than the resync timer: create/update handling and children's events."""
    return sum(
        n for name, n in handler_runs(operator.log_records()).items() if not name.startswith("resync-")
    )


async def settle(
    emulator: Emulator, operator: OperatorProcess, quiet: float = 2.0, limit: float = 30.0
) -> float:
    """Wait until neither a write nor an event-driven handler run happened for `quiet` seconds.

    Everything Ready does not mean the operator is done: kopf may still be working through a backlog
    of the children's events (each a reconcile, usually without writes). That tail belongs to phase 1,
    not to the steady state measured next.
    """
    started = last_change = time.monotonic()
    seen = (len(emulator.writes_log), event_driven_runs(operator))
    while time.monotonic() - last_change < quiet and time.monotonic() - started < limit:
        await asyncio.sleep(0.25)
        now = (len(emulator.writes_log), event_driven_runs(operator))
        if now != seen:
            seen, last_change = now, time.monotonic()
    return time.monotonic() - started


async def events_by_reason(client: httpx.AsyncClient) -> dict[str, int]:
    """Kubernetes Events in the cluster, by the kind they are about and their reason."""
    items = (await client.get("/api/v1/events")).raise_for_status().json()["items"]
    reasons = Counter(f"{e.get('involvedObject', {}).get('kind', '?')}/{e.get('reason', '?')}" for e in items)
    return dict(reasons.most_common())


async def count_ready(client: httpx.AsyncClient, keys: list[tuple[str, str]]) -> int:
    items = (await client.get(f"{KB_API}/knowledgebases")).raise_for_status().json()["items"]
    wanted = set(keys)
    return sum(
        1 for kb in items if (kb["metadata"]["namespace"], kb["metadata"]["name"]) in wanted and is_ready(kb)
    )


def latency_figures(timelines: Mapping[tuple[str, str], Timeline]) -> dict[str, dict[str, float]]:
    values = list(timelines.values())
    return {
        "apply_to_ready": summary([t.ready - t.applied for t in values]),
        "apply_to_job_created": summary([t.job_created - t.applied for t in values]),
        "job_complete_to_ready": summary([t.ready - t.job_completed for t in values]),
    }


async def phase_apply_to_ready(
    emulator: Emulator, operator: OperatorProcess, client: httpx.AsyncClient, keys: list[tuple[str, str]]
) -> dict[str, Any]:
    count = len(keys)
    await create_namespaces(client, keys)
    metrics_before = await operator.scrape(client)
    emulator.reset_write_counts()
    first_request = len(list(emulator))
    first_log_line = len(operator.log_records())
    cpu_before = CpuSnapshot.take(operator)
    async with (
        Tracker(client, keys).watching() as tracker,
        JobController(client).running() as jobs,
        api_latency_probe(client) as probe,
    ):
        started = time.monotonic()
        driver = await create_all(client, keys, tracker)
        applied = time.monotonic() - started
        try:
            await asyncio.wait_for(tracker.all_ready.wait(), READY_TIMEOUT)
        finally:
            wall = time.monotonic() - started
        driver[write_key("PATCH", "/apis/batch/v1/namespaces/x/jobs/y/status")] += jobs.patched
        cpu = CpuSnapshot.take(operator).since(cpu_before)
        settled = await settle(emulator, operator)
    writes = Writes.from_log(emulator.writes_log)
    operator_writes = writes.minus(driver)
    status_patches = list(writes.status_patches_per_kb.values())
    reads, per_kb = reads_by_resource(emulator, first_request)
    reconciled = [per_kb[k] for k in keys]
    return {
        "count": count,
        "namespaces": len({ns for ns, _ in keys}),
        "apply_seconds": applied,
        "wall_seconds_until_all_ready": wall,
        "settle_seconds": settled,
        "cpu_until_all_ready": cpu,
        "latency_seconds": latency_figures(tracker.timelines),
        "api_probe_seconds": summary(probe),
        "ready_flaps": sum(t.ready_lost for t in tracker.timelines.values()),
        "driver_writes": dict(driver),
        "operator_writes": dict(operator_writes.most_common()),
        "operator_writes_total": operator_writes.total(),
        "operator_writes_per_resource": operator_writes.total() / count,
        "failed_writes": dict(writes.failed),
        "reads": dict(reads.most_common()),
        "reads_per_resource": reads.total() / count,
        "reconciles_per_resource_seen_by_emulator": {
            "min": min(reconciled),
            "median": statistics.median(reconciled),
            "max": max(reconciled),
        },
        "status_patches_per_resource": {
            "min": min(status_patches, default=0),
            "median": statistics.median(status_patches) if status_patches else 0,
            "max": max(status_patches, default=0),
        },
        "events_by_reason": await events_by_reason(client),
        "kopf_handler_runs": handler_runs(operator.log_records(first_log_line)),
        **reconcile_figures(metrics_before, await operator.scrape(client)),
    }


# ---------------------------------------------------------------------------------------------------
# Phase 2: steady state
# ---------------------------------------------------------------------------------------------------


async def phase_steady_state(
    emulator: Emulator,
    operator: OperatorProcess,
    client: httpx.AsyncClient,
    keys: list[tuple[str, str]],
    resync: float,
) -> dict[str, Any]:
    """Reset the write counts, then run until >= 2 resync periods passed and every resource was
    reconciled at least twice (capped at 6 periods, which the result would show as a shortfall).

    Counted both ways: a reconcile shows in the emulator when it starts (its lists) and in
    `tandem_reconciles_total` when it ends; under load, many are in flight at any moment.
    """
    metrics_before = await operator.scrape(client)
    emulator.reset_write_counts()
    first_request = len(list(emulator))
    first_log_line = len(operator.log_records())
    cpu_before = CpuSnapshot.take(operator)
    started = time.monotonic()
    while time.monotonic() - started < 6 * resync:
        await asyncio.sleep(0.5)
        if time.monotonic() - started < 2 * resync:
            continue
        # Every resource's reconcile started twice (the emulator saw its lists), and as many finished.
        _, per_kb = reads_by_resource(emulator, first_request)
        done = reconcile_figures(metrics_before, await operator.scrape(client))["reconciles"]
        if min(per_kb[k] for k in keys) >= 2 and done >= 2 * len(keys):
            break
    window = time.monotonic() - started
    cpu = CpuSnapshot.take(operator).since(cpu_before)
    metrics_after = await operator.scrape(client)
    reads, per_kb = reads_by_resource(emulator, first_request)
    writes = Writes.from_log(emulator.writes_log)
    figures = reconcile_figures(metrics_before, metrics_after)
    reconciled = [per_kb[k] for k in keys]
    still_ready = await count_ready(client, keys)
    reconciles = figures["reconciles"] or math.nan  # no reconcile in the window: the ratios are undefined
    return {
        "window_seconds": window,
        "resync_seconds": resync,
        "reconciles_per_resource_seen_by_emulator": {"min": min(reconciled), "max": max(reconciled)},
        "writes": dict(writes.by_key.most_common()),
        "writes_total": writes.by_key.total(),
        "failed_writes": dict(writes.failed),
        "writes_per_reconcile": writes.by_key.total() / reconciles,
        "reads": dict(reads.most_common()),
        "reads_per_reconcile": reads.total() / reconciles,
        "still_ready": still_ready,
        "kopf_handler_runs": handler_runs(operator.log_records(first_log_line)),
        "cpu": cpu,
        **figures,
    }


# ---------------------------------------------------------------------------------------------------
# Phase 3: the floor, without the operator
# ---------------------------------------------------------------------------------------------------


def ready_status(plan_facts: dict[str, Any], job: str, generation: int) -> dict[str, Any]:
    """The status the operator writes for an indexed KnowledgeBase (same fields, same size)."""
    revision = plan_facts["revision"]
    outcome = Outcome.ready("Indexed", f"collection {plan_facts['collection']} holds revision {revision}")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "collection": plan_facts["collection"],
        "ingestJob": job,
        "indexedRevision": revision,
        "lastIndexedTime": now,
        "phase": "Ready",
        "observedGeneration": generation,
        "conditions": conditions_for(outcome, generation, []),
    }


async def write_one_directly(client: httpx.AsyncClient, namespace: str, name: str) -> Counter[str]:
    """KnowledgeBase, its children as the operator plans them, Job Complete, KB status: one request each."""
    written: Counter[str] = Counter()

    async def send(
        method: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> Any:
        response = await client.request(method, path, json=body, headers=headers)
        response.raise_for_status()
        written[write_key(method, path)] += 1
        return response.json()

    kb = await send(
        "POST", f"{KB_API}/namespaces/{namespace}/knowledgebases", knowledge_base(namespace, name)
    )
    spec = KnowledgeBaseSpec.model_validate(kb["spec"])
    plan = plan_knowledge_base(Owner.from_body(kb), spec, OperatorSettings())
    for child in plan.children:
        prefix = "/api/v1" if child["apiVersion"] == "v1" else f"/apis/{child['apiVersion']}"
        await send("POST", f"{prefix}/namespaces/{namespace}/{child['kind'].lower()}s", child)
    assert plan.work is not None
    job = plan.work["metadata"]["name"]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    job_status = {"conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": now}],
                  "startTime": now, "completionTime": now, "succeeded": 1}  # fmt: skip
    await send(
        "PATCH", f"/apis/batch/v1/namespaces/{namespace}/jobs/{job}/status", {"status": job_status}, MERGE
    )
    status = ready_status(plan.facts, job, kb["metadata"]["generation"])
    await send(
        "PATCH", f"{KB_API}/namespaces/{namespace}/knowledgebases/{name}/status", {"status": status}, MERGE
    )
    return written


async def phase_floor(keys: list[tuple[str, str]]) -> dict[str, Any]:
    async with (
        run_emulator(crds=[CRDS, UPSTREAM_CRDS], history_size=HISTORY_SIZE) as emulator,
        httpx.AsyncClient(base_url=emulator.url, timeout=60) as client,
    ):
        await create_namespaces(client, keys)
        emulator.reset_write_counts()
        gate = asyncio.Semaphore(CREATE_CONCURRENCY)
        latencies: list[float] = []

        async def one(namespace: str, name: str) -> Counter[str]:
            async with gate:
                started = time.monotonic()
                written = await write_one_directly(client, namespace, name)
                latencies.append(time.monotonic() - started)
                return written

        started, cpu_before, machine_before = time.monotonic(), time.process_time(), machine_busy_seconds()
        async with api_latency_probe(client) as probe:
            results = await asyncio.gather(*(one(ns, name) for ns, name in keys))
        wall, cpu = time.monotonic() - started, time.process_time() - cpu_before
        others = max(0.0, machine_busy_seconds() - machine_before - cpu)
        writes = Writes.from_log(emulator.writes_log)
        ready = await count_ready(client, keys)
    total = sum(results, Counter())
    user_and_jobs = {
        k: v for k, v in total.items() if k.startswith("POST knowledgebases") or "jobs.batch/" in k
    }
    controller = Counter(total)
    controller.subtract(user_and_jobs)
    return {
        "wall_seconds_until_all_ready": wall,
        "emulator_and_benchmark_cpu_seconds": cpu,
        "other_processes_cpu_seconds": others,
        "latency_seconds": {"apply_to_ready": summary(latencies)},
        "api_probe_seconds": summary(probe),
        "writes": dict(writes.by_key.most_common()),
        "writes_total": writes.by_key.total(),
        "controller_writes_total": (+controller).total(),
        "controller_writes_per_resource": (+controller).total() / len(keys),
        "ready": ready,
    }


# ---------------------------------------------------------------------------------------------------
# The run, the table, the JSON
# ---------------------------------------------------------------------------------------------------


async def phase_restart(
    emulator: Emulator, operator: OperatorProcess, client: httpx.AsyncClient, count: int
) -> dict[str, Any]:
    """A new operator process finds N Ready resources: kopf resumes each (a reconcile); none needs a write.

    The write counts were reset before the process started.
    """
    started = time.monotonic()
    while handler_runs(operator.log_records()).get("reconcile-knowledgebase", 0) < count:
        if time.monotonic() - started > READY_TIMEOUT:
            raise TimeoutError(f"the operator did not resume {count} KnowledgeBases: {operator.log_path}")
        await asyncio.sleep(0.25)
    resumed = time.monotonic() - started
    settled = await settle(emulator, operator)
    writes = Writes.from_log(emulator.writes_log)
    return {
        "seconds_until_all_resumed": resumed,
        "settle_seconds": settled,
        "writes": dict(writes.by_key.most_common()),
        "writes_total": writes.by_key.total(),
        "failed_writes": dict(writes.failed),
        "kopf_handler_runs": handler_runs(operator.log_records()),
        **reconcile_figures({}, await operator.scrape(client)),
    }


async def phase_operator(
    keys: list[tuple[str, str]], apply_resync: float, resync: float, workdir: Path
) -> dict[str, Any]:
    """Phase 1 with one operator process (resync as in production); then a second process with a short
    resync resumes the same resources (a restart) and runs phase 2."""
    logs: dict[str, Any] = {}
    async with (
        run_emulator(crds=[CRDS, UPSTREAM_CRDS], history_size=HISTORY_SIZE) as emulator,
        httpx.AsyncClient(base_url=emulator.url, timeout=60) as client,
    ):
        async with operator_process(emulator.url, apply_resync, workdir / "operator-apply.log") as operator:
            await wait_until_watching(emulator, operator)
            await asyncio.sleep(1.0)  # let kopf open its other watches (children) too
            apply = await phase_apply_to_ready(emulator, operator, client, keys)
            records = operator.log_records()
        logs["apply"] = log_summary(operator, records)
        emulator.reset_write_counts()
        async with operator_process(emulator.url, resync, workdir / "operator-steady.log") as operator:
            await wait_until_watching(emulator, operator)
            restart = await phase_restart(emulator, operator, client, len(keys))
            steady = await phase_steady_state(emulator, operator, client, keys, resync)
            records = operator.log_records()
        logs["restart_and_steady"] = log_summary(operator, records)
    return {"apply_to_ready": apply, "restart": restart, "steady_state": steady, "operator_logs": logs}


def log_summary(operator: OperatorProcess, before_shutdown: list[dict[str, Any]]) -> dict[str, Any]:
    """Problems an operator process logged while measured, and (separately) while stopping."""
    return {
        "path": str(operator.log_path),
        "problems": log_problems(before_shutdown),
        "problems_at_shutdown": log_problems(operator.log_records(skip=len(before_shutdown))),
    }


# What decides the numbers: the operator's reconcile path, the API types and CRDs, the emulator.
MEASURED_SOURCES = ("operator/tandem/platform", "operator/tandem/api", "crds", "tests/emulator")


def source_state() -> dict[str, Any]:
    """The commit, and a digest of the measured sources as they are on disk (others edit in parallel)."""
    digest = hashlib.sha256()
    for top in MEASURED_SOURCES:
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".yaml"):
                digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return {"commit": done.stdout.strip(), "measured_sources_sha256": digest.hexdigest()[:16]}


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        model = next(
            (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")), "",
        )  # fmt: skip
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def fmt_latency(figures: Mapping[str, float]) -> str:
    return f"p50 {figures['p50']:6.2f}  p95 {figures['p95']:6.2f}  max {figures['max']:6.2f}"


def fmt_counts(counts: Mapping[str, float], per: float = 1.0) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{k}: {v / per:.2f}" if per != 1 else f"{k}: {v:g}" for k, v in counts.items())


def table_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The side-by-side table: the operator against the floor (same objects, no operator)."""
    op, floor = result["operator"], result["floor"]
    apply, restart, steady = op["apply_to_ready"], op["restart"], op["steady_state"]
    n, lat, cpu = apply["count"], apply["latency_seconds"], apply["cpu_until_all_ready"]
    return [
        ("", "operator", "floor (no operator)"),
        ("KnowledgeBases", f"{n} in {apply['namespaces']} namespaces", f"{n}"),
        ("wall time until all Ready (s)", f"{apply['wall_seconds_until_all_ready']:.2f}",
         f"{floor['wall_seconds_until_all_ready']:.2f}"),
        ("  of which POSTing them (s)", f"{apply['apply_seconds']:.2f}", "-"),
        ("CPU s: operator process",
         f"{cpu['operator_cpu_seconds']:.1f} ({cpu['operator_cpu_share']:.0%} of a core)", "-"),
        ("CPU s: emulator + benchmark process", f"{cpu['emulator_and_benchmark_cpu_seconds']:.1f}",
         f"{floor['emulator_and_benchmark_cpu_seconds']:.1f}"),
        ("CPU s: other processes on the machine", f"{cpu['other_processes_cpu_seconds']:.1f}",
         f"{floor['other_processes_cpu_seconds']:.1f}"),
        ("apply->Ready per resource (s)", fmt_latency(lat["apply_to_ready"]),
         fmt_latency(floor["latency_seconds"]["apply_to_ready"])),
        ("  apply->ingest Job created (s)", fmt_latency(lat["apply_to_job_created"]), "-"),
        ("  Job Complete->Ready (s)", fmt_latency(lat["job_complete_to_ready"]), "-"),
        ("API round trip, trivial GET (s)", fmt_latency(apply["api_probe_seconds"]),
         fmt_latency(floor["api_probe_seconds"])),
        ("controller writes per resource", f"{apply['operator_writes_per_resource']:.2f}",
         f"{floor['controller_writes_per_resource']:.2f}"),
        ("reconciles (per resource)", f"{apply['reconciles']:g} ({apply['reconciles'] / n:.2f})", "-"),
        ("reads per resource", f"{apply['reads_per_resource']:.1f}", "-"),
        ("restart: all resumed after (s)", f"{restart['seconds_until_all_resumed']:.2f}", "-"),
        ("restart: writes", f"{restart['writes_total']}", "-"),
        ("steady-state window (s)", f"{steady['window_seconds']:.1f} (resync {steady['resync_seconds']:g}s)",
         "-"),
        ("steady-state reconciles", f"{steady['reconciles']:g}", "-"),
        ("steady-state writes / reconcile", f"{steady['writes_per_reconcile']:.3f}", "-"),
        ("steady-state reads / reconcile", f"{steady['reads_per_reconcile']:.2f}", "-"),
    ]  # fmt: skip


def detail_lines(result: dict[str, Any]) -> list[tuple[str, Any]]:
    """The breakdowns behind the table, one labelled line each."""
    op = result["operator"]
    apply, steady = op["apply_to_ready"], op["steady_state"]
    n = apply["count"]
    return [
        ("operator writes per resource while applying", fmt_counts(apply["operator_writes"], n)),
        ("  the operator's own write metric, per resource", fmt_counts(apply["operator_writes_metric"], n)),
        ("  failed writes", fmt_counts(apply["failed_writes"])),
        ("  status patches per resource", apply["status_patches_per_resource"]),
        ("  Events posted", fmt_counts(apply["events_by_reason"])),
        ("reconcile outcomes while applying", fmt_counts(apply["reconciles_by_outcome"])),
        ("  reconciles per resource (ConfigMap lists)", apply["reconciles_per_resource_seen_by_emulator"]),
        ("  kopf handler runs", fmt_counts(apply["kopf_handler_runs"])),
        ("  reconcile duration", f"mean {apply['reconcile_seconds_mean']:.3f}s, "
                                 f"p95 <= {apply['reconcile_seconds_p95_le']}s"),
        ("steady-state writes", fmt_counts(steady["writes"])),
        ("  failed writes", fmt_counts(steady["failed_writes"])),
        ("  reconciles per resource (ConfigMap lists)", steady["reconciles_per_resource_seen_by_emulator"]),
        ("  reads", fmt_counts(steady["reads"])),
        ("  reconcile duration", f"mean {steady['reconcile_seconds_mean']:.3f}s, "
                                 f"p95 <= {steady['reconcile_seconds_p95_le']}s"),
        ("  Ready after the window / Ready flaps", f"{steady['still_ready']}/{n} / {apply['ready_flaps']}"),
        ("restart: writes", fmt_counts(op["restart"]["writes"])),
        ("  failed writes", fmt_counts(op["restart"]["failed_writes"])),
        ("  kopf handler runs", fmt_counts(op["restart"]["kopf_handler_runs"])),
        *((f"operator log ({name}) warnings/errors", fmt_counts(log["problems"]))
          for name, log in op["operator_logs"].items()),
        *((f"  at shutdown (SIGTERM) of {name}", fmt_counts(log["problems_at_shutdown"]))
          for name, log in op["operator_logs"].items()),
        *((f"operator log ({name})", log["path"]) for name, log in op["operator_logs"].items()),
    ]  # fmt: skip


def print_report(result: dict[str, Any]) -> None:
    rows = table_rows(result)
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    print()
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, width, strict=True)).rstrip())
    print()
    for label, value in detail_lines(result):
        print(f"{label}: {value}")


async def run(count: int, namespaces: int, apply_resync: float, resync: float) -> dict[str, Any]:
    keys = layout(count, namespaces)
    workdir = Path(tempfile.mkdtemp(prefix="tandem-bench-"))
    started, load_before, source = time.monotonic(), os.getloadavg(), source_state()
    digest = source["measured_sources_sha256"]
    operator = await phase_operator(keys, apply_resync, resync, workdir)
    floor = await phase_floor(keys)
    return {
        "benchmark": "operator_apply_to_ready",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "source": source,
        "measured_sources_changed_during_run": source_state()["measured_sources_sha256"] != digest,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "config": {"count": count, "namespaces": namespaces, "apply_resync_seconds": apply_resync,
                   "steady_resync_seconds": resync,
                   "create_concurrency": CREATE_CONCURRENCY, "job_run_seconds": JOB_RUN_SECONDS},
        "operator": operator,
        "floor": floor,
        "total_seconds": time.monotonic() - started,
    }  # fmt: skip


def strict_json(value: Any) -> Any:
    """NaN (an undefined ratio or an empty percentile) as null: NaN is not JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=200, help="KnowledgeBases to create (default 200)")
    parser.add_argument("--namespaces", type=int, default=4, help="namespaces to spread them over")
    parser.add_argument(
        "--apply-resync",
        type=float,
        default=60.0,
        help="TANDEM_RESYNC_SECONDS while applying (default: the operator's own, 60)",
    )
    parser.add_argument(
        "--resync",
        type=float,
        default=5.0,
        help="TANDEM_RESYNC_SECONDS for the restart and the steady state (default 5)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.count, args.namespaces, args.apply_resync, args.resync))
    if args.json:  # first, so that the measurements survive any trouble with the report
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(strict_json(result), indent=2, default=str) + "\n")
    print_report(result)
    print(f"total benchmark time: {result['total_seconds']:.1f}s")
    if args.json:
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
