"""A HybridEndpoint served by a ServingPool -> its gateway only (config, Deployment, Service).

The pool runs vLLM; the endpoint keeps what is its own: the gateway with its tenants, keys, knowledge bases
and routes, and the key it presents to the pool's pods (its <name>-vllm-key Secret, accepted there by
digest). Its adapters are named for the pool (tandem.core.pools.served_name) and lie where the pool pods'
sidecars put them; the gateway finds the pods through the pool's headless Service and routes each request
to one that has the adapter loaded.
"""

from __future__ import annotations

import json

from tandem.api.v1alpha1 import HybridEndpointSpec
from tandem.api.v1alpha1.servingpool import ServingPoolSpec
from tandem.core.gateway import gateway_config
from tandem.core.pools import PooledAdapter, pool_service_host
from tandem.core.references import ResolvedKnowledgeBase
from tandem.workloads.gateway.config import VllmPool

from ..ownership import Owner
from ..settings import OperatorSettings
from ..volumes import Mounts
from . import EndpointFacts, Plan
from .hybridendpoint import (
    CONFIG_DIR,
    GATEWAY_PORT,
    VLLM_KEY_FILE,
    Names,
    gateway_deployment,
    gateway_url,
    mount_api_keys,
    mount_knowledge_base,
    mount_vllm_key,
    service,
)


def plan_pooled_endpoint(
    owner: Owner,
    spec: HybridEndpointSpec,
    settings: OperatorSettings,
    pool: Owner,
    pool_spec: ServingPoolSpec,
    adapters: list[PooledAdapter],
    knowledge_bases: list[ResolvedKnowledgeBase],
) -> Plan[EndpointFacts]:
    """`adapters`: the endpoint's adapters as the pool serves them (checked portable by the caller)."""
    names = Names.of(owner)
    mounts = Mounts()
    mounts.add_config_map(names.config, CONFIG_DIR)
    mount_vllm_key(mounts, names)
    kb_configs = [mount_knowledge_base(owner, kb, mounts) for kb in knowledge_bases]
    api_key_files = mount_api_keys(mounts, spec.tenants)
    # The gateway knows each adapter by the endpoint's name and sends the pool's.
    served = [a.for_gateway() for a in adapters]
    config = gateway_config(
        spec,
        namespace=owner.namespace,
        name=owner.name,
        vllm_url=None,
        vllm_pool=VllmPool(
            dns=pool_service_host(pool.namespace, Names.of(pool).vllm), port=settings.vllm_port
        ),
        adapters=served,
        knowledge_bases=kb_configs,
        api_key_files=api_key_files,
        vllm_api_key_file=VLLM_KEY_FILE,
        max_model_len=pool_spec.serving.max_model_len,
    )
    wire = config.model_dump(by_alias=True, exclude_none=True, mode="json")
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": owner.metadata(names.config, "gateway"),
        "data": {"gateway.json": json.dumps(wire, indent=2, sort_keys=True)},
    }
    children = [
        config_map,
        gateway_deployment(owner, spec, settings, names, mounts),
        service(owner, owner.name, "gateway", names.gateway_labels, 80, GATEWAY_PORT),
    ]
    return Plan(
        children=children,
        facts=EndpointFacts(
            url=gateway_url(owner.namespace, owner.name),
            vllm_deployment="",
            gateway_deployment=names.gateway,
            adapters=served,
        ),
    )
