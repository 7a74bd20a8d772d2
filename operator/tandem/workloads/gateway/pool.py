"""Routing by affinity in a shared serving pool (issue 16, item 4).

A pool is N vLLM pods that several endpoints share; each LoRA adapter is loaded on only k of them (the
operator places it, each pod's sidecar loads its share) under a pool-unique served name. The gateway sends
each request to a pod that has the request's adapter loaded, the one with the fewest requests in flight.

What the router knows comes from the pods themselves, never from the Kubernetes API on the request path:

- which pods: a fixed list of base URLs (local mode: several vLLM processes on loopback ports), or a
  headless Service's DNS name resolved on every poll (each ready pod is an A record) plus the port;
- what each pod has loaded: its `GET /v1/models`, polled every `pollSeconds` (and at once when a request
  finds its adapter nowhere, at most once per `MISS_REFRESH_SECONDS`). Entries with a `parent` are
  adapters, their `id` the served name; the base model is on every pod.

In-flight counts are this gateway replica's own: a request holds its pod from the call until its answer
(for a stream, until the stream ends). A pod that refuses a connection is down until it answers a poll.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from .config import VllmPool

log = logging.getLogger("tandem.gateway")
# A miss polls the pods again before it is answered, but rounds start no more often than this (seconds): a
# burst of requests for an adapter placed nowhere costs the pods one round of /v1/models a second, not one
# per request, and a miss within a second of the last round waits for the next one.
MISS_REFRESH_SECONDS = 1.0
# How long one pod's /v1/models may take (seconds) before the poll counts the pod as down.
POLL_TIMEOUT = 3.0
# How often (seconds, at most) the pods are polled while a request waits for a pod to come up (a cold
# start: the pool scaled to zero); the configuration's pollSeconds when shorter.
COLD_START_POLL_SECONDS = 1.0


class AdapterNotPlaced(Exception):
    """No pod that is up has the served name loaded now."""

    def __init__(self, served_name: str) -> None:
        super().__init__(f"{served_name} is not loaded on any pod that answers")
        self.served_name = served_name


@dataclass(eq=False)
class Pod:
    url: str  # base URL, without a trailing slash
    up: bool = False  # answered its last poll and has refused no connection since
    models: frozenset[str] = frozenset()  # served names of the adapters it has loaded
    in_flight: int = 0
    polled_at: float | None = None  # clock time of its last successful poll
    down_at: float | None = None  # clock time it refused a connection (a poll older than this is stale)
    error: str | None = None  # why it is down
    key_refused: bool = False  # its last poll was answered 401: the pod does not accept this gateway's key

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "address": self.url,
            "up": self.up,
            "adapters": sorted(self.models),
            "inFlight": self.in_flight,
        }
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class Miss:
    served_name: str
    count: int = 0
    last: float = 0.0  # wall-clock seconds


Resolve = Callable[[], Awaitable[list[str]]]
FetchModels = Callable[[str], Awaitable[list[dict[str, Any]]]]


class PoolRouter:
    """Which pod serves a served name. One event loop: the counters need no lock.

    `resolve` (the pods' base URLs now) and `fetch_models` (one pod's `/v1/models` entries) default to
    the configuration's list or DNS name and an HTTP GET through `client`; tests pass their own, with a
    `clock` of their own.
    """

    def __init__(
        self,
        pool: VllmPool,
        *,
        base_model: str,
        client: httpx.AsyncClient | None = None,
        resolve: Resolve | None = None,
        fetch_models: FetchModels | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.pool = pool
        self.base_model = base_model
        self.client = client
        self._resolve = resolve or self._resolve_configured
        self._fetch_models = fetch_models or self._fetch_over_http
        self._clock, self._sleep = clock, sleep
        self.pods: dict[str, Pod] = {}
        self.misses: dict[str, Miss] = {}  # by the client's adapter name
        self.resolve_error: str | None = None
        self._turn = 0  # breaks ties between equally loaded pods, round robin
        self._refreshing: asyncio.Future[None] | None = None
        self._refreshed_at: float | None = None
        self._round_started: float | None = None  # when the last completed round began
        self._rounds_begun = self._rounds_done = 0  # rounds numbered as they begin; the last one completed
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """One poll now (so the first request and the first probe know the pods), then every pollSeconds."""
        await self.refresh()
        self._task = asyncio.create_task(self._poll_forever())

    async def close(self) -> None:
        for running in (self._task, self._refreshing):
            if running is not None:
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
        self._task = self._refreshing = None

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.pool.poll_seconds)
            try:
                await self.refresh()
            except Exception as e:  # a poll must never end the loop
                log.error(json.dumps({"event": "pool-poll", "error": repr(e)}))

    # --- what the pods have ------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Resolve the pods and poll each one's /v1/models; concurrent callers share one round."""
        if self._refreshing is not None and not self._refreshing.done():
            await asyncio.shield(self._refreshing)
            return
        self._rounds_begun += 1
        self._refreshing = asyncio.ensure_future(self._refresh(self._rounds_begun))
        await asyncio.shield(self._refreshing)

    async def _refresh(self, number: int) -> None:
        started = self._clock()
        try:
            urls = [u.rstrip("/") for u in await self._resolve()]
            self.resolve_error = None
        except Exception as e:  # DNS failing keeps the pods last seen: they may still answer
            self.resolve_error = f"cannot resolve the pool's pods: {type(e).__name__}: {e}"
            log.error(json.dumps({"event": "pool-resolve", "error": self.resolve_error}))
            urls = list(self.pods)
        self.pods = {url: self.pods.get(url) or Pod(url) for url in dict.fromkeys(urls)}
        pods = list(self.pods.values())
        results = await asyncio.gather(*(self._fetch_models(p.url) for p in pods), return_exceptions=True)
        for pod, result in zip(pods, results, strict=True):
            if isinstance(result, BaseException):
                pod.up, pod.error = False, f"/v1/models failed: {type(result).__name__}: {result}"
                pod.key_refused = (
                    isinstance(result, httpx.HTTPStatusError) and result.response.status_code == 401
                )
                continue
            pod.key_refused = False
            pod.models = frozenset(
                str(m["id"]) for m in result if isinstance(m, dict) and m.get("parent") and "id" in m
            )
            pod.polled_at = started
            if pod.down_at is None or started >= pod.down_at:  # not a poll begun before a refusal
                pod.up, pod.error, pod.down_at = True, None, None
        self._refreshed_at, self._round_started, self._rounds_done = self._clock(), started, number

    async def _resolve_configured(self) -> list[str]:
        if self.pool.pods is not None:
            return list(self.pool.pods)
        assert self.pool.dns is not None  # the configuration has one of the two
        port = self.pool.port
        infos = await asyncio.get_running_loop().getaddrinfo(
            self.pool.dns, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        addresses = sorted({str(info[4][0]) for info in infos})
        return [f"http://[{a}]:{port}" if ":" in a else f"http://{a}:{port}" for a in addresses]

    async def _fetch_over_http(self, url: str) -> list[dict[str, Any]]:
        if self.client is None:
            raise RuntimeError("the router has no HTTP client")
        response = await self.client.get(f"{url}/v1/models", timeout=POLL_TIMEOUT)
        response.raise_for_status()
        data = response.json().get("data")
        if not isinstance(data, list):
            raise ValueError("/v1/models answered no data list")
        return data

    # --- choosing ----------------------------------------------------------------------------------

    def has(self, pod: Pod, served_name: str) -> bool:
        return served_name == self.base_model or served_name in pod.models

    def key_refused(self) -> bool:
        """Whether every known pod refused this gateway's key at its last poll: the endpoint is detached
        from the pool (or its key was rotated and the pool does not list the new one yet), which no retry
        of the request by the caller will change soon; not an adapter that is missing."""
        return bool(self.pods) and all(p.key_refused for p in self.pods.values())

    def candidates(self, served_name: str, exclude: Iterable[Pod] = ()) -> list[Pod]:
        skip = {id(p) for p in exclude}
        return [p for p in self.pods.values() if p.up and id(p) not in skip and self.has(p, served_name)]

    def pick(self, served_name: str, exclude: Iterable[Pod] = ()) -> Pod:
        """The pod that is up, has `served_name` loaded and the fewest requests in flight; equally loaded
        pods take turns. AdapterNotPlaced when there is none."""
        pods = self.candidates(served_name, exclude)
        if not pods:
            raise AdapterNotPlaced(served_name)
        least = min(p.in_flight for p in pods)
        tied = sorted((p for p in pods if p.in_flight == least), key=lambda p: p.url)
        self._turn += 1
        return tied[self._turn % len(tied)]

    async def choose(self, served_name: str, exclude: Iterable[Pod] = ()) -> Pod:
        """`pick`, and on a miss pick once more from a round of polls begun after the miss (a newly loaded
        adapter is found before the next periodic poll): the next round starts at once, or once
        MISS_REFRESH_SECONDS have passed since the last one began (a round just before the miss may predate
        a load; misses in the meantime share one round). Pods excluded by the caller (already tried) never
        trigger a poll."""
        exclude = list(exclude)
        try:
            return self.pick(served_name, exclude)
        except AdapterNotPlaced:
            if exclude:
                raise
        in_flight = self._refreshing is not None and not self._refreshing.done()
        # The round that answers this miss: the one in flight (shared with the misses that started it), or
        # the next one to begin.
        needed = self._rounds_begun if in_flight else self._rounds_begun + 1
        while self._rounds_done < needed:
            if self._refreshing is not None and not self._refreshing.done():
                await asyncio.shield(self._refreshing)
                continue
            if self._round_started is not None:
                wait = self._round_started + MISS_REFRESH_SECONDS - self._clock()
                if wait > 0:
                    await self._sleep(wait)
                    continue  # another miss may have begun the next round meanwhile
            await self.refresh()
        return self.pick(served_name, exclude)

    def acquire(self, pod: Pod) -> None:
        pod.in_flight += 1

    def release(self, pod: Pod) -> None:
        pod.in_flight -= 1

    def mark_down(self, pod: Pod, error: str) -> None:
        """The pod refused a connection: no requests until a poll begun after now succeeds."""
        pod.up, pod.error, pod.down_at = False, f"connection failed: {error}", self._clock()

    def forget(self, pod: Pod, served_name: str) -> None:
        """The pod answered that it has not (or no longer) `served_name`: until its next poll says so."""
        pod.models = pod.models - {served_name}

    def record_miss(self, adapter: str, served_name: str) -> None:
        miss = self.misses.setdefault(adapter, Miss(served_name))
        miss.served_name, miss.count, miss.last = served_name, miss.count + 1, time.time()

    # --- reporting ---------------------------------------------------------------------------------

    @property
    def any_up(self) -> bool:
        return any(p.up for p in self.pods.values())

    def status(self) -> dict[str, Any]:
        """The `pool` section of /healthz/dependencies: pods seen, what each has loaded, and the misses."""
        out: dict[str, Any] = {
            "pods": [p.status() for p in sorted(self.pods.values(), key=lambda p: p.url)],
            "misses": {
                adapter: {"servedName": m.served_name, "count": m.count, "lastAt": round(m.last, 3)}
                for adapter, m in sorted(self.misses.items())
            },
        }
        if self.resolve_error:
            out["error"] = self.resolve_error
        return out
