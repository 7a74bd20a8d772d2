"""The Secret holding the key between an endpoint's gateway and its vLLM pods (issue 15, item 1).

Created once per HybridEndpoint, with a random key, and never read back: the operator's RBAC grants
`create` on Secrets and nothing else (neither get, list nor patch, each of which would let it read any
Secret of any namespace), so every reconcile asks to create it and a 409 means it is there. The key is
random, not derived from anything the operator knows: a Secret read by nobody but the pods that mount it.
An owner reference hands it to the garbage collector with the endpoint. It is not a planned child:
children are applied (a patch) and pruned by listing, which would take exactly the verbs left out.

A Secret of that name made by someone else before the endpoint is taken as the key: only a writer of
Secrets in the endpoint's own namespace can do that, and such a writer can read the key anyway.

Deleting the Secret rotates the key: the next reconcile creates a new one, and vLLM's guard, the adapter
sync and the gateway read their mounted copy again (the kubelet updates it within about a minute).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from .api import ApiError, KubeApi
from .ownership import Owner, child_name

VLLM_KEY_SECRET_KEY = "api-key"


def vllm_key_secret_name(owner: Owner) -> str:
    return child_name(owner.name, "vllm-key")


def vllm_key_secret(owner: Owner, key: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": owner.metadata(vllm_key_secret_name(owner), "vllm-key"),
        "type": "Opaque",
        "stringData": {VLLM_KEY_SECRET_KEY: key},
    }


def key_digest(key: str) -> str:
    """What a ServingPool's guard is told to accept (tandem.core.vllm_guard): the key's SHA-256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


async def ensure_vllm_key(api: KubeApi, owner: Owner) -> str | None:
    """Create the endpoint's vLLM key Secret unless it exists. The digest of the key when it was created
    now (the only moment the operator knows it: status records it for ServingPools), None when it exists."""
    key = secrets.token_urlsafe(32)  # 256 random bits, URL-safe: it goes into a header as it is
    try:
        await api.create(vllm_key_secret(owner, key))
    except ApiError as e:
        if e.status == 409:
            return None
        raise
    return key_digest(key)
