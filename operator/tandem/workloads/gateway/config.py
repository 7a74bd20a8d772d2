"""The gateway's configuration: the JSON file the operator's planner writes into a ConfigMap.

Field models are the API's own (Route, Retrieval, Search), so a rule about them lives in one place.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field, ValidationError

from tandem.api.v1alpha1.common import TandemModel
from tandem.api.v1alpha1.hybridendpoint import Gateway, Retrieval, Route
from tandem.api.v1alpha1.knowledgebase import Search


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


class GatewayConfig(TandemModel):
    endpoint: EndpointId
    vllm_url: str
    base_model: str = "base"
    routes: list[Route]
    adapters: list[AdapterConfig] = Field(default_factory=list)
    knowledge_bases: list[KnowledgeBaseConfig] = Field(default_factory=list)
    retrieval: Retrieval = Field(default_factory=Retrieval)
    tenants: list[TenantConfig] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)


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
