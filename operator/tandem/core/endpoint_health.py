"""What a HybridEndpoint's gateway says of its dependencies (`/healthz/dependencies`: vLLM, one search of
each KnowledgeBase, the routes they leave working), as the condition both platforms give the endpoint:

- `Serving` (Ready): vLLM answers and every KnowledgeBase answers a search.
- `RetrievalUnavailable` (not Ready): a KnowledgeBase does not answer; the message names it and the
  error, and the routes that still answer (those without retrieval).
- `VllmUnavailable` / `GatewayUnavailable` (not Ready): no route answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def read_dependencies(where: str, status_code: int, body: Any) -> dict[str, Any] | str:
    """The gateway's /healthz/dependencies answer (200 when all is well, 503 otherwise, both with the
    body), or why it is not one."""
    if not isinstance(body, dict) or "routes" not in body:
        return f"the gateway at {where} answered {status_code} without its dependencies"
    return body


@dataclass(frozen=True)
class Condition:
    ready: bool
    reason: str
    message: str


def condition_of(gateway_url: str, body: dict[str, Any] | str) -> Condition:
    if isinstance(body, str):
        return Condition(False, "GatewayUnavailable", body)
    vllm = body.get("vllm") or {}
    if not vllm.get("ok"):
        return Condition(False, "VllmUnavailable", str(vllm.get("error") or "vLLM does not answer"))
    down = {k: v for k, v in (body.get("knowledgeBases") or {}).items() if not v.get("ok")}
    if down:
        routes = body.get("routes") or {}
        serving = [r for r, ok in routes.items() if ok]
        failing = [r for r, ok in routes.items() if not ok]
        errors = "; ".join(str(v.get("error") or f"KnowledgeBase {k} fails") for k, v in down.items())
        verb = "answers" if len(serving) == 1 else "answer"
        still = f"{', '.join(serving)} still {verb}" if serving else "no route answers"
        return Condition(
            False,
            "RetrievalUnavailable",
            f"{errors}. Routes {', '.join(failing)} fail (they retrieve); {still} at {gateway_url}/v1",
        )
    return Condition(True, "Serving", f"{gateway_url}/v1")
