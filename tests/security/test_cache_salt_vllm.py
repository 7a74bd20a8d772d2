"""No tenant reads another's prompt cache (issue 15, item 5), shown with the real vLLM CPU build.

vLLM's prefix cache is shared by every request it serves: a prompt whose prefix another request left in
the cache is answered faster, which a tenant can time to learn another tenant's passages. The gateway
salts each upstream request's prefix hashes with its tenant's `cache_salt` (tenant and ACL groups), so a
cached prefix is a hit only for the tenant that left it. Read from vLLM's own counters on its /metrics
(`vllm:prefix_cache_hits` and `vllm:prefix_cache_queries`, in tokens): the same long prompt from tenant
A twice hits the cache the second time; from tenant B it does not, even with A's salt guessed; B's
second request hits its own.

Slow: starts vLLM (about a minute on two cores, the session's vLLM when run with the integration tier).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tandem.platform.local.vllm import VllmServer
from tandem.workloads.gateway.app import Gateway
from tandem.workloads.gateway.config import GatewayConfig, TenantConfig
from tests.integration.vllm_server import (  # noqa: F401  (session fixtures: one vLLM for the module)
    vllm_fixture,
    vllm_server_fixture,
)

pytestmark = pytest.mark.integration

KEYS = {
    "sk-alpha": TenantConfig(name="alpha", groups=["finance"], api_key_file=""),
    "sk-beta": TenantConfig(name="beta", groups=[], api_key_file=""),
}
# Long enough to fill many of vLLM's cache blocks (16 tokens each on CPU): hundreds of tokens.
PASSAGE = " ".join(
    f"Clause {i}: the Quillfeather budget line {i} holds {i * 37 % 1000} thousand credits for project {i}."
    for i in range(40)
)
CHAT = {
    "model": "base",
    "messages": [
        {"role": "system", "content": PASSAGE},
        {"role": "user", "content": "Which clause is last?"},
    ],
    "max_tokens": 1,
    "temperature": 0,
}


def cache_counters(server: VllmServer) -> tuple[float, float]:
    """(hits, queries) of vLLM's prefix cache so far, in tokens, summed over its engines."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    totals = {"vllm:prefix_cache_hits_total": 0.0, "vllm:prefix_cache_queries_total": 0.0}
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name in totals:
            totals[name] += float(rest.rsplit(" ", 1)[1])
    return totals["vllm:prefix_cache_hits_total"], totals["vllm:prefix_cache_queries_total"]


async def test_a_tenants_cached_prefix_is_not_a_hit_for_another_tenant(vllm_server: VllmServer) -> None:
    config = GatewayConfig.model_validate(
        {
            "endpoint": {"namespace": "team", "name": "salted"},
            "vllmUrl": vllm_server.url,
            "routes": [{"name": "base", "retrieval": False}],
            "tenants": [t.model_dump(by_alias=True) for t in KEYS.values()],
        }
    )
    gateway = Gateway(config, KEYS)
    client = TestClient(TestServer(gateway.app()))
    await client.start_server()

    async def ask(key: str, **extra: Any) -> tuple[float, float]:
        """Send the prompt as `key`'s tenant; the cache hits and queries (tokens) it caused."""
        hits, queries = cache_counters(vllm_server)
        response = await client.post(
            "/v1/chat/completions", json={**CHAT, **extra}, headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status == 200, await response.text()
        after_hits, after_queries = cache_counters(vllm_server)
        return after_hits - hits, after_queries - queries

    try:
        first_hits, prompt_tokens = await ask("sk-alpha")
        assert prompt_tokens > 200 and first_hits == 0  # nobody asked this before
        again_hits, _ = await ask("sk-alpha")
        assert again_hits >= prompt_tokens * 0.8  # alpha's own prefix is cached (all but the last block)
        alpha_salt = gateway.cache_salt(KEYS["sk-alpha"])
        other_hits, other_queries = await ask("sk-beta", cache_salt=alpha_salt)  # guessing does not help
        assert other_queries > 200 and other_hits == 0
        beta_again, _ = await ask("sk-beta")
        assert beta_again >= prompt_tokens * 0.8  # beta's own request did fill the cache, for beta
        print(
            f"prompt {prompt_tokens:.0f} tokens; cache hits: alpha first {first_hits:.0f}, alpha again "
            f"{again_hits:.0f}, beta (alpha's salt sent) {other_hits:.0f}, beta again {beta_again:.0f}"
        )
    finally:
        await client.close()
