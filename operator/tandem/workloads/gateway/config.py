"""The gateway's configuration: the JSON file the operator's planner writes into a ConfigMap.

Field models are the API's own (Route, Retrieval, Search), so a rule about them lives in one place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

from pydantic import Field, ValidationError, model_validator

from tandem.api.v1alpha1.common import TandemModel
from tandem.api.v1alpha1.hybridendpoint import Gateway, Retrieval, Route
from tandem.api.v1alpha1.knowledgebase import Search

log = logging.getLogger("tandem.gateway")
# How often (seconds) the API-key files are read again. A key removed or replaced in its file (a Secret
# the kubelet updates, or local mode's file) is refused at most this long after the file changed.
KEY_RELOAD_SECONDS = 2.0
# Where a gateway pod serves /metrics: a port of its own, not the clients' (see Gateway.metrics_app).
METRICS_PORT = 9090


class ConfigError(Exception):
    """The configuration file is missing or malformed; the message names the file and field."""


class EndpointId(TandemModel):
    namespace: str
    name: str


class AdapterConfig(TandemModel):
    name: str
    path: str
    version: str | None = None
    digest: str | None = None  # adapterDigest of its training: adapter-sync loads only a folder that matches
    uri: str | None = None  # oci:// or s3://: adapter-sync fetches it into `path` (a cache folder), verified
    # The name it is loaded under in a shared serving pool (unique in the pool, so two endpoints may both
    # have an adapter `support`); None: the name itself. The gateway sends this to vLLM; callers never see it.
    served_name: str | None = None

    @property
    def served(self) -> str:
        return self.served_name or self.name


class VllmPool(TandemModel):
    """A shared serving pool (issue 16): several vLLM pods, each with its share of the adapters loaded.

    Its pods are either `pods`, base URLs (local mode: vLLM processes on loopback ports), or every address
    of `dns`, a headless Service's name, at `port`, resolved again on each poll."""

    pods: list[str] | None = Field(default=None, min_length=1)
    dns: str | None = Field(default=None, min_length=1)
    port: int = Field(default=8000, ge=1, le=65535)
    # How often each pod's /v1/models is read (which adapters it has loaded), and DNS resolved again.
    poll_seconds: float = Field(default=5.0, gt=0)
    # The Retry-After (seconds) of the 503 answered when no pod has the request's adapter loaded.
    retry_after_seconds: int = Field(default=5, ge=1)
    # How long (seconds) a request is held when no pod is up (a pool scaled to zero, or starting), the pods
    # polled meanwhile, before the 503: counted as waiting in tandem_gateway_pool_requests, which is what
    # wakes a pool that KEDA scaled to zero. 0: no holding.
    cold_start_seconds: float = Field(default=60.0, ge=0)
    # The `pool` label of the gateway's tandem_gateway_pool_requests; None: `<namespace>/<service>` of `dns`
    # (what a KEDA ScaledObject of the pool queries, planners/scaling.py), or `local` for `pods`.
    name: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.pods is None) == (self.dns is None):
            raise ValueError("vllmPool: set exactly one of pods (base URLs) and dns (a headless Service)")
        for url in self.pods or []:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"vllmPool.pods: {url!r} is not an http(s) base URL")
        return self

    @property
    def label(self) -> str:
        """The pool as the gateway's metrics name it (see `name`)."""
        if self.name is not None:
            return self.name
        if self.dns is None:
            return "local"
        return pool_label_of_host(self.dns)


def pool_label_of_host(host: str) -> str:
    """`<namespace>/<service>` of a Service's DNS name (`<service>.<namespace>.svc...`); the name as it is
    when it has no namespace part."""
    service, _, rest = host.partition(".")
    namespace = rest.partition(".")[0]
    return f"{namespace}/{service}" if namespace else service


class KnowledgeBaseConfig(TandemModel):
    namespace: str
    name: str
    collection: str
    milvus_uri: str
    embedding_model: str = "all-MiniLM-L6-v2"
    search: Search = Field(default_factory=Search)
    database: str | None = None
    token_file: str | None = None  # a mounted Secret key holding the Milvus token

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"


class TenantConfig(TandemModel):
    name: str
    groups: list[str] = Field(default_factory=list)
    max_concurrent_requests: int = 8
    api_key_file: str


class Limits(TandemModel):
    max_concurrent_requests: int = Gateway.model_fields["max_concurrent_requests"].default
    request_timeout_seconds: int = Gateway.model_fields["request_timeout_seconds"].default
    max_request_bytes: int = Gateway.model_fields["max_request_bytes"].default
    max_tokens: int = Gateway.model_fields["max_tokens"].default
    max_n: int = Gateway.model_fields["max_n"].default


class GatewayConfig(TandemModel):
    endpoint: EndpointId
    # Where vLLM is: one URL (a Service, or local mode's process), or a shared pool: exactly one of the two.
    vllm_url: str | None = None
    vllm_pool: VllmPool | None = None
    # The key vLLM requires on its /v1 routes (a mounted Secret key, or local mode's 0600 file); none: vLLM
    # was started without one.
    vllm_api_key_file: str | None = None
    # vLLM's --max-model-len: vLLM refuses a max_tokens above it, so the cap the gateway adds is at most this.
    max_model_len: int | None = None
    base_model: str = "base"
    routes: list[Route]
    adapters: list[AdapterConfig] = Field(default_factory=list)
    knowledge_bases: list[KnowledgeBaseConfig] = Field(default_factory=list)
    retrieval: Retrieval = Field(default_factory=Retrieval)
    tenants: list[TenantConfig] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)

    @model_validator(mode="after")
    def _one_vllm(self) -> Self:
        if (self.vllm_url is None) == (self.vllm_pool is None):
            raise ValueError("set exactly one of vllmUrl and vllmPool")
        return self

    def served_name(self, adapter: str | None) -> str:
        """What vLLM is asked for: the base model, or the adapter's (pool) served name."""
        if adapter is None:
            return self.base_model
        for a in self.adapters:
            if a.name == adapter:
                return a.served
        return adapter


def load_config(path: Path) -> GatewayConfig:
    try:
        raw = json.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the gateway configuration: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not JSON: {e}") from None
    try:
        return GatewayConfig.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors(include_url=False)
        )
        raise ConfigError(f"{path}: {problems}") from None


def load_vllm_key(config: GatewayConfig) -> str | None:
    """The key the gateway sends vLLM, read from its file; None when vLLM takes none."""
    if config.vllm_api_key_file is None:
        return None
    try:
        key = Path(config.vllm_api_key_file).read_text().strip()
    except OSError as e:
        where = config.vllm_api_key_file
        raise ConfigError(f"cannot read vLLM's API key from {where}: {e.strerror}") from None
    if not key:
        raise ConfigError(f"vLLM's API key in {config.vllm_api_key_file} is empty")
    return key


def load_api_keys(config: GatewayConfig) -> dict[str, TenantConfig]:
    """API key -> tenant, read from the mounted Secret files."""
    keys: dict[str, TenantConfig] = {}
    for tenant in config.tenants:
        try:
            key = Path(tenant.api_key_file).read_text().strip()
        except OSError as e:
            raise ConfigError(
                f"tenant {tenant.name}: cannot read its API key from {tenant.api_key_file}: {e.strerror}"
            ) from None
        if not key:
            raise ConfigError(f"tenant {tenant.name}: the API key in {tenant.api_key_file} is empty")
        if key in keys:
            raise ConfigError(f"tenants {keys[key].name} and {tenant.name} share an API key")
        keys[key] = tenant
    return keys


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """The tenants' API keys, kept as digests, read again from their files every `reload_seconds`.

    Reading on request (when the last read is older than `reload_seconds`) instead of watching the
    files works the same for every way a key file changes: the kubelet swaps a Secret volume's `..data`
    symlink, local mode rewrites the file, an editor replaces it. A revoked key is therefore refused at
    most `reload_seconds` after its file changed. A file that cannot be read, is empty or holds another
    tenant's key fails closed: that tenant (or both sharing the key) authenticates with nothing until the
    file is fixed, and the problem is logged (never the key).
    """

    def __init__(
        self,
        tenants: list[TenantConfig],
        *,
        reload_seconds: float = KEY_RELOAD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tenants = tenants
        self.reload_seconds = reload_seconds
        self._clock = clock
        self._digests: dict[str, TenantConfig] = {}
        self._problems: dict[str, str] = {}
        self._read_at = clock()
        self._digests = self._read()

    @classmethod
    def static(cls, keys: dict[str, TenantConfig]) -> KeyRing:
        """Keys given in memory (tests, embedding): never reloaded."""
        ring = cls([], reload_seconds=float("inf"))
        ring.tenants = list(keys.values())
        ring._digests = {_digest(k): t for k, t in keys.items()}
        return ring

    @property
    def required(self) -> bool:
        """Whether callers must present a key: the endpoint has tenants, whether or not their files read
        now (a broken key file must not open the endpoint to anonymous callers)."""
        return bool(self.tenants)

    def tenant_of(self, key: str) -> TenantConfig | None:
        now = self._clock()
        if now - self._read_at >= self.reload_seconds:
            self._read_at = now
            self._digests = self._read()
        return self._digests.get(_digest(key))

    def _read(self) -> dict[str, TenantConfig]:
        digests: dict[str, TenantConfig] = {}
        shared: set[str] = set()
        problems: dict[str, str] = {}
        for tenant in self.tenants:
            try:
                key = Path(tenant.api_key_file).read_text().strip()
            except OSError as e:
                problems[tenant.name] = f"cannot read its API key from {tenant.api_key_file}: {e.strerror}"
                continue
            if not key:
                problems[tenant.name] = f"the API key in {tenant.api_key_file} is empty"
                continue
            digest = _digest(key)
            if digest in digests:
                shared.add(digest)
                problems[tenant.name] = f"shares its API key with tenant {digests[digest].name}"
                continue
            digests[digest] = tenant
        for digest in shared:  # ambiguous: neither tenant may use it
            del digests[digest]
        for name, problem in problems.items():
            if self._problems.get(name) != problem:  # once per new problem, not once per reload
                log.error(json.dumps({"event": "api-key", "tenant": name, "error": problem}))
        self._problems = problems
        return digests
