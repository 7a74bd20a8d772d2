"""The scorecard on hand-built records: figures per strategy and kind, the debate's expected shape, and a
recommendation that climbs the ladder only as far as the numbers require."""

from __future__ import annotations

import pytest

from tandem.workloads.evaluation import scorecard
from tandem.workloads.evaluation.records import Claim, Question, Record, StrategyInfo

FRESH = [Question(i, f"fresh {i}?", "x", ("doc",), "fresh") for i in range(1, 5)]
FORMAT = [Question(i, f"format {i}?", "y", (), "format") for i in range(5, 9)]
NONE = [Question(9, "unknown?", "I don't know", (), "unanswerable")]
QUESTIONS = FRESH + FORMAT + NONE

INFOS = [
    StrategyInfo("base", "base", None, False, "prompt"),
    StrategyInfo("rag", "rag", None, True, "rag"),
    StrategyInfo("adapter", "house-style", "house-style", False, "fine-tune"),
    StrategyInfo("hybrid", "hybrid", "house-style", True, "hybrid"),
]


def records(name: str, fresh_right: int, formatted: bool, refuses: bool) -> list[Record]:
    out = []
    for i, q in enumerate(QUESTIONS):
        r = Record(name, q, answer="...")
        r.in_format = formatted
        if q.kind == "fresh":
            r.correct = i < fresh_right
            r.exact_match, r.token_f1, r.refused = r.correct, 1.0 if r.correct else 0.0, False
        elif q.kind == "format":
            r.correct, r.exact_match, r.token_f1, r.refused = True, False, 0.5, False
        else:
            r.correct = r.refused = refuses
        r.latency = {"total": 1.0 + i, "generation": 0.5}
        r.prompt_tokens, r.completion_tokens = (300 if "rag" in name or name == "hybrid" else 40), 20
        out.append(r)
    return out


ALL = (
    records("base", 0, False, False)
    + records("rag", 4, False, True)
    + records("adapter", 0, True, False)
    + records("hybrid", 4, True, True)
)


def test_figures_per_strategy_and_kind() -> None:
    card = scorecard.build("ev", "assistant", INFOS, ALL, len(QUESTIONS), True, None)
    rag = next(c for c in card.strategies if c.info.name == "rag")
    # rag: 4 fresh right, 4 format questions "correct", unanswerable refused -> 9 of 9
    assert rag.metrics["correct"].value == 1.0 and rag.metrics["correct"].n == 9
    assert rag.by_kind["fresh"]["correct"].value == 1.0
    assert rag.metrics["format"].value == 0.0
    assert rag.metrics["refusal"].value == 1.0 and rag.metrics["refusal"].n == 1
    assert rag.metrics["falseRefusal"].value == 0.0
    base = next(c for c in card.strategies if c.info.name == "base")
    assert base.metrics["correct"].value == pytest.approx(4 / 9)  # the 4 format questions only
    # latency: totals 1..9 -> p50 5.0, p95 = 8 + 0.6 * 1 = 8.6 (linear interpolation)
    assert rag.latency["total"].p50 == 5.0 and rag.latency["total"].p95 == pytest.approx(8.6)
    assert rag.tokens["prompt"].value == 300 and base.tokens["prompt"].value == 40
    assert card.complete


def test_the_expected_shape_is_checked_on_the_data() -> None:
    card = scorecard.build("ev", "assistant", INFOS, ALL, len(QUESTIONS), True, None)
    shape = {e.claim: e.holds for e in card.expectations}
    assert shape == {
        "RAG beats the adapter alone on fresh facts": True,
        "The adapter beats RAG alone on the answer format": True,
        "Hybrid (adapter + RAG) is best on both": True,
    }
    # Swap the adapter's and RAG's format: the second claim must now fail, with the figures as evidence.
    flipped = [r for r in ALL if r.strategy not in ("rag", "adapter")]
    flipped += records("rag", 4, True, True) + records("adapter", 0, False, False)
    card = scorecard.build("ev", "assistant", INFOS, flipped, len(QUESTIONS), True, None)
    fmt = next(e for e in card.expectations if "format" in e.claim)
    assert fmt.holds is False and "adapter 0.00" in fmt.evidence


def test_recommendation_climbs_only_as_far_as_needed() -> None:
    card = scorecard.build("ev", "assistant", INFOS, ALL, len(QUESTIONS), True, None)
    assert card.recommendation.strategy == "hybrid" and card.recommendation.rung == "hybrid"
    assert "rag (rag) falls short on format 0.00" in card.recommendation.reason
    # Without a house format to score, RAG already answers everything: the cheaper rung wins.
    card = scorecard.build("ev", "assistant", INFOS, ALL, len(QUESTIONS), False, None)
    assert card.recommendation.strategy == "rag"


def test_errors_are_kept_and_marked_partial() -> None:
    broken = [r for r in ALL if r.strategy != "hybrid"] + [
        Record("hybrid", q, error="endpoint unreachable: ConnectError") for q in QUESTIONS
    ]
    card = scorecard.build("ev", "assistant", INFOS, broken, len(QUESTIONS), True, None)
    hybrid = next(c for c in card.strategies if c.info.name == "hybrid")
    assert not card.complete and hybrid.errors == 9 and hybrid.answered == 0
    assert hybrid.metrics["correct"].value is None
    # A strategy that failed every question makes the run untrustworthy (issue 18): no recommendation,
    # and no verdict on the claims it takes part in.
    assert card.recommendation.strategy is None and not card.trustworthy
    assert card.untrustworthy == ["hybrid: 9 of 9 answers are errors (unknown 9), over the 10% limit"]
    shape = {e.claim: e for e in card.expectations}
    hybrid_claim = shape["Hybrid (adapter + RAG) is best on both"]
    assert hybrid_claim.holds is None and "9 of hybrid's 9 answers are errors" in hybrid_claim.evidence
    assert shape["RAG beats the adapter alone on fresh facts"].holds is True  # hybrid not involved


def test_hallucinations_count_unsupported_claims_of_grounded_answers() -> None:
    q = FRESH[0]
    a = Record("rag", q, answer="...", groundedness=0.5, claims=[Claim("a", True), Claim("b", False)])
    b = Record("rag", q, answer="...", groundedness=None, claims=[Claim("c", False)])  # nothing retrieved
    card = scorecard.strategy_card(INFOS[1], [a, b])
    assert card.hallucinations == 1
    assert card.metrics["groundedness"].value == 0.5


def test_an_endpoint_that_stops_answering_ends_the_run_with_answers_kept() -> None:
    import httpx

    from tandem.workloads.evaluation.runner import DOWN_AFTER, Scoring, ask_all

    served: list[str] = []

    def endpoint(request: httpx.Request) -> httpx.Response:
        if len(served) >= 2:
            raise httpx.ConnectError("connection refused", request=request)
        served.append(request.headers["Authorization"])
        body = {"choices": [{"message": {"content": "The answer is x."}}], "citations": [], "usage": {}}
        return httpx.Response(200, json=body)

    client = httpx.Client(transport=httpx.MockTransport(endpoint), base_url="http://gateway/v1")
    events: list[dict[str, object]] = []
    records, warnings = ask_all(
        client,
        INFOS[:2],
        QUESTIONS,
        lambda tenant: {"Authorization": f"Bearer key-of-{tenant or 'staff'}"},
        Scoring(None, []),
        32,
        events.append,
    )
    assert len(records) == 2 * len(QUESTIONS)  # every question has its record, answered or not
    assert [r.error is None for r in records[:2]] == [True, True]
    assert records[0].correct is True  # "x" is in "The answer is x."
    unreachable = [r for r in records if r.error and r.error.startswith("endpoint unreachable")]
    assert len(unreachable) == DOWN_AFTER
    assert all(r.error == "not asked: the endpoint stopped answering" for r in records[2 + DOWN_AFTER :])
    assert len(warnings) == 1 and "stopped answering" in warnings[0]
    assert served == ["Bearer key-of-staff"] * 2
    card = scorecard.build("ev", "assistant", INFOS[:2], records, len(QUESTIONS), False, None)
    assert not card.complete and card.strategies[0].answered == 2


def test_the_result_line_fits_a_termination_message() -> None:
    import json

    from tandem.workloads.evaluation.__main__ import fit, summary

    many = [StrategyInfo(f"strategy-{i}", "rag", None, True, "rag") for i in range(16)]
    recs = [r for i in many for r in records(i.name, 4, True, True)]
    card = scorecard.build("ev", "assistant", many, recs, len(QUESTIONS), True, None, ["w" * 300] * 5)
    whole = summary(card, [])
    assert len(json.dumps({"result": whole})) > 4096  # too big as it stands
    fitted = fit(whole)
    assert len(json.dumps({"result": fitted}).encode()) <= 4096
    assert fitted["warnings"] == [] and fitted["questions"] == 9
    assert fitted["strategies"] == whole["strategies"][: len(fitted["strategies"])]
    small = summary(scorecard.build("ev", "assistant", INFOS, ALL, len(QUESTIONS), True, None), [])
    assert fit(small) == small  # what fits is left alone
