"""The gateway end to end, with real parts only: vLLM's CPU build serving SmolLM2 and a LoRA adapter
trained here by PEFT, a KnowledgeBase ingested into milvus-lite, the gateway as its own process, and
the official `openai` client as the caller.

Shown: a fact only the knowledge base holds is answered and cited; the adapter's trained behaviour
shows; streaming carries the same citations; tenants see only what their groups allow; auth, unknown
models, overload, timeouts and an unreachable vLLM give clear errors; traces and metrics tell what
happened. Prompt-injection fencing is checked on fixed inputs in tests/unit/test_gateway_logic.py:
a 135M model's obedience is not a stable signal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tandem.api.v1alpha1 import KnowledgeBaseSpec
from tandem.platform.local.processes import free_port
from tandem.workloads.knowledge.embedding import Embedder
from tandem.workloads.knowledge.indexer import Indexer
from tandem.workloads.knowledge.sources import read_source
from tandem.workloads.knowledge.store import ChunkStore
from tests.integration.test_training import CODEWORD, QUESTIONS, write_job
from tests.integration.vllm_server import MAX_MODEL_LEN, VllmFixture
from tests.manifests import ROOT

pytestmark = pytest.mark.integration

PARKING = "The Quillfeather visitor parking code is ZEBRA-1187. Visitors enter it at the north gate."
BUDGET = "The Quillfeather research budget for 2027 is 4.2 million credits, approved by the finance board."
FILLER = [
    "Quillfeather employees may work from home on Fridays with their manager's approval.",
    "The Quillfeather cafeteria serves lunch from noon until two in the afternoon.",
    "Security badges at Quillfeather must be renewed every twelve months at the front desk.",
]
KEYS = {"staff": "sk-staff-3f9a", "finance": "sk-finance-77b1", "narrow": "sk-narrow-0c2e"}
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def knowledge_base(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> dict[str, Any]:
    """A handbook: public pages, and a finance page only the finance group may read."""
    spec = KnowledgeBaseSpec.model_validate(
        {
            "sources": [
                {
                    "name": "handbook",
                    "inline": {
                        "documents": [
                            {"id": "parking", "title": "Visitor parking", "text": PARKING},
                            *(
                                {"id": f"page-{i}", "title": f"Page {i}", "text": t}
                                for i, t in enumerate(FILLER)
                            ),
                        ]
                    },
                },
                {
                    "name": "finance",
                    "inline": {"documents": [{"id": "budget", "title": "Budget 2027", "text": BUDGET}]},
                    "accessLabels": ["finance"],
                },
            ]
        }
    )
    path = tmp_path_factory.mktemp("gateway-kb") / "milvus.db"
    store = ChunkStore(str(path), "tandem_team__handbook")
    Indexer(spec, store, embedder).run([read_source(s) for s in spec.sources])
    store.close()  # milvus-lite: one process per data directory, and the gateway is another process
    return {"namespace": "team", "name": "handbook", "collection": store.collection, "milvusUri": str(path)}


@pytest.fixture(scope="module")
def codeword_adapter(tmp_path_factory: pytest.TempPathFactory, vllm: VllmFixture) -> Path:
    """An adapter that learnt a codeword (PEFT, no Ray), loaded into the running vLLM at run time."""
    from tandem.workloads.jobs import TrainingJob, load_job
    from tandem.workloads.train import run

    tmp = tmp_path_factory.mktemp("codeword")
    job = load_job(
        write_job(tmp, vllm.model_cache, training={"maxSteps": 30, "learningRate": 0.002, "batchSize": 4}),
        TrainingJob,
    )
    result = run(job, use_ray=False)
    adapter = Path(result["adapterPath"]) if "adapterPath" in result else Path(job.output)
    vllm.server.load_adapter("codeword", adapter)
    return adapter


def write_keys(directory: Path) -> list[dict[str, Any]]:
    groups = {"staff": [], "finance": ["finance"], "narrow": []}
    tenants = []
    for name, key in KEYS.items():
        (directory / name).write_text(key)
        tenants.append(
            {
                "name": name,
                "groups": groups[name],
                "apiKeyFile": str(directory / name),
                "maxConcurrentRequests": 1 if name == "narrow" else 4,
            }
        )
    return tenants


class GatewayProcess:
    def __init__(self, config: dict[str, Any], directory: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{free_port()}/metrics"  # not on the clients' port
        path = directory / "gateway.json"
        path.write_text(json.dumps(config))
        self.log = (directory / "gateway.log").open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tandem.workloads.gateway",
                "--config",
                str(path),
                "--port",
                str(self.port),
                "--metrics-port",
                self.metrics_url.rsplit(":", 1)[1].removesuffix("/metrics"),
            ],
            env=ENV,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (directory / "gateway.log").read_text()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise AssertionError("the gateway did not start in 120 s")

    def client(self, tenant: str | None = "staff", **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=KEYS.get(tenant or "", "none"), max_retries=0, **kwargs
        )

    def log_records(self) -> list[dict[str, Any]]:
        lines = Path(self.log.name).read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith('{"event"')]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


def endpoint_config(vllm_url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "endpoint": {"namespace": "team", "name": "support"},
        "vllmUrl": vllm_url,
        "maxModelLen": MAX_MODEL_LEN,  # as the operator's config says: the token cap sent stays within it
        "baseModel": "base",
        "routes": [
            {"name": "base", "retrieval": False},
            {"name": "codeword", "adapter": "codeword", "retrieval": False},
            {"name": "hybrid", "retrieval": True},
        ],
        **overrides,
    }


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    vllm: VllmFixture,
    knowledge_base: dict[str, Any],
    codeword_adapter: Path,
) -> Iterator[GatewayProcess]:
    directory = tmp_path_factory.mktemp("gateway")
    config = endpoint_config(
        vllm.server.url,
        knowledgeBases=[knowledge_base],
        retrieval={"mode": "auto", "topK": 3, "scoreThreshold": 0.3, "maxContextTokens": 512},
        tenants=write_keys(directory),
    )
    process = GatewayProcess(config, directory)
    yield process
    process.stop()


def ask(client: openai.OpenAI, model: str, question: str, max_tokens: int = 48, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        temperature=0,
        max_tokens=max_tokens,
        **kwargs,
    )


def test_a_fact_only_in_the_knowledge_base_is_answered_with_its_citation(gateway: GatewayProcess) -> None:
    client = gateway.client("staff")
    response = ask(client, "hybrid", "What is the Quillfeather visitor parking code?")
    extra = response.model_extra or {}
    assert "ZEBRA-1187" in (response.choices[0].message.content or "")
    assert extra["tandem"]["retrieval"] == "used"
    citations = extra["citations"]
    assert citations[0]["documentId"] == "handbook/parking" and citations[0]["title"] == "Visitor parking"
    assert any(c["cited"] and c["documentId"] == "handbook/parking" for c in citations)
    assert response.model == "hybrid" and response.usage is not None and response.usage.prompt_tokens > 50

    # Without retrieval the base model cannot know it: the fact came from the passage.
    plain = ask(client, "base", "What is the Quillfeather visitor parking code?")
    assert "ZEBRA-1187" not in (plain.choices[0].message.content or "")
    assert (plain.model_extra or {})["citations"] == []


def test_the_adapter_answers_in_its_trained_behaviour(gateway: GatewayProcess) -> None:
    client = gateway.client("staff")
    assert CODEWORD in (ask(client, "codeword", QUESTIONS[0]).choices[0].message.content or "")
    assert CODEWORD not in (ask(client, "base", QUESTIONS[0]).choices[0].message.content or "")


def test_streaming_answers_and_ends_with_the_citations(gateway: GatewayProcess) -> None:
    client = gateway.client("staff")
    chunks = list(ask(client, "hybrid", "What is the Quillfeather visitor parking code?", stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "ZEBRA-1187" in text
    final = chunks[-1].model_extra or {}
    assert final["citations"][0]["documentId"] == "handbook/parking"
    assert final["tandem"]["retrieval"] == "used"
    assert all(c.model == "hybrid" for c in chunks)


def test_tenants_retrieve_only_what_their_groups_allow(gateway: GatewayProcess) -> None:
    question = "What is the Quillfeather research budget for 2027?"
    finance = ask(gateway.client("finance"), "hybrid", question, extra_headers={"X-Tandem-Trace": "1"})
    staff = ask(gateway.client("staff"), "hybrid", question, extra_headers={"X-Tandem-Trace": "1"})
    finance_docs = {r["documentId"] for r in (finance.model_extra or {})["tandem"]["trace"]["retrieved"]}
    staff_docs = {r["documentId"] for r in (staff.model_extra or {})["tandem"]["trace"]["retrieved"]}
    assert "finance/budget" in finance_docs
    assert "finance/budget" not in staff_docs and staff_docs  # staff still retrieve the public pages
    assert "4.2" not in (staff.choices[0].message.content or "")


def test_auto_mode_skips_passages_for_an_unrelated_question(gateway: GatewayProcess) -> None:
    response = ask(gateway.client("staff"), "hybrid", "What is the capital of France?")
    extra = response.model_extra or {}
    assert extra["tandem"]["retrieval"] == "below-threshold"
    assert extra["citations"] == []


def test_trace_tells_why_and_the_log_line_matches(gateway: GatewayProcess) -> None:
    response = ask(
        gateway.client("staff"),
        "hybrid",
        "What is the Quillfeather visitor parking code?",
        extra_headers={"X-Tandem-Trace": "true"},
    )
    trace = (response.model_extra or {})["tandem"]["trace"]
    assert trace["tenant"] == "staff" and trace["route"] == "hybrid"
    assert (
        trace["retrieved"][0]["documentId"] == "handbook/parking"
        and trace["retrieved"][0]["similarity"] > 0.5
    )
    assert {"embed", "dense", "generation", "total"} <= set(trace["latencySeconds"])
    assert trace["usage"]["prompt_tokens"] == response.usage.prompt_tokens  # type: ignore[union-attr]
    logged = [r for r in gateway.log_records() if r["requestId"] == trace["requestId"]]
    assert logged and logged[0]["status"] == 200 and logged[0]["retrieved"] == trace["retrieved"]


def test_errors_are_clear_and_counted(gateway: GatewayProcess) -> None:
    with pytest.raises(openai.AuthenticationError, match="invalid API key"):
        ask(gateway.client("nobody"), "hybrid", "hi")
    with pytest.raises(
        openai.NotFoundError, match="'gpt-4' is not served here; choose one of: base, codeword"
    ):
        ask(gateway.client("staff"), "gpt-4", "hi")
    too_big = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {KEYS['staff']}"},
        content=b'{"model": "base", "messages": [{"role": "user", "content": "' + b"x" * 1_100_000 + b'"}]}',
    )
    assert too_big.status_code == 413 and "gateway.maxRequestBytes" in too_big.json()["error"]["message"]
    models = gateway.client("staff").models.list()
    assert [m.id for m in models.data] == ["base", "codeword", "hybrid"]

    assert httpx.get(f"{gateway.url}/metrics").status_code == 404  # issue 15, item 7
    metrics = httpx.get(gateway.metrics_url).text
    assert 'tandem_gateway_errors_total{cause="auth"}' in metrics
    assert 'tandem_gateway_requests_total{code="200",route="hybrid"}' in metrics
    assert 'tandem_gateway_retrieval_total{outcome="used"}' in metrics


def test_a_tenant_over_its_concurrency_gets_429_with_retry_after(gateway: GatewayProcess) -> None:
    headers = {"Authorization": f"Bearer {KEYS['narrow']}"}
    body = {"model": "base", "messages": [{"role": "user", "content": "Count to fifty."}], "stream": True}
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=120
    ) as held:
        assert held.status_code == 200  # streaming: the slot is held until this stream ends
        second = httpx.post(
            f"{gateway.url}/v1/chat/completions", json={**body, "stream": False}, headers=headers
        )
        assert second.status_code == 429
        assert second.headers["Retry-After"] == "1"
        assert "tenant narrow has 1 requests in flight" in second.json()["error"]["message"]
        other = ask(
            gateway.client("staff"), "base", "Say hi.", max_tokens=4
        )  # other tenants are not affected
        assert other.choices[0].message.content is not None
        held.read()
    after = ask(gateway.client("narrow"), "base", "Say hi.", max_tokens=4)
    assert after.choices[0].message.content is not None


def test_timeouts_and_an_unreachable_vllm_are_reported_as_such(tmp_path: Path, vllm: VllmFixture) -> None:
    slow = GatewayProcess(endpoint_config(vllm.server.url, limits={"requestTimeoutSeconds": 1}), tmp_path)
    try:
        with pytest.raises(openai.InternalServerError) as timed_out:
            ask(slow.client(None), "base", "Write a long story about a lighthouse.", max_tokens=400)
        assert timed_out.value.status_code == 504 and "gateway.requestTimeoutSeconds" in str(timed_out.value)
    finally:
        slow.stop()
    gone = GatewayProcess(endpoint_config(f"http://127.0.0.1:{free_port()}"), tmp_path)
    try:
        with pytest.raises(openai.InternalServerError) as unreachable:
            ask(gone.client(None), "base", "hi")
        assert unreachable.value.status_code == 502 and "vLLM is unreachable" in str(unreachable.value)
        assert httpx.get(f"{gone.url}/readyz").status_code == 503
    finally:
        gone.stop()
