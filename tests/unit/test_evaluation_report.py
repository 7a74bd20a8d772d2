"""The evaluation report: every strategy's figures in the Markdown table, a self-contained HTML page whose
data is escaped and whose plots are inline SVG, a partial-results notice exactly when results are partial,
and three files written whose scorecard.json reads back to the same numbers."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from tandem.workloads.evaluation.records import (
    Estimate,
    Expectation,
    Quantiles,
    Question,
    Recommendation,
    Record,
    Rung,
    Scorecard,
    StrategyCard,
    StrategyInfo,
    UpdateCost,
)
from tandem.workloads.evaluation.report import render_html, render_markdown, write_report

SCRIPT = "<script>alert(1)</script>"
EN, TIMES = "\N{EN DASH}", "\N{MULTIPLICATION SIGN}"  # named: ruff takes the characters for typos
PARKING = Question(
    line=1,
    question="What is the Bergen parking code?",
    reference="ZEBRA-1187",
    documents=("handbook/offices.html",),
    kind="fresh",
)
SALARY = Question(line=2, question="What is the CEO's salary?", reference="", kind="unanswerable")


def strategy(
    name: str, rung: Rung, correct: Estimate, latency: tuple[float, float], prompt: float, errors: int = 0
) -> StrategyCard:
    return StrategyCard(
        info=StrategyInfo(name=name, route=name, adapter=None, retrieval=rung != "fine-tune", rung=rung),
        answered=2 - errors,
        errors=errors,
        metrics={
            "correct": correct,
            "format": Estimate(0.5, 0.09, 0.91, 2),
            "citationRecall": Estimate(1.0, 0.21, 1.0, 1),
            "groundedness": Estimate(None, None, None, 0),
            "refusal": Estimate(1.0, None, None, 1),
        },
        by_kind={
            "unanswerable": {"correct": Estimate(1.0, None, None, 1)},
            "fresh": {"correct": Estimate(correct.value, None, None, 1)},
        },
        latency={"total": Quantiles(*latency, n=2), "search": Quantiles(0.01, 0.02, 2)},
        tokens={"prompt": Estimate(prompt, None, None, 2), "completion": Estimate(21.5, None, None, 2)},
        hallucinations=0,
    )


def records(error: bool, unfinished: bool) -> list[Record]:
    hybrid_parking = (
        Record(strategy="hybrid", question=PARKING, error="timeout after 60 s <b>")
        if error
        else Record(strategy="hybrid", question=PARKING, answer="ZEBRA-1187 [1]", correct=True)
    )
    answers = [
        Record(
            strategy="rag",
            question=PARKING,
            answer=f"The code is ZEBRA-1187 [1]. {SCRIPT}",
            correct=True,
            cited_documents=["handbook/offices.html"],
        ),
        Record(strategy="style", question=PARKING, answer="I believe it is 4411.", correct=False),
        hybrid_parking,
        Record(strategy="rag", question=SALARY, answer="I cannot answer that.", correct=True, refused=True),
        Record(strategy="style", question=SALARY, answer="Not in the handbook.", correct=True, refused=True),
        Record(strategy="hybrid", question=SALARY, answer="I can't say.", correct=True, refused=True),
    ]
    return answers[:-1] if unfinished else answers


def update_cost(measured: bool) -> UpdateCost:
    if measured:
        return UpdateCost("handbook/offices.html", 0.84, 6.5, "house-style", 412.0)
    return UpdateCost(None, None, None, None, None, notes=["no adapter has a recorded training run"])


def scorecard(*, error: bool = False, unfinished: bool = False, cost: bool = True) -> Scorecard:
    return Scorecard(
        evaluation="handbook-eval",
        endpoint="default/assistant",
        created="2026-03-01T12:00:00Z",
        questions=2,
        complete=not (error or unfinished),
        strategies=[
            strategy("rag", "rag", Estimate(0.8, 0.58, 0.92, 10), (0.412, 1.25), 612.0),
            strategy("style", "fine-tune", Estimate(0.35, 0.18, 0.57, 10), (0.201, 0.33), 48.0),
            strategy(
                "hybrid", "hybrid", Estimate(0.9, 0.7, 0.97, 10), (0.455, 1.5), 640.4, errors=int(error)
            ),
        ],
        update_cost=update_cost(cost),
        expectations=[
            Expectation("RAG beats the adapter alone on fresh facts", True, "0.80 against 0.35"),
            Expectation("The adapter keeps the house format", False, "format 0.50"),
            Expectation("Hybrid refuses unanswerable questions", None, "too few unanswerable questions"),
        ],
        recommendation=Recommendation(
            strategy="hybrid", rung="hybrid", reason="Most correct, within latency."
        ),
        records=records(error, unfinished),
        warnings=["unknown document id handbook/gone.md"],
    )


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    """Each HTML page rendered once for the module: the plots take a few hundred milliseconds each."""
    return {
        "complete": render_html(scorecard()),
        "error": render_html(scorecard(error=True)),
        "no cost": render_html(scorecard(cost=False)),
    }


def headline_rows(markdown: str) -> dict[str, str]:
    """The headline table's rows by strategy name (the recommended one's name is bold)."""
    section = markdown.split("## Strategies")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][2:]  # after header and rule
    return {line.split(" | ")[0].strip("| *"): line for line in rows}


def test_markdown_leads_with_the_recommendation_and_shows_every_strategys_figures() -> None:
    markdown = render_markdown(scorecard(error=True))
    lines = markdown.splitlines()
    assert lines[0] == "# Evaluation report: handbook-eval"
    assert lines[2] == "Endpoint default/assistant · 2026-03-01T12:00:00Z · 2 questions · 3 strategies"
    assert lines[4] == "**Recommendation: hybrid (hybrid rung). Most correct, within latency.**"

    rows = headline_rows(markdown)
    assert list(rows) == ["rag", "style", "hybrid"]
    assert rows["rag"] == (
        f"| rag | rag | 0.80 (0.58{EN}0.92) | — | 0.50 (0.09{EN}0.91) | 1.00 (0.21{EN}1.00) | — | 1.00 "
        "| 0.412 | 1.25 | 612 | 22 | 0 |"
    )
    for figure in ("| style | fine-tune |", f"| 0.35 (0.18{EN}0.57) |", "| 0.201 | 0.330 | 48 | 22 | 0 |"):
        assert figure in rows["style"]
    # The recommended strategy stands out; its error is counted.
    assert rows["hybrid"].startswith(f"| **hybrid** | hybrid | 0.90 (0.70{EN}0.97) |")
    assert rows["hybrid"].endswith("| 0.455 | 1.50 | 640 | 22 | 1 |")


def test_markdown_has_kinds_update_cost_expectations_and_each_answer() -> None:
    markdown = render_markdown(scorecard())
    kinds = markdown.split("## Correct by question kind")[1].split("\n## ")[0]
    assert "| kind | questions | rag | style | hybrid |" in kinds
    # Known kinds in their fixed order, whatever order the scorecard lists them in.
    assert kinds.index("| fresh | 1 | 0.80 | 0.35 | 0.90 |") < kinds.index("| unanswerable | 1 | 1.00 |")
    assert "## Format by question kind" not in markdown  # measured on no kind
    cost = markdown.split("## Update cost")[1].split("\n## ")[0]
    assert "(handbook/offices.html): 0.840 s, plus 6.50 s to load the embedding model" in cost
    assert "(house-style): 412 s." in cost and f"Retraining takes 490{TIMES} as long" in cost
    assert "- ✓ **holds**: RAG beats the adapter alone on fresh facts (0.80 against 0.35)" in markdown
    assert "- ✗ **does not hold**: The adapter keeps the house format (format 0.50)" in markdown
    assert "- ? **cannot tell**: Hybrid refuses unanswerable questions" in markdown
    assert "- unknown document id handbook/gone.md" in markdown
    questions = markdown.split("## Questions")[1]
    assert questions.index("### 1. What is the Bergen parking code?") < questions.index(
        "### 2. What is the CEO"
    )
    assert "- **style**: ✗ wrong · cited nothing · “I believe it is 4411.”" in questions
    assert (
        "- **rag**: ✓ correct · cited handbook/offices.html · “The code is ZEBRA-1187 \\[1\\]." in questions
    )
    assert "Reference: —" in questions  # the unanswerable question has none
    # Data text cannot turn into markup: the tag is backslash-escaped.
    assert SCRIPT not in markdown and r"\<script\>alert(1)\</script\>" in markdown


def test_the_partial_results_notice_appears_exactly_when_results_are_partial(pages: dict[str, str]) -> None:
    assert "PARTIAL RESULTS" not in render_markdown(scorecard())
    assert "PARTIAL RESULTS" not in pages["complete"]

    errored = render_markdown(scorecard(error=True))
    assert "> **⚠ PARTIAL RESULTS: 1 of 6 answers failed (marked below)." in errored
    assert "- **hybrid**: ⚠ error: timeout after 60 s \\<b\\>" in errored
    assert "PARTIAL RESULTS: 1 of 6 answers failed" in pages["error"]

    assert "PARTIAL RESULTS: 1 answer was never asked for." in render_markdown(scorecard(unfinished=True))
    # The flag alone is enough: the builder knows better than a count of records.
    flagged = dataclasses.replace(scorecard(), complete=False)
    assert "PARTIAL RESULTS: the run stopped before" in render_markdown(flagged)


def test_html_is_self_contained_escaped_and_has_three_plots(pages: dict[str, str]) -> None:
    page = pages["error"]
    assert page.startswith("<!doctype html>")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "timeout after 60 s &lt;b&gt;" in page
    for external in ('src="http', 'href="http', "<link", "@import"):
        assert external not in page
    assert not re.search(r"url\((?!#)", page)  # SVG clip paths point inside the page only
    assert page.count("<svg") == 3
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page
    assert "<strong>Recommendation: hybrid (hybrid rung). Most correct, within latency.</strong>" in page
    assert f'<td class="num">0.80 (0.58{EN}0.92)</td>' in page
    assert '<tr class="recommended">\n<td>hybrid</td>' in page
    # Ids are unique across the page, or one plot would clip or draw with another plot's shapes.
    ids = re.findall(r' id="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    assert set(re.findall(r'(?:href="#|url\(#)([^")]+)', page)) <= set(ids)  # and every reference resolves
    assert len(page) < 150_000


def test_html_without_update_cost_figures_says_why_instead_of_plotting(pages: dict[str, str]) -> None:
    page = pages["no cost"]
    assert page.count("<svg") == 2
    assert "No update-cost plot" in page
    assert "no adapter has a recorded training run" in page


def test_write_report_writes_three_files_and_the_scorecard_reads_back(
    tmp_path: Path, pages: dict[str, str]
) -> None:
    card = scorecard(error=True)
    paths = write_report(card, tmp_path / "out")
    assert [p.name for p in paths] == ["report.md", "report.html", "scorecard.json"]
    # Nothing else is left behind: the temporary files were renamed over their targets.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "report.html",
        "report.md",
        "scorecard.json",
    ]
    assert paths[0].read_text() == render_markdown(card)
    assert paths[1].read_text() == pages["error"]  # the same scorecard gives the same bytes
    saved = json.loads(paths[2].read_text())
    assert saved == json.loads(json.dumps(dataclasses.asdict(card)))
    rag = saved["strategies"][0]
    assert rag["metrics"]["correct"] == {"value": 0.8, "low": 0.58, "high": 0.92, "n": 10}
    assert rag["latency"]["total"] == {"p50": 0.412, "p95": 1.25, "n": 2}
    assert saved["update_cost"]["retrain_seconds"] == 412.0
    assert saved["records"][2]["error"] == "timeout after 60 s <b>"


def test_a_scorecard_with_no_strategies_or_records_still_renders() -> None:
    card = dataclasses.replace(
        scorecard(cost=False), strategies=[], records=[], expectations=[], complete=False
    )
    markdown = render_markdown(card)
    assert "No strategy was evaluated." in markdown and "None were checked." in markdown
    page = render_html(card)
    assert "<svg" not in page
    assert "No strategy has both an accuracy and a latency figure" in page
    assert "No answers were recorded." in page
