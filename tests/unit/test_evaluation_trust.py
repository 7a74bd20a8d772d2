"""No recommendation from a broken run (issue 18): a strategy whose answers are more than 10 % errors, or
a dependency down while document ids or the update cost were checked, makes the scorecard untrustworthy:
no recommendation (not even of a cheaper rung that ran cleanly), the reasons with errors by cause in the
result line, and the report headed by the warning. Before any question, each route is probed once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tandem.workloads.evaluation import scorecard
from tandem.workloads.evaluation.__main__ import fit, summary
from tandem.workloads.evaluation.records import Question, Record, StrategyInfo
from tandem.workloads.evaluation.report import render_html, render_markdown, write_report
from tandem.workloads.evaluation.runner import Scoring, ask_all, probe_routes

FORMAT = r"Answer: (?P<answer>.+?)\s*\n\s*— Help Desk\s*"
QUESTIONS = [Question(i, f"fact {i}?", f"CODE-{i}", ("doc",), "fact") for i in range(1, 11)]
INFOS = [
    StrategyInfo("prompt-only", "base", None, False, "prompt"),
    StrategyInfo("rag", "rag", None, True, "rag"),
    StrategyInfo("adapter", "house-style", "house-style", False, "fine-tune"),
    StrategyInfo("hybrid", "hybrid", "house-style", True, "hybrid"),
]


def answered(strategy: str, right: bool, formatted: bool) -> list[Record]:
    out = []
    for q in QUESTIONS:
        r = Record(strategy, q, answer="...", correct=right, in_format=formatted, refused=False)
        r.latency = {"total": 1.0}
        out.append(r)
    return out


def failed(strategy: str, count: int, cause: str = "milvus") -> list[Record]:
    """The strategy's first `count` questions failed with `cause`, the others answered right."""
    out = answered(strategy, True, True)
    for r in out[:count]:
        r.error, r.error_cause, r.correct, r.in_format = (
            "HTTP 503: retrieval is unavailable",
            cause,
            None,
            None,
        )
    return out


def the_issue() -> list[Record]:
    """Issue 18's run: Milvus down, so every retrieving answer failed; the adapter alone looked best."""
    return (
        answered("prompt-only", False, False)
        + failed("rag", 10)
        + answered("adapter", False, True)
        + failed("hybrid", 10)
    )


def test_a_route_that_failed_every_question_leaves_no_recommendation() -> None:
    card = scorecard.build("ev", "assistant", INFOS, the_issue(), len(QUESTIONS), True, None)
    assert not card.trustworthy
    # Not the adapter (the cheaper rung that "won" against an outage), nor anything else.
    assert card.recommendation.strategy is None and card.recommendation.rung is None
    assert card.untrustworthy == [
        "rag: 10 of 10 answers are errors (milvus 10), over the 10% limit",
        "hybrid: 10 of 10 answers are errors (milvus 10), over the 10% limit",
    ]
    assert card.recommendation.reason.startswith("This run is not trustworthy, so it recommends nothing")
    assert {s.info.name: s.errors_by_cause for s in card.strategies if s.errors} == {
        "rag": {"milvus": 10},
        "hybrid": {"milvus": 10},
    }
    # The debate's claims that involve the failed strategies are left undecided.
    assert all(e.holds is None and e.evidence.startswith("cannot tell") for e in card.expectations)


def test_the_error_limit_is_ten_percent_of_a_strategys_questions() -> None:
    ok = (
        answered("prompt-only", False, False)
        + answered("adapter", False, True)
        + answered("hybrid", True, True)
    )
    at_limit = scorecard.build("ev", "e", INFOS, ok + failed("rag", 1), len(QUESTIONS), True, None)
    assert at_limit.trustworthy and at_limit.recommendation.strategy is not None  # 1 of 10: not above
    assert not at_limit.complete  # still marked partial
    over = scorecard.build("ev", "e", INFOS, ok + failed("rag", 2, "timeout"), len(QUESTIONS), True, None)
    assert over.untrustworthy == ["rag: 2 of 10 answers are errors (timeout 2), over the 10% limit"]
    assert over.recommendation.strategy is None


def test_a_dependency_down_while_checking_makes_the_run_untrustworthy() -> None:
    clean = (
        answered("prompt-only", False, False)
        + answered("rag", True, False)
        + answered("adapter", False, True)
        + answered("hybrid", True, True)
    )
    problem = "update cost not measured: a knowledge base did not answer (cannot connect to Milvus)"
    card = scorecard.build("ev", "e", INFOS, clean, len(QUESTIONS), True, None, problems=[problem])
    assert card.untrustworthy == [problem] and card.recommendation.strategy is None
    assert card.complete  # every answer came back; the run is still not to be trusted


def test_the_result_line_carries_the_verdict_and_errors_by_cause() -> None:
    card = scorecard.build("ev", "assistant", INFOS, the_issue(), len(QUESTIONS), True, None)
    result = summary(card, [])
    assert result["trustworthy"] is False
    assert result["untrustworthyReasons"] == card.untrustworthy
    assert result["errors"] == {"rag": {"milvus": 10}, "hybrid": {"milvus": 10}}
    assert [s["errors"] for s in result["strategies"]] == [0, 10, 0, 10]
    # Shrunk to fit a termination message, the verdict and its reasons stay.
    small = fit({**result, "warnings": ["w" * 3000]}, limit=1500)
    assert small["trustworthy"] is False and small["untrustworthyReasons"]
    assert len(json.dumps({"result": small})) <= 1500


def test_the_report_is_headed_by_the_warning(tmp_path: Path) -> None:
    card = scorecard.build("ev", "assistant", INFOS, the_issue(), len(QUESTIONS), True, None)
    markdown = render_markdown(card)
    first = markdown.splitlines()[0]
    assert first.startswith("**⚠ NOT TRUSTWORTHY: rag: 10 of 10 answers are errors (milvus 10)"), first
    assert "Recommendation: none." in markdown
    html = render_html(card)
    assert html.index("NOT TRUSTWORTHY") < html.index("<h1>")
    write_report(card, tmp_path)
    assert (tmp_path / "report.md").read_text().startswith("**⚠ NOT TRUSTWORTHY")
    clean = scorecard.build("ev", "a", INFOS, answered("rag", True, True), len(QUESTIONS), True, None)
    assert "TRUSTWORTHY" not in render_markdown(clean)


class FakeGateway:
    """Answers like the gateway: route `rag` fails with its Milvus error once `broken`."""

    def __init__(self, broken_after: int) -> None:
        self.asked: dict[str, int] = {}
        self.broken_after = broken_after

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        route = body["model"]
        self.asked[route] = self.asked.get(route, 0) + 1
        if route == "rag" and self.asked[route] > self.broken_after:
            error = {
                "message": "retrieval is unavailable: KnowledgeBase default/handbook: down",
                "code": "milvus",
            }
            return httpx.Response(503, json={"error": {**error, "type": "server_error"}})
        message: dict[str, Any] = {"role": "assistant", "content": "Answer: CODE-1\n— Help Desk"}
        return httpx.Response(200, json={"choices": [{"message": message}], "usage": {}})


def test_each_route_is_probed_once_and_a_failing_one_is_named() -> None:
    fake = FakeGateway(broken_after=0)
    with httpx.Client(transport=httpx.MockTransport(fake), base_url="http://gateway/v1") as client:
        problems = probe_routes(client, INFOS, {})
    assert fake.asked == {"base": 1, "rag": 1, "house-style": 1, "hybrid": 1}
    assert problems == ["route rag: HTTP 503: retrieval is unavailable: KnowledgeBase default/handbook: down"]


def test_answers_record_the_gateways_error_cause() -> None:
    fake = FakeGateway(broken_after=1)
    with httpx.Client(transport=httpx.MockTransport(fake), base_url="http://gateway/v1") as client:
        assert probe_routes(client, INFOS, {}) == []  # the route broke after the check
        records, _ = ask_all(client, INFOS, QUESTIONS[:3], lambda _: {}, Scoring(FORMAT, ()), 16)
    assert [r.error_cause for r in records if r.strategy == "rag"] == ["milvus"] * 3
    assert all(r.error is None for r in records if r.strategy != "rag")


@pytest.mark.parametrize(("status", "body", "cause"), [(502, {"error": {"message": "x"}}, "http-502")])
def test_an_error_without_a_code_is_counted_by_status(status: int, body: dict[str, Any], cause: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    with httpx.Client(transport=httpx.MockTransport(handler), base_url="http://gateway/v1") as client:
        records, _ = ask_all(client, INFOS[:1], QUESTIONS[:1], lambda _: {}, Scoring(None, ()), 16)
    assert records[0].error_cause == cause and records[0].error == "HTTP 502: x"
