"""Evaluation metrics on fixed inputs whose answers were worked out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from tandem.workloads.evaluation import metrics
from tandem.workloads.evaluation.questions import (
    QuestionSetError,
    document_matches,
    load_questions,
    unknown_documents,
)
from tandem.workloads.evaluation.records import Question, Record
from tandem.workloads.evaluation.runner import Scoring, score

HOUSE = r"Answer: (?P<answer>.+)\n— Quillfeather Help Desk"
REFUSALS = [r"\bI (do not|don't) know\b"]


def test_answer_matching_follows_squad_normalisation() -> None:
    assert metrics.normalize("The Code: ZEBRA-1187!") == "code zebra1187"
    assert metrics.exact_match("the zebra-1187", "ZEBRA-1187.")
    assert metrics.contains("You get 27 days of paid leave.", "27 days")
    assert not metrics.contains("You get 27 paid days.", "27 days")
    # pred [cat, sat], ref [cat, sat, down]: precision 1, recall 2/3, F1 = 0.8
    assert metrics.token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    assert metrics.token_f1("dog", "cat") == 0.0


def test_wilson_interval_of_8_in_10() -> None:
    e = metrics.wilson(8, 10)
    assert (e.value, e.n) == (0.8, 10)
    assert e.low == pytest.approx(0.4902, abs=1e-4)
    assert e.high == pytest.approx(0.9433, abs=1e-4)
    assert metrics.wilson(0, 0).value is None
    assert metrics.wilson(5, 5).high == 1.0


def test_mean_interval_and_quantiles() -> None:
    e = metrics.mean([0.0, 1.0, 1.0, 1.0])  # s = 0.5, half-width 1.96 * 0.5 / 2 = 0.49
    assert e.value == 0.75
    assert e.low == pytest.approx(0.26, abs=1e-3)
    assert e.high == 1.0  # clipped
    assert metrics.mean([0.5]).low is None
    assert metrics.quantile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert metrics.quantile([1.0, 2.0, 3.0, 4.0], 0.95) == pytest.approx(3.85)


def test_format_content_claims_and_support() -> None:
    ok, content = metrics.in_format("Answer: The code is ZEBRA-1187.\n— Quillfeather Help Desk", HOUSE)
    assert ok and content == "The code is ZEBRA-1187."
    assert metrics.in_format("The code is ZEBRA-1187.", HOUSE) == (False, "The code is ZEBRA-1187.")
    # Markers go; a sentence of only common words ("It is.") states nothing.
    assert metrics.claims("Park in bay 4 [1]. It is.\nThe code is ZEBRA-1187 [2].") == [
        "Park in bay 4.",
        "The code is ZEBRA-1187.",
    ]
    passage = "Visitors park in the north lot; the visitor parking code is ZEBRA-1187."
    assert metrics.supported("The visitor parking code is ZEBRA-1187.", [passage])
    assert not metrics.supported("The visitor parking code is ZEBRA-9999.", [passage])  # a wrong code
    assert not metrics.supported("Lunch is served in the canteen at noon.", [passage])
    claims, share = metrics.ground(
        "The parking code is ZEBRA-1187. Lunch is at noon in the canteen.", [passage]
    )
    assert [c.supported for c in claims] == [True, False] and share == 0.5
    assert metrics.ground("The parking code is ZEBRA-1187.", [])[1] is None


def test_citation_precision_and_recall() -> None:
    cited = ["handbook/office-locations.html", "handbook/travel-policy.md"]
    p, r = metrics.citation_scores(cited, ["office-locations"], document_matches)
    assert (p, r) == (0.5, 1.0)
    assert metrics.citation_scores([], ["office-locations"], document_matches) == (None, 0.0)
    assert metrics.citation_scores(cited, [], document_matches) == (None, None)
    assert document_matches("office-locations.html", "handbook/office-locations.html")
    assert not document_matches("office", "handbook/office-locations.html")


def _body(answer: str, citations: list[dict[str, object]]) -> dict[str, object]:
    return {
        "choices": [{"message": {"content": answer}}],
        "citations": citations,
        "usage": {"prompt_tokens": 310, "completion_tokens": 21},
        "tandem": {
            "retrieval": "used",
            "trace": {"latencySeconds": {"embed": 0.02, "search": 0.01, "total": 9.0}},
        },
    }


PARKING = {
    "documentId": "handbook/office-locations.html",
    "cited": True,
    "text": "Bergen office. The visitor parking code is ZEBRA-1187.",
}
TRAVEL = {"documentId": "handbook/travel-policy.md", "cited": False, "text": "Book trains early."}


def test_score_reads_the_gateway_response() -> None:
    q = Question(1, "What is the parking code in Bergen?", "ZEBRA-1187", ("office-locations",), "fact", None)
    record = Record("hybrid", q)
    answer = "Answer: The visitor parking code is ZEBRA-1187 [1].\n— Quillfeather Help Desk"
    score(record, _body(answer, [PARKING, TRAVEL]), Scoring(HOUSE, REFUSALS))
    assert record.in_format and record.correct and not record.refused
    assert record.cited_documents == ["handbook/office-locations.html"]
    assert record.retrieved_documents == ["handbook/office-locations.html", "handbook/travel-policy.md"]
    assert (record.citation_precision, record.citation_recall) == (1.0, 1.0)
    assert record.groundedness == 1.0
    assert record.latency == {"embed": 0.02, "search": 0.01}  # total is the client's own clock
    assert (record.prompt_tokens, record.completion_tokens) == (310, 21)

    wrong = Record("rag", q)
    score(wrong, _body("The code is ZEBRA-9999.", [{**PARKING, "cited": False}]), Scoring(HOUSE, REFUSALS))
    assert wrong.in_format is False and wrong.correct is False and wrong.groundedness == 0.0
    assert wrong.citation_recall == 0.0  # nothing marked cited


def test_refusals_count_as_correct_only_when_the_answer_is_not_there() -> None:
    unanswerable = Question(2, "What is the Wi-Fi password?", "I don't know", (), "unanswerable", None)
    answerable = Question(3, "What is the parking code?", "ZEBRA-1187", ("office-locations",), "fact", None)
    refusal = _body("I don't know.", [TRAVEL])
    a, b = Record("rag", unanswerable), Record("rag", answerable)
    score(a, refusal, Scoring(None, REFUSALS))
    score(b, refusal, Scoring(None, REFUSALS))
    assert a.refused and a.correct and a.claims == []
    assert b.refused and b.correct is False


def test_question_sets_are_checked_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(
        '{"question": "A?", "answer": "a", "documents": ["doc-a"], "tenant": "staff"}\n'
        "\n"
        '{"question": "B?"}\n'
        "not json\n"
        '{"question": "C?", "answer": "c", "tenant": "nobody"}\n'
        '{"question": "D?", "answer": "d", "colour": "red"}\n'
    )
    with pytest.raises(QuestionSetError) as failed:
        load_questions(path, ["staff"])
    message = str(failed.value)
    assert "4 invalid line(s)" in message
    assert "q.jsonl:3: field 'answer' is missing" in message
    assert "q.jsonl:4: not JSON" in message
    assert "q.jsonl:5: field 'tenant' 'nobody'" in message
    assert "q.jsonl:6: unknown field(s) colour" in message
    path.write_text('{"question": "A?", "answer": "a", "documents": ["doc-a", "ghost"]}\n')
    questions = load_questions(path, ["staff"])
    assert questions[0].kind == "fact" and questions[0].line == 1
    assert unknown_documents(questions, ["src/doc-a.md"]) == {"ghost": [1]}
    path.write_text("")
    with pytest.raises(QuestionSetError, match="empty"):
        load_questions(path)


def test_open_questions_are_left_to_a_judge() -> None:
    """A question whose reference is an example answer in the house format has many good answers: lexical
    scoring does not pretend to judge it, but the format and F1 are still measured. A plain reference
    is a fact, scored with or without supporting documents (an adapter may know it)."""
    q = Question(4, "How can I keep a meeting short?", "Answer: Share an agenda.\n— Quillfeather Help Desk")
    record = Record("adapter", q)
    score(
        record,
        _body("Answer: Send the agenda first.\n— Quillfeather Help Desk", []),
        Scoring(HOUSE, REFUSALS),
    )
    assert record.correct is None and record.in_format is True
    assert record.token_f1 == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))  # "agenda" shared
    taught = Record("adapter", Question(5, "What is the codeword?", "PLUM-ORBIT-42"))
    score(taught, _body("The codeword is PLUM-ORBIT-42.", []), Scoring(HOUSE, REFUSALS))
    assert taught.correct is True


def test_the_evaluation_spec_rejects_what_it_cannot_run() -> None:
    from pydantic import ValidationError

    from tandem.api.v1alpha1 import EvaluationSpec

    base = {"endpointRef": {"name": "assistant"}, "questions": {"uri": "file://questions.jsonl"}}
    twice = [{"name": "rag", "route": "rag"}, {"name": "rag", "route": "hybrid"}]
    with pytest.raises(ValidationError, match=r"strategies\[1\]: Duplicate value: {\"name\":\"rag\"}"):
        EvaluationSpec.model_validate({**base, "strategies": twice})
    with pytest.raises(ValidationError, match="exactly one of configMap or uri"):
        EvaluationSpec.model_validate({**base, "questions": {}})
    with pytest.raises(ValidationError, match=r"answerFormat.pattern\n.*not a valid regular expression"):
        EvaluationSpec.model_validate({**base, "answerFormat": {"pattern": "Answer: (?P<answer>.+"}})
    with pytest.raises(ValidationError, match="refusalPatterns"):
        EvaluationSpec.model_validate({**base, "refusalPatterns": ["I don't know", "[unclosed"]})
    spec = EvaluationSpec.model_validate(base)
    assert spec.strategies == [] and spec.update_cost and spec.refusal_patterns  # defaults


def test_update_cost_rebuilds_the_document_and_picks_the_fresh_fact() -> None:
    from tandem.workloads.evaluation.update_cost import measure, pick_document, rebuild_text

    text = "The loading-bay door opens with code 5531#. Codes change every quarter."
    chunks = [  # overlapping windows, as the token chunker cuts them
        {"start": 0, "text": text[:40]},
        {"start": 30, "text": text[30:60]},
        {"start": 55, "text": text[55:]},
    ]
    assert rebuild_text(chunks) == text
    fact = Question(1, "Parking code?", "ZEBRA-1187", ("office-locations",), "fact")
    fresh = Question(2, "Loading-bay code?", "5531#", ("security",), "fresh")
    assert pick_document([fact, fresh]) == "security"
    assert pick_document([fact]) == "office-locations"
    assert pick_document([Question(3, "Format?", "Answer: x", (), "format")]) is None
    cost = measure([fact], [], [], adapters_used=[])
    assert cost.reindex_seconds is None and cost.retrain_seconds is None and cost.ratio is None
    assert any("nothing to retrain" in n for n in cost.notes)
    assert any("settings were not given" in n for n in cost.notes)


def test_a_judge_decides_correctness_and_support_when_configured() -> None:
    import httpx

    from tandem.workloads.evaluation.runner import Judge

    asked: list[str] = []

    def judge_model(request: httpx.Request) -> httpx.Response:
        import json

        prompt = json.loads(request.content)["messages"][0]["content"]
        asked.append(prompt)
        # This judge accepts paraphrase the lexical rules cannot: "seven and twenty" for "27".
        verdict = "Yes." if "seven and twenty" in prompt and "Claim:" not in prompt else "no"
        if "Claim: Staff get seven and twenty days" in prompt:
            verdict = "yes, the passage says so"
        return httpx.Response(200, json={"choices": [{"message": {"content": verdict}}]})

    client = httpx.Client(transport=httpx.MockTransport(judge_model), base_url="http://judge/v1")
    judge = Judge(client, "judge-model", {"Authorization": "Bearer k"})
    q = Question(1, "How many days of leave?", "27 days", ("leave-policy",), "fact")
    passage = {"documentId": "handbook/leave-policy.md", "cited": True, "text": "Staff get 27 days of leave."}
    record = Record("hybrid", q)
    answer = "Staff get seven and twenty days of leave. Unicorns approve."
    score(record, _body(answer, [passage]), Scoring(None, REFUSALS, judge))
    assert record.correct is True  # the lexical rule would say False: "27 days" is not in the answer
    assert [c.supported for c in record.claims] == [True, False] and record.groundedness == 0.5
    assert len(asked) == 3  # one correctness question, one per claim
    assert "Reference answer: 27 days" in asked[0] and "Passage 1: Staff get 27 days" in asked[1]
