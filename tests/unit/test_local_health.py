"""What `tandem up` and `tandem status` make of a gateway's /healthz/dependencies (issue 18): Serving only
when vLLM and every KnowledgeBase answer; RetrievalUnavailable naming the KnowledgeBase, its error and the
routes that still answer; nothing answering without vLLM or the gateway."""

from __future__ import annotations

from tandem.core.endpoint_health import Condition, condition_of

URL = "http://127.0.0.1:8000"


def test_everything_answering_is_serving() -> None:
    body = {
        "ready": True,
        "vllm": {"ok": True},
        "knowledgeBases": {"default/handbook": {"ok": True}},
        "routes": {},
    }
    assert condition_of(URL, body) == Condition(True, "Serving", f"{URL}/v1")


def test_a_knowledge_base_down_is_retrieval_unavailable_with_what_still_serves() -> None:
    body = {
        "ready": False,
        "vllm": {"ok": True},
        "knowledgeBases": {
            "default/handbook": {"ok": False, "error": "KnowledgeBase default/handbook: cannot connect"},
            "default/finance": {"ok": True},
        },
        "routes": {"base": True, "house-style": True, "rag": False, "hybrid": False},
    }
    assert condition_of(URL, body) == Condition(
        False,
        "RetrievalUnavailable",
        "KnowledgeBase default/handbook: cannot connect. Routes rag, hybrid fail (they retrieve); "
        f"base, house-style still answer at {URL}/v1",
    )


def test_without_vllm_or_the_gateway_nothing_serves() -> None:
    body = {"ready": False, "vllm": {"ok": False, "error": "vLLM is unreachable"}, "routes": {"base": False}}
    assert condition_of(URL, body) == Condition(False, "VllmUnavailable", "vLLM is unreachable")
    gone = condition_of(URL, f"the gateway at {URL} does not answer (ConnectError: refused)")
    assert not gone.ready and gone.reason == "GatewayUnavailable" and "refused" in gone.message
