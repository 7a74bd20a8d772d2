"""The gateway's HTTP server: OpenAI-compatible chat completions that retrieve, cite and stay within limits.

Per request: authenticate the API key to a tenant, resolve the `model` field to a route (base model, an
adapter, or hybrid), retrieve with the tenant's ACL groups, fit the passages into the token budget,
call vLLM, and return its answer with citations. Everything the request did is logged as one JSON line
and, when asked with the `X-Tandem-Trace` header, returned in the response.

Health, and what each probe is for:

- `/healthz` (liveness): the process serves HTTP. Nothing else: restarting the gateway fixes nothing
  that a dependency's outage breaks.
- `/readyz` (the Kubernetes readiness probe): vLLM answers its health check. Every route needs vLLM,
  so without it the pod takes no traffic. Milvus is deliberately not part of it: a KnowledgeBase's
  outage must not take the routes that do not retrieve (`base`, an adapter alone) out of the Service,
  and retrieving routes already answer 503 (`cause="milvus"`) naming the KnowledgeBase.
- `/healthz/dependencies`: each dependency checked now, for status rather than traffic: vLLM, and one
  search of each KnowledgeBase (embedding, dense and keyword search, through the same connection the
  routes use), and from those which routes can answer. 200 when everything answers, else 503; the body
  says which KnowledgeBase fails and why. Local mode (`tandem up`) reads it to report a HybridEndpoint
  `RetrievalUnavailable`; the operator can read it from each gateway pod the same way.

With a shared serving pool (`vllmPool`, issue 16) instead of one vLLM URL, each request goes to a pod that
has its adapter loaded (see pool.py); vLLM is "up" when any pod answers, and /healthz/dependencies adds a
`pool` section: the pods seen, what each has loaded, and the requests for adapters placed on none. When no
pod is up (a pool scaled to zero), a request is held up to `vllmPool.coldStartSeconds` while the pods are
polled, counted as waiting in `tandem_gateway_pool_requests` (with those in flight: what KEDA scales the
pool on), then answered 503 with Retry-After if none came up.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tandem.api.v1alpha1.hybridendpoint import Route
from tandem.workloads.knowledge.retrieval import Principal
from tandem.workloads.prompting import passage_block

from ..key_file import FileBearer
from .admission import Admission, Busy
from .config import GatewayConfig, KeyRing, KnowledgeBaseConfig, TenantConfig
from .knowledge import KnowledgeSearch, KnowledgeUnavailable
from .metrics import GatewayMetrics
from .pool import COLD_START_POLL_SECONDS, AdapterNotPlaced, Pod, PoolRouter
from .prompt import Cited, RequestError, attribute, augment, citation, question_of, select, within_budget

log = logging.getLogger("tandem.gateway")
# Each dependency check of /readyz and /healthz/dependencies gives up after this long (seconds).
PROBE_TIMEOUT = 5.0
PROBE_QUERY = "tandem dependency check"  # searched by /healthz/dependencies, as an unprivileged caller
PROBE_PRINCIPAL = Principal("tandem-health-check", ())
ANONYMOUS = TenantConfig(name="anonymous", api_key_file="")
TRACE_HEADER = "X-Tandem-Trace"


class ApiError(Exception):
    """An error answered in OpenAI's format, counted under `cause`."""

    def __init__(
        self,
        status: int,
        message: str,
        cause: str,
        *,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.cause = status, message, cause
        self.code, self.retry_after = code, retry_after

    def response(self) -> web.Response:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after else None
        body = {"error": {"message": self.message, "type": kind, "code": self.code or self.cause}}
        return web.json_response(body, status=self.status, headers=headers)


@dataclass
class Exchange:
    """What one request did: becomes the log line and the trace."""

    request_id: str
    tenant: str
    started: float = field(default_factory=time.perf_counter)
    generation_started: float = 0.0
    traced: bool = False  # the caller asked for the trace in the response
    route: str = ""
    adapter: str | None = None
    retrieval: str = "off"
    retrieved: list[dict[str, Any]] = field(default_factory=list)
    latency: dict[str, float] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=dict)
    citation_mode: str = "none"
    # The pool's pod that answered: logged, never returned (where the pool's pods are is not the caller's).
    pod: str | None = None

    def trace(self) -> dict[str, Any]:
        return {
            "requestId": self.request_id,
            "tenant": self.tenant,
            "route": self.route,
            "adapter": self.adapter,
            "retrieval": self.retrieval,
            "retrieved": self.retrieved,
            "latencySeconds": {k: round(v, 4) for k, v in self.latency.items()},
            "usage": self.usage,
            "citationMode": self.citation_mode,
        }


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        api_keys: dict[str, TenantConfig] | KeyRing,
        knowledge: KnowledgeSearch | None = None,
        vllm_key: str | None = None,
        vllm_key_file: Path | None = None,
    ) -> None:
        """`vllm_key`: the key vLLM requires (see `load_vllm_key`), sent on every call; `vllm_key_file`:
        the file it was read from, read again while serving (a rotated Secret needs no restart)."""
        self.config = config
        # What the cache salts are keyed by: the vLLM key where there is one (secret, shared by the
        # endpoint's gateway replicas, so they share each tenant's cache), else the endpoint's identity.
        endpoint = f"{config.endpoint.namespace}/{config.endpoint.name}"
        self._salt_key = f"tandem-cache-salt/{endpoint}/{vllm_key or ''}".encode()
        # A KeyRing re-reads the key files (revocation, rotation); a dict is fixed (tests, embedding).
        self.keys = api_keys if isinstance(api_keys, KeyRing) else KeyRing.static(api_keys)
        self.routes: dict[str, Route] = {r.name: r for r in config.routes}
        self.knowledge = knowledge or KnowledgeSearch(config.knowledge_bases)
        limits = config.limits
        self.admission = Admission(
            limits.max_concurrent_requests, {t.name: t.max_concurrent_requests for t in config.tenants}
        )
        self.metrics = GatewayMetrics()
        self.vllm = httpx.AsyncClient(
            base_url=config.vllm_url or "",  # a pool: each call names its pod's URL
            timeout=httpx.Timeout(limits.request_timeout_seconds, connect=5.0),
            headers={"Authorization": f"Bearer {vllm_key}"} if vllm_key and not vllm_key_file else None,
            auth=FileBearer(vllm_key_file) if vllm_key_file else None,
        )
        # /healthz/dependencies: the search of each KnowledgeBase in flight, so that checks of a hung Milvus
        # wait on one search instead of each leaving another thread behind.
        self._knowledge_checks: dict[str, asyncio.Future[None]] = {}
        # A shared serving pool: which pods have which adapters, polled in the background.
        self.pool: PoolRouter | None = None
        if config.vllm_pool is not None:
            self.pool = PoolRouter(config.vllm_pool, base_model=config.base_model)
            # Exported from the start (at 0): a pool's ScaledObject sums these over its gateways.
            label = config.vllm_pool.label
            self.pool_in_flight = self.metrics.pool_requests.labels(label, "in_flight")
            self.pool_waiting = self.metrics.pool_requests.labels(label, "waiting")

    # --- the application -------------------------------------------------------------------------

    def app(self, *, dependencies: bool = True) -> web.Application:
        """The clients' application. `dependencies=False` where an internal port serves
        /healthz/dependencies (a pod): its answer names vLLM's address and Milvus's errors, which are not
        for callers; local mode (loopback only, no internal port) keeps it here."""
        app = web.Application(client_max_size=self.config.limits.max_request_bytes)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        if dependencies:
            app.router.add_get("/healthz/dependencies", self.dependencies)
        app.on_startup.append(self._warm_up)
        app.on_cleanup.append(self._close)
        return app

    def metrics_app(self) -> web.Application:
        """/metrics and /healthz/dependencies, served on a port of their own (9090 in a pod) that the
        clients' Service does not expose: request counts, internal addresses and dependency errors are for
        Prometheus and the operator, not for callers."""
        app = web.Application()
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/healthz/dependencies", self.dependencies)
        return app

    async def _warm_up(self, _: web.Application) -> None:
        if self.pool is not None:
            self.pool.client = self.vllm  # the key vLLM requires goes with every poll too
            await self.pool.start()
        await asyncio.to_thread(self.knowledge.warm_up)

    async def _close(self, _: web.Application) -> None:
        if self.pool is not None:
            await self.pool.close()
        await self.vllm.aclose()

    # --- endpoints ---------------------------------------------------------------------------------

    async def healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, _: web.Request) -> web.Response:
        """Ready when vLLM answers its health check: the gateway alone cannot answer anything. Milvus is
        not checked here (see the module docstring: /healthz/dependencies reports it)."""
        ok = await self._vllm_problem() is None
        return web.json_response({"vllm": ok}, status=200 if ok else 503)

    async def dependencies(self, _: web.Request) -> web.Response:
        """Each dependency now: vLLM, each KnowledgeBase (one search), and the routes they leave working."""
        vllm_problem, *knowledge_problems = await asyncio.gather(
            self._vllm_problem(), *(self._knowledge_problem(b) for b in self.config.knowledge_bases)
        )
        knowledge = {
            base.label: {"ok": problem is None, **({"error": problem} if problem else {})}
            for base, problem in zip(self.config.knowledge_bases, knowledge_problems, strict=True)
        }
        retrieval_ok = all(k["ok"] for k in knowledge.values())
        routes = {
            name: vllm_problem is None
            and (retrieval_ok or not self._retrieves(route))
            and (self.pool is None or bool(self.pool.candidates(self.config.served_name(route.adapter))))
            for name, route in self.routes.items()
        }
        ready = vllm_problem is None and retrieval_ok
        body: dict[str, Any] = {
            "ready": ready,
            "vllm": {"ok": vllm_problem is None, **({"error": vllm_problem} if vllm_problem else {})},
            "knowledgeBases": knowledge,
            "routes": routes,
        }
        if self.pool is not None:
            body["pool"] = self.pool.status()
        return web.json_response(body, status=200 if ready else 503)

    def _retrieves(self, route: Route) -> bool:
        """Whether the route's answers depend on the knowledge bases (as `_retrieve` decides)."""
        return bool(route.retrieval and self.config.retrieval.mode != "never" and self.config.knowledge_bases)

    async def _vllm_problem(self) -> str | None:
        if self.pool is not None:  # as the last poll found the pods: no request to each on every probe
            if self.pool.any_up:
                return None
            why = f": {self.pool.resolve_error}" if self.pool.resolve_error else ""
            return f"no pod of the vLLM pool answers ({len(self.pool.pods)} seen){why}"
        try:
            response = await self.vllm.get("/health", timeout=PROBE_TIMEOUT)
        except httpx.HTTPError as e:
            return f"vLLM is unreachable at {self.config.vllm_url}: {type(e).__name__}: {e}"
        if response.status_code != 200:
            return f"vLLM's /health answered {response.status_code}"
        return None

    async def _knowledge_problem(self, base: KnowledgeBaseConfig) -> str | None:
        """None when a search of the KnowledgeBase succeeds now, through the connection routes use."""

        def search() -> None:
            # The same retriever (and so the same Milvus connection) the routes search with.
            retriever = self.knowledge._retriever(base)
            try:
                retriever.search(PROBE_QUERY, 1, PROBE_PRINCIPAL)
            except Exception as e:  # pymilvus raises several types; all mean "retrieval fails now"
                raise KnowledgeUnavailable(f"KnowledgeBase {base.label}: search failed: {e}") from None

        check = self._knowledge_checks.get(base.label)
        if check is None or check.done():
            check = self._knowledge_checks[base.label] = asyncio.ensure_future(asyncio.to_thread(search))
            check.add_done_callback(lambda done: done.cancelled() or done.exception())  # read: no warning
        try:
            await asyncio.wait_for(asyncio.shield(check), PROBE_TIMEOUT)
        except KnowledgeUnavailable as e:
            return str(e)
        except TimeoutError:
            return f"KnowledgeBase {base.label}: a search took longer than {PROBE_TIMEOUT:g}s"
        return None

    async def prometheus(self, _: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def models(self, request: web.Request) -> web.Response:
        try:
            self._authenticate(request)
        except ApiError as e:
            return e.response()
        created = int(time.time())
        data = [
            {
                "id": r.name,
                "object": "model",
                "created": created,
                "owned_by": "tandem",
                "tandem": {"adapter": r.adapter, "retrieval": r.retrieval},
            }
            for r in self.config.routes
        ]
        return web.json_response({"object": "list", "data": data})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        exchange = Exchange(
            request_id=f"chatcmpl-{uuid.uuid4().hex}",
            tenant="?",
            traced=request.headers.get(TRACE_HEADER, "").lower() in ("1", "true", "yes"),
        )
        self.metrics.in_flight.inc()
        try:
            tenant = self._authenticate(request)
            exchange.tenant = tenant.name
            # Admitted before the body is read: a caller over its limit costs no read, no parse and no
            # memory for a body of up to maxRequestBytes.
            with self.admission.slot(tenant.name):
                body = await self._body(request)
                route = self._route(body, exchange)
                upstream = self._within_caps(body)
                return await self._complete(request, upstream, route, tenant, exchange)
        except Busy as e:
            error = ApiError(429, str(e), "busy", code="rate_limit_exceeded", retry_after=1)
        except TimeoutError:
            error = ApiError(
                504,
                f"the request took longer than {self.config.limits.request_timeout_seconds}s "
                "(gateway.requestTimeoutSeconds)",
                "timeout",
            )
        except ApiError as e:
            error = e
        finally:
            self.metrics.in_flight.dec()
        self.metrics.errors.labels(error.cause).inc()
        self.metrics.requests.labels(exchange.route or "-", str(error.status)).inc()
        exchange.latency["total"] = time.perf_counter() - exchange.started
        self._log(exchange, error.status, error.message)
        return error.response()

    # --- steps -------------------------------------------------------------------------------------

    def _authenticate(self, request: web.Request) -> TenantConfig:
        if not self.keys.required:
            return ANONYMOUS
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(
                401, "missing API key: send 'Authorization: Bearer <key>'", "auth", code="invalid_api_key"
            )
        tenant = self.keys.tenant_of(key.strip())
        if tenant is None:
            raise ApiError(401, "invalid API key", "auth", code="invalid_api_key")
        return tenant

    async def _body(self, request: web.Request) -> dict[str, Any]:
        too_large = ApiError(
            413,
            f"request body exceeds {self.config.limits.max_request_bytes} bytes (gateway.maxRequestBytes)",
            "invalid",
            code="request_too_large",
        )
        # A declared length over the limit is refused unread; a chunked body is cut off at the limit.
        if (request.content_length or 0) > self.config.limits.max_request_bytes:
            raise too_large
        try:
            body = await request.json()
        except web.HTTPRequestEntityTooLarge:
            raise too_large from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "request body is not JSON", "invalid") from None
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object", "invalid")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise ApiError(
                400, "messages: a non-empty list of {role, content} objects is required", "invalid"
            )
        return body

    def _within_caps(self, body: dict[str, Any]) -> dict[str, Any]:
        """The body to send on, or a 400 naming the field over this endpoint's cap: one request may ask for
        at most maxN completions of at most maxTokens tokens each. Without a token limit the cap is sent
        (vLLM stops at the model's context length otherwise, which a cap below it would not bound), no
        more than the context length (vLLM refuses a max_tokens above it; where the configuration does not
        say it, nothing is added)."""
        limits = self.config.limits
        caps = {
            "max_tokens": (limits.max_tokens, "gateway.maxTokens"),
            "max_completion_tokens": (limits.max_tokens, "gateway.maxTokens"),
            "min_tokens": (limits.max_tokens, "gateway.maxTokens"),
            "n": (limits.max_n, "gateway.maxN"),
            "best_of": (limits.max_n, "gateway.maxN"),
        }
        for name, (cap, setting) in caps.items():
            value = body.get(name)
            if value is None:
                continue
            least = 0 if name == "min_tokens" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ApiError(400, f"{name}: must be an integer of at least {least}", "invalid")
            if value > cap:
                message = f"{name}: {value} is over this endpoint's limit of {cap} ({setting})"
                raise ApiError(400, message, "invalid")
        upstream = {k: v for k, v in body.items() if k != "cache_salt"}  # the gateway's to set, per tenant
        context = self.config.max_model_len
        if body.get("max_tokens") is None and body.get("max_completion_tokens") is None and context:
            upstream["max_tokens"] = min(limits.max_tokens, context)
        return upstream

    def cache_salt(self, tenant: TenantConfig) -> str:
        """vLLM's prefix-cache salt for a tenant and its ACL groups: requests share cached prefixes only
        with requests of the same tenant and groups, so no tenant can time another's cached passages.

        An HMAC keyed by the endpoint and its vLLM key: callers cannot choose a salt (the gateway drops
        theirs and sets this one), so a salt's secrecy matters only to whoever reaches vLLM past the
        gateway; with the key, such a peer can neither be served nor compute a tenant's salt; without one
        (a cluster endpoint today) the salt is predictable from the tenant's name and groups, and only the
        NetworkPolicy keeps such a peer out. Hex, 64 characters: within vLLM's limit of 128 and free of the
        characters it forbids."""
        who = json.dumps([tenant.name, sorted(set(tenant.groups))])
        return hmac.new(self._salt_key, who.encode(), hashlib.sha256).hexdigest()

    def _route(self, body: dict[str, Any], exchange: Exchange) -> Route:
        name = body.get("model")
        route = self.routes.get(name) if isinstance(name, str) else None
        if route is None:
            raise ApiError(
                404,
                f"model {name!r} is not served here; choose one of: {', '.join(self.routes)}",
                "not-found",
                code="model_not_found",
            )
        exchange.route, exchange.adapter = route.name, route.adapter
        return route

    async def _complete(
        self,
        request: web.Request,
        body: dict[str, Any],
        route: Route,
        tenant: TenantConfig,
        exchange: Exchange,
    ) -> web.StreamResponse:
        served = self.config.served_name(route.adapter)  # the pool's name for it, never shown to callers
        if self.pool is not None and not self.pool.candidates(served):
            try:  # placed nowhere: said before the retrieval is paid for (the pods are polled again first)
                await self.pool.choose(served)
            except AdapterNotPlaced:
                if not await self._cold_start(served):
                    raise self._not_placed(route, served) from None
        pod: Pod | None = None  # a pool's pod holds this request (counted in flight) until it is answered
        try:
            # The time limit covers everything up to vLLM's answer, or up to the first byte of a stream
            # (a stream then lives as long as vLLM keeps sending, each read bounded by the client timeout).
            async with asyncio.timeout(self.config.limits.request_timeout_seconds):
                try:
                    cited = await self._retrieve(body["messages"], route, tenant, exchange)
                    messages = augment(body["messages"], cited) if cited else body["messages"]
                except RequestError as e:
                    raise ApiError(400, str(e), "invalid") from None
                upstream = {
                    **body,
                    "model": served,
                    "messages": messages,
                    "cache_salt": self.cache_salt(tenant),
                }
                exchange.generation_started = time.perf_counter()
                if body.get("stream"):
                    upstream["stream_options"] = {"include_usage": True}
                if self.pool is not None:
                    pod, response = await self._pool_send(upstream, route, served, bool(body.get("stream")))
                    self.pool_in_flight.inc()
                    exchange.pod = pod.url
                    if body.get("stream"):
                        streamed = response
                    else:
                        answer = self._answer(response, route)
                elif body.get("stream"):
                    call = self.vllm.build_request("POST", "/v1/chat/completions", json=upstream)
                    streamed = await self._send(lambda: self.vllm.send(call, stream=True))
                else:
                    answer = await self._call_vllm(upstream)
            if body.get("stream"):
                return await self._stream(request, streamed, route, cited, exchange)
        finally:
            if pod is not None and self.pool is not None:
                self.pool.release(pod)
                self.pool_in_flight.dec()
        exchange.latency["generation"] = time.perf_counter() - exchange.generation_started
        choices = answer.get("choices") or [{}]
        content = str((choices[0].get("message") or {}).get("content") or "")
        text, cited_numbers, exchange.citation_mode = attribute(content, cited)
        if choices and choices[0].get("message") is not None:
            choices[0]["message"]["content"] = text
        answer["model"] = route.name
        answer["citations"] = [citation(c, cited_numbers) for c in cited]
        self._finish(exchange, answer.get("usage") or {})
        answer["tandem"] = self._summary(exchange)
        return web.json_response(answer, headers={"X-Tandem-Retrieval": exchange.retrieval})

    async def _retrieve(
        self, messages: list[dict[str, Any]], route: Route, tenant: TenantConfig, exchange: Exchange
    ) -> list[Cited]:
        settings = self.config.retrieval
        if not route.retrieval or settings.mode == "never" or not self.config.knowledge_bases:
            exchange.retrieval = "off"
            self.metrics.retrieval.labels("off").inc()
            return []
        question = question_of(messages)
        try:
            found = await self.knowledge.search(
                question, settings.top_k, Principal(tenant.name, tuple(tenant.groups))
            )
        except KnowledgeUnavailable as e:
            # The caller learns which KnowledgeBase fails, not Milvus's address or its error (logged).
            log.error(json.dumps({"event": "retrieval", "tenant": tenant.name, "error": str(e)}))
            knowledge_base = str(e).partition(":")[0]  # "KnowledgeBase <namespace>/<name>"
            raise ApiError(
                503, f"retrieval is unavailable: {knowledge_base} cannot be searched now", "milvus"
            ) from None
        for stage, seconds in found.timings.items():
            exchange.latency[stage] = seconds
            self.metrics.stage_seconds.labels(stage).observe(seconds)
        exchange.retrieved = [
            {
                "knowledgeBase": kb,
                "id": p.id,
                "documentId": p.doc_id,
                "score": round(p.score, 6),
                "similarity": None if p.similarity is None else round(p.similarity, 6),
            }
            for kb, p in found.passages
        ]
        chosen, path = select(found.passages, settings.mode, settings.score_threshold)
        if chosen:
            counts = await self._token_counts([passage_block(i, p) for i, (_, p) in enumerate(chosen, 1)])
            chosen = chosen[: within_budget(counts, settings.max_context_tokens)]
        exchange.retrieval = path
        self.metrics.retrieval.labels(path).inc()
        return [Cited(i, kb, p) for i, (kb, p) in enumerate(chosen, 1)]

    async def _token_counts(self, texts: list[str]) -> list[int]:
        """Exact counts from vLLM's tokenizer of the served model; an estimate if it cannot say."""

        url = "/tokenize"
        if self.pool is not None:
            try:  # every pod has the base model's tokenizer: the least busy one counts
                url = f"{self.pool.pick(self.config.base_model).url}/tokenize"
            except AdapterNotPlaced:
                url = ""

        async def count(text: str) -> int:
            if not url:
                return len(text) // 3 + 1
            try:
                response = await self.vllm.post(
                    url,
                    json={"model": self.config.base_model, "prompt": text, "add_special_tokens": False},
                )
                if response.status_code == 200:
                    return int(response.json()["count"])
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            return len(text) // 3 + 1  # about 3-4 characters a token for English

        return list(await asyncio.gather(*(count(t) for t in texts)))

    async def _call_vllm(self, upstream: dict[str, Any]) -> dict[str, Any]:
        response = await self._send(lambda: self.vllm.post("/v1/chat/completions", json=upstream))
        return self._answer(response, None)

    def _answer(self, response: httpx.Response, route: Route | None) -> dict[str, Any]:
        if response.status_code != 200:
            raise self._upstream_error(response.status_code, response.text, route)
        result: dict[str, Any] = response.json()
        return result

    async def _send(self, call: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
        try:
            return await call()
        except httpx.HTTPError as e:
            raise self._send_failed(e, self.config.vllm_url or "") from None

    def _send_failed(self, error: httpx.HTTPError, url: str) -> ApiError:
        if isinstance(error, httpx.TimeoutException):
            return ApiError(
                504,
                f"vLLM did not answer within {self.config.limits.request_timeout_seconds}s "
                "(gateway.requestTimeoutSeconds)",
                "vllm-timeout",
            )
        # Where vLLM is and how the connection failed are the operator's to know: logged, not answered.
        log.error(json.dumps({"event": "vllm", "url": url, "error": repr(error)}))
        return ApiError(502, "vLLM is unreachable", "vllm")

    async def _pool_send(
        self, upstream: dict[str, Any], route: Route, served: str, stream: bool
    ) -> tuple[Pod, httpx.Response]:
        """The chat call, sent to the pool's least busy pod that has `served` loaded, and that pod (counted
        in flight: the caller releases it once the answer is read or the stream has ended). A pod that
        refuses the connection is marked down and the next one tried; one that answers 404 (the adapter
        was unloaded since its last poll) is forgotten for it and the next one tried. None left: 503 with
        Retry-After, also when the pods that had it refused the connection (a lost pod: the placement moves
        its adapters, so the caller may retry; counted as a miss, which the operator reads)."""
        assert self.pool is not None
        tried: list[Pod] = []
        refused = False
        while True:
            try:
                pod = await self.pool.choose(served, tried)
            except AdapterNotPlaced:
                if refused:
                    log.warning(json.dumps({"event": "pool-holders-lost", "servedName": served}))
                raise self._not_placed(route, served) from None
            tried.append(pod)
            self.pool.acquire(pod)
            try:
                call = self.vllm.build_request("POST", f"{pod.url}/v1/chat/completions", json=upstream)
                response = await self.vllm.send(call, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:  # the request never reached the pod
                self.pool.release(pod)
                self.pool.mark_down(pod, repr(e))
                log.error(json.dumps({"event": "vllm", "url": pod.url, "error": repr(e), "pod": "down"}))
                refused = True
                continue
            except httpx.HTTPError as e:
                self.pool.release(pod)
                raise self._send_failed(e, pod.url) from None
            except BaseException:
                self.pool.release(pod)
                raise
            if response.status_code == 404 and route.adapter is not None:
                self.pool.release(pod)
                self.pool.forget(pod, served)
                await response.aclose()
                continue
            return pod, response

    async def _cold_start(self, served: str) -> bool:
        """No pod of the pool is up (scaled to zero, or all starting): hold the request up to the pool's
        coldStartSeconds, polling the pods, counted as waiting in tandem_gateway_pool_requests (what wakes a
        pool that KEDA scaled to zero). True as soon as a pod that is up has `served` loaded (a pod just up
        may still be loading its share); False at once when some pod is up (then the adapter is what is
        missing), when the pool refuses this endpoint's key, or when holding is off (0), and at the limit.
        The requests held are admitted ones: at most limits.maxConcurrentRequests wait."""
        assert self.pool is not None
        limit = self.pool.pool.cold_start_seconds
        if limit <= 0 or self.pool.any_up or self.pool.key_refused():
            return False
        deadline = time.monotonic() + limit
        interval = min(self.pool.pool.poll_seconds, COLD_START_POLL_SECONDS)
        log.info(json.dumps({"event": "pool-cold-start", "servedName": served, "holdSeconds": limit}))
        self.pool_waiting.inc()
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                await asyncio.sleep(min(interval, remaining))
                await self.pool.refresh()
                if self.pool.candidates(served):
                    return True
                if self.pool.key_refused():
                    return False
            return False
        finally:
            self.pool_waiting.dec()

    def _not_placed(self, route: Route, served: str) -> ApiError:
        """The 503 for a request whose adapter no pod of the pool has loaded now, in the caller's names (its
        model and the endpoint's adapter name, never the pool's); counted and kept for the operator."""
        assert self.pool is not None
        retry = self.pool.pool.retry_after_seconds
        if self.pool.key_refused():
            # Not a missing adapter (no miss is counted): the pool does not accept this endpoint now.
            return ApiError(
                503,
                "the serving pool does not accept this endpoint now (detached from it, or its key was "
                f"just rotated); retry in {retry}s",
                "vllm-key",
                code="pool_refused_endpoint",
                retry_after=retry,
            )
        if route.adapter is None:  # the base model is on every pod: none answers
            return ApiError(503, "vLLM is unavailable; retry shortly", "vllm", retry_after=retry)
        self.metrics.adapter_misses.labels(route.adapter).inc()
        self.pool.record_miss(route.adapter, served)
        log.warning(json.dumps({"event": "pool-miss", "adapter": route.adapter, "servedName": served}))
        return ApiError(
            503,
            f"model {route.name!r}: adapter {route.adapter!r} is not loaded on any serving pod now; "
            f"retry in {retry}s",
            "not-placed",
            code="adapter_not_placed",
            retry_after=retry,
        )

    def _upstream_error(self, status: int, text: str, route: Route | None = None) -> ApiError:
        try:
            message = str(json.loads(text)["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = text
        if route is not None and route.adapter is not None:  # vLLM names the pool's name: say the caller's
            message = message.replace(self.config.served_name(route.adapter), route.adapter)
        message = message[:500]
        if 400 <= status < 500 and status not in (401, 403):
            # The request was wrong for the model (e.g. too long): the caller's to fix, in vLLM's words.
            return ApiError(status, f"vLLM refused the request: {message}", "invalid")
        # vLLM's own failure (or the gateway's key refused): nothing the caller can fix or should read.
        log.error(json.dumps({"event": "vllm", "status": status, "error": message}))
        return ApiError(502, f"vLLM failed ({status})", "vllm")

    async def _stream(
        self,
        request: web.Request,
        response: httpx.Response,
        route: Route,
        cited: list[Cited],
        exchange: Exchange,
    ) -> web.StreamResponse:
        try:
            if response.status_code != 200:
                raise self._upstream_error(
                    response.status_code, (await response.aread()).decode(errors="replace"), route
                )
            out = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    "X-Tandem-Retrieval": exchange.retrieval,
                }
            )
            await out.prepare(request)
            try:
                await self._relay(response, out, route, cited, exchange)
            except (TimeoutError, httpx.HTTPError, ValueError) as e:
                # The status line is gone: the error travels as an event, as OpenAI's streams do.
                cause = "timeout" if isinstance(e, (TimeoutError, httpx.TimeoutException)) else "vllm"
                self.metrics.errors.labels(cause).inc()
                self._log(exchange, 200, f"stream broken: {e!r}")
                error = {
                    "error": {
                        "message": "the stream from vLLM broke",
                        "type": "server_error",
                        "code": cause,
                    }
                }
                await out.write(f"data: {json.dumps(error)}\n\n".encode())
            await out.write_eof()
            return out
        finally:
            await response.aclose()

    async def _relay(
        self,
        response: httpx.Response,
        out: web.StreamResponse,
        route: Route,
        cited: list[Cited],
        exchange: Exchange,
    ) -> None:
        pieces: list[str] = []
        usage: dict[str, Any] = {}
        last: dict[str, Any] = {}
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            chunk["model"] = route.name
            for choice in chunk.get("choices") or []:
                pieces.append(str((choice.get("delta") or {}).get("content") or ""))
            usage = chunk.get("usage") or usage
            last = chunk
            await out.write(f"data: {json.dumps(chunk)}\n\n".encode())
        exchange.latency["generation"] = time.perf_counter() - exchange.generation_started
        _, cited_numbers, exchange.citation_mode = attribute("".join(pieces), cited)
        self._finish(exchange, usage)
        # Citations travel in a last chunk without choices (as usage does), which SDKs pass through.
        final = {
            "id": last.get("id", exchange.request_id),
            "object": "chat.completion.chunk",
            "created": last.get("created", int(time.time())),
            "model": route.name,
            "choices": [],
            "citations": [citation(c, cited_numbers) for c in cited],
            "tandem": self._summary(exchange),
        }
        await out.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())

    # --- bookkeeping -------------------------------------------------------------------------------

    def _finish(self, exchange: Exchange, usage: dict[str, Any]) -> None:
        exchange.usage = {k: int(usage[k]) for k in ("prompt_tokens", "completion_tokens") if k in usage}
        exchange.latency["total"] = time.perf_counter() - exchange.started
        for stage in ("generation", "total"):
            if stage in exchange.latency:
                self.metrics.stage_seconds.labels(stage).observe(exchange.latency[stage])
        for kind, count in exchange.usage.items():
            self.metrics.tokens.labels(kind.removesuffix("_tokens"), exchange.route).inc(count)
        self.metrics.requests.labels(exchange.route, "200").inc()
        self._log(exchange, 200, None)

    def _summary(self, exchange: Exchange) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "route": exchange.route,
            "adapter": exchange.adapter,
            "retrieval": exchange.retrieval,
            "citationMode": exchange.citation_mode,
        }
        if exchange.traced:
            summary["trace"] = exchange.trace()
        return summary

    def _log(self, exchange: Exchange, status: int, error: str | None) -> None:
        record = {"event": "chat", "status": status, **exchange.trace()}
        if exchange.pod:
            record["pod"] = exchange.pod
        if error:
            record["error"] = error
        log.info(json.dumps(record))
