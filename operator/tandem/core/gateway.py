"""A HybridEndpoint's routes and its gateway's configuration, the same in a cluster and in local mode."""

from __future__ import annotations

from tandem.api.v1alpha1 import HybridEndpointSpec
from tandem.api.v1alpha1.hybridendpoint import Route
from tandem.workloads.gateway.config import (
    AdapterConfig,
    EndpointId,
    GatewayConfig,
    KnowledgeBaseConfig,
    Limits,
    TenantConfig,
    VllmPool,
)

from .references import ResolvedKnowledgeBase

# The name vLLM serves the base model under (`--served-model-name`); adapters are served by their own.
BASE_MODEL_NAME = "base"


def routes(spec: HybridEndpointSpec) -> list[Route]:
    """The spec's routes, or the default set: the base model, each adapter alone, and (with knowledge
    bases) `hybrid`, which retrieves and answers with the first adapter."""
    if spec.routes is not None:
        return list(spec.routes)
    out = [Route(name="base", retrieval=False)]
    out += [Route(name=a.name, adapter=a.name, retrieval=False) for a in spec.adapters]
    if spec.knowledge_bases:
        out.append(
            Route(name="hybrid", retrieval=True, adapter=spec.adapters[0].name if spec.adapters else None)
        )
    return out


def knowledge_base_config(kb: ResolvedKnowledgeBase, token_file: str | None) -> KnowledgeBaseConfig:
    """How a workload (the gateway, an evaluation) reaches a knowledge base; `token_file` holds its Milvus
    token where it has credentials."""
    return KnowledgeBaseConfig(
        namespace=kb.namespace,
        name=kb.name,
        collection=kb.collection,
        milvus_uri=kb.milvus_uri,
        embedding_model=kb.embedding_model,
        search=kb.search,
        database=kb.database,
        token_file=token_file,
    )


def gateway_config(
    spec: HybridEndpointSpec,
    *,
    namespace: str,
    name: str,
    vllm_url: str | None,
    adapters: list[AdapterConfig],
    knowledge_bases: list[KnowledgeBaseConfig],
    api_key_files: dict[str, str],
    vllm_api_key_file: str | None = None,
    vllm_pool: VllmPool | None = None,
    max_model_len: int | None = None,
) -> GatewayConfig:
    """The gateway's configuration (`tandem.workloads.gateway.config`); the platform says where things are
    (vLLM's URL or a ServingPool's pods, adapter folders, key files), the spec says everything else.
    `max_model_len`: the pool's, for an endpoint served by one (else the spec's)."""
    return GatewayConfig(
        endpoint=EndpointId(namespace=namespace, name=name),
        vllm_url=vllm_url,
        vllm_pool=vllm_pool,
        vllm_api_key_file=vllm_api_key_file,
        max_model_len=max_model_len or spec.serving.max_model_len,
        base_model=BASE_MODEL_NAME,
        routes=routes(spec),
        adapters=adapters,
        knowledge_bases=knowledge_bases,
        retrieval=spec.retrieval,
        tenants=[
            TenantConfig(
                name=t.name,
                groups=t.groups,
                max_concurrent_requests=t.max_concurrent_requests,
                api_key_file=api_key_files[t.name],
            )
            for t in spec.tenants
        ],
        limits=Limits.model_validate(
            spec.gateway.model_dump(by_alias=True, mode="json", exclude={"replicas", "resources"})
        ),
    )
