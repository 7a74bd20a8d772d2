"""From scored records to the scorecard: figures per strategy and kind, the expected shape of the
RAG-versus-fine-tuning debate checked on the data, and a recommendation derived from the numbers.

No recommendation from a broken run: when a strategy's answers are more than ERROR_SHARE_LIMIT (10 %)
errors, or a dependency was down while document ids or the update cost were checked, the scorecard is
not trustworthy, says why (errors by cause), and recommends nothing. Not even among the strategies that
ran cleanly: the ladder is a comparison, and a missing rung is exactly what would make a cheaper rung
look sufficient (a vector store that was down made "the adapter without retrieval" win)."""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Sequence

from . import metrics
from .records import (
    ERROR_SHARE_LIMIT,
    LADDER,
    Estimate,
    Expectation,
    Quantiles,
    Recommendation,
    Record,
    Rung,
    Scorecard,
    StrategyCard,
    StrategyInfo,
    UpdateCost,
)

STAGES = ("total", "embed", "search", "generation")
RUNG_WORDS: dict[Rung, str] = {
    "prompt": "the base model prompted alone",
    "rag": "retrieval (RAG) without fine-tuning",
    "fine-tune": "the fine-tuned adapter without retrieval",
    "hybrid": "the adapter with retrieval",
    "raft-hybrid": "the RAFT adapter with retrieval",
}


def rung_of(adapter: str | None, retrieval: bool, raft: bool) -> Rung:
    if adapter is None:
        return "rag" if retrieval else "prompt"
    if not retrieval:
        return "fine-tune"
    return "raft-hybrid" if raft else "hybrid"


def figures(records: Sequence[Record]) -> dict[str, Estimate]:
    answered = [r for r in records if r.error is None]
    answerable = [r for r in answered if r.question.answerable]
    unanswerable = [r for r in answered if not r.question.answerable]
    return {
        "correct": metrics.proportion([r.correct for r in answered]),
        "factual": metrics.proportion([r.correct for r in answerable if r.question.documents]),
        "exactMatch": metrics.proportion([r.exact_match for r in answerable]),
        "tokenF1": metrics.mean([r.token_f1 for r in answerable]),
        "format": metrics.proportion([r.in_format for r in answered]),
        "citationPrecision": metrics.mean([r.citation_precision for r in answered]),
        "citationRecall": metrics.mean([r.citation_recall for r in answered]),
        "groundedness": metrics.mean([r.groundedness for r in answered]),
        "refusal": metrics.proportion([r.refused for r in unanswerable]),
        "falseRefusal": metrics.proportion([r.refused for r in answerable]),
    }


def strategy_card(info: StrategyInfo, records: Sequence[Record]) -> StrategyCard:
    answered = [r for r in records if r.error is None]
    kinds = sorted({r.question.kind for r in records})
    latency: dict[str, Quantiles] = {}
    for stage in STAGES:
        values = [r.latency[stage] for r in answered if stage in r.latency]
        if values:
            latency[stage] = metrics.quantiles(values)
    return StrategyCard(
        info=info,
        answered=len(answered),
        errors=len(records) - len(answered),
        metrics=figures(records),
        by_kind={k: figures([r for r in records if r.question.kind == k]) for k in kinds},
        latency=latency,
        tokens={
            "prompt": metrics.mean([r.prompt_tokens for r in answered], bounds=None),
            "completion": metrics.mean([r.completion_tokens for r in answered], bounds=None),
        },
        hallucinations=sum(not c.supported for r in answered if r.groundedness is not None for c in r.claims),
        errors_by_cause=dict(Counter(r.error_cause or "unknown" for r in records if r.error is not None)),
    )


def causes(card: StrategyCard) -> str:
    """`milvus 25` or `milvus 20, timeout 5`: a strategy's errors by cause, most first."""
    counts = sorted(card.errors_by_cause.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{cause} {count}" for cause, count in counts)


def untrustworthy(cards: Sequence[StrategyCard], problems: Sequence[str] = ()) -> list[str]:
    """Why the run cannot be trusted: each strategy over the error limit, with its errors by cause, and
    the dependency problems met while checking document ids or timing the update cost."""
    reasons = [
        f"{c.info.name}: {c.errors} of {c.answered + c.errors} answers are errors ({causes(c)}), "
        f"over the {ERROR_SHARE_LIMIT:.0%} limit"
        for c in cards
        if not c.clean
    ]
    return reasons + list(problems)


def _value(card: StrategyCard, metric: str, kind: str | None = None) -> Estimate:
    table = card.metrics if kind is None else card.by_kind.get(kind, {})
    return table.get(metric) or Estimate(None, None, None, 0)


def _best(
    cards: Sequence[StrategyCard], rungs: Sequence[Rung], metric: str, kind: str | None
) -> StrategyCard | None:
    """The strategy of these rungs scoring highest on the metric (ties: the cheaper rung)."""
    candidates = [c for c in cards if c.info.rung in rungs and _value(c, metric, kind).value is not None]
    if not candidates:
        return None
    return max(candidates, key=lambda c: (_value(c, metric, kind).value or 0.0, -LADDER.index(c.info.rung)))


def _fmt(e: Estimate) -> str:
    if e.value is None:
        return "n/a"
    interval = f" ({e.low:.2f}-{e.high:.2f})" if e.low is not None and e.high is not None else ""
    return f"{e.value:.2f}{interval}, n={e.n}"


def _failed(cards: Sequence[StrategyCard]) -> str | None:
    """Evidence that the data cannot decide, when some of these strategies failed too often."""
    failed = [c for c in cards if not c.clean]
    if not failed:
        return None
    return "cannot tell: " + "; ".join(
        f"{c.errors} of {c.info.name}'s {c.answered + c.errors} answers are errors ({causes(c)})"
        for c in failed
    )


def _beats(
    cards: Sequence[StrategyCard], winner: Rung, loser: Rung, metric: str, kind: str | None, claim: str
) -> Expectation:
    failed = _failed([c for c in cards if c.info.rung in (winner, loser)])
    if failed:
        return Expectation(claim, None, failed)
    a = _best(cards, [winner], metric, kind)
    b = _best(cards, [loser], metric, kind)
    if a is None or b is None:
        missing = winner if a is None else loser
        where = f" on questions of kind '{kind}'" if kind else ""
        return Expectation(claim, None, f"no {missing} strategy with a '{metric}' figure{where}")
    ea, eb = _value(a, metric, kind), _value(b, metric, kind)
    assert ea.value is not None and eb.value is not None
    holds = ea.value > eb.value
    separated = ea.low is not None and eb.high is not None and ea.low > eb.high
    note = "intervals do not overlap" if separated else "intervals overlap: more questions would tell"
    return Expectation(
        claim,
        holds,
        f"{metric}{' on ' + kind if kind else ''}: {a.info.name} {_fmt(ea)} vs {b.info.name} {_fmt(eb)}"
        + (f"; {note}" if holds else ""),
    )


def expectations(cards: Sequence[StrategyCard], has_format: bool) -> list[Expectation]:
    out = [
        _beats(cards, "rag", "fine-tune", "correct", "fresh", "RAG beats the adapter alone on fresh facts"),
    ]
    if has_format:
        out.append(
            _beats(
                cards, "fine-tune", "rag", "format", None, "The adapter beats RAG alone on the answer format"
            )
        )
    hybrids = [c for c in cards if c.info.rung in ("hybrid", "raft-hybrid")]
    claim = "Hybrid (adapter + RAG) is best on both"
    if not hybrids:
        out.append(Expectation(claim, None, "no strategy combines an adapter with retrieval"))
        return out
    failed = _failed(cards)
    if failed:  # "best on both" compares every strategy
        out.append(Expectation(claim, None, failed))
        return out
    hybrid = max(hybrids, key=lambda c: _value(c, "correct").value or 0.0)
    wanted = ["correct"] + (["format"] if has_format else [])
    shortfalls = []
    for metric in wanted:
        mine = _value(hybrid, metric).value
        for other in cards:
            theirs = _value(other, metric).value
            if other is not hybrid and theirs is not None and (mine is None or theirs > mine):
                shortfalls.append(f"{other.info.name} has {metric} {theirs:.2f} > {mine or 0:.2f}")
    evidence = "; ".join(shortfalls) or ", ".join(f"{m} {_fmt(_value(hybrid, m))}" for m in wanted)
    out.append(Expectation(claim, not shortfalls, f"{hybrid.info.name}: {evidence}"))
    return out


def recommend(cards: Sequence[StrategyCard], has_format: bool, cost: UpdateCost | None) -> Recommendation:
    """Climb the ladder (prompt -> RAG -> fine-tune -> both) only as far as the numbers require: the
    cheapest strategy that the best one does not clearly beat on any axis (its figure reaches the best
    one's lower bound). The axes are what the rungs are for: facts from the knowledge base, and the
    house format when there is one."""
    axes = ["factual"] + (["format"] if has_format else [])
    scored = [c for c in cards if all(_value(c, m).value is not None for m in axes)]
    if not scored:
        return Recommendation(None, None, "no strategy has answers to score; see the errors")

    def overall(c: StrategyCard) -> float:
        return sum(_value(c, m).value or 0.0 for m in axes) / len(axes)

    best = max(scored, key=lambda c: (overall(c), -LADDER.index(c.info.rung)))
    ladder = sorted(scored, key=lambda c: (LADDER.index(c.info.rung), -overall(c)))
    for candidate in ladder:
        close = all((_value(candidate, m).value or 0.0) >= (_value(best, m).low or 0.0) for m in axes)
        if close:
            chosen = candidate
            break
    else:  # pragma: no cover - the best strategy is always within its own interval
        chosen = best
    figures_text = ", ".join(f"{m} {_fmt(_value(chosen, m))}" for m in axes)
    cheaper = [c for c in ladder if LADDER.index(c.info.rung) < LADDER.index(chosen.info.rung)]
    why_not = "; ".join(
        f"{c.info.name} ({c.info.rung}) falls short on "
        + ", ".join(
            f"{m} {_value(c, m).value or 0:.2f} (below {best.info.name}'s lower bound "
            f"{_value(best, m).low or 0:.2f})"
            for m in axes
            if (_value(c, m).value or 0.0) < (_value(best, m).low or 0.0)
        )
        for c in cheaper
    )
    reason = f"{chosen.info.name}: {RUNG_WORDS[chosen.info.rung]} ({figures_text})"
    if chosen is not best:
        reason += (
            f"; {best.info.name} scores higher ({overall(best):.2f} vs {overall(chosen):.2f}), "
            "but not clearly: this one reaches its lower bounds"
        )
    if why_not:
        reason += f". Cheaper rungs: {why_not}"
    if chosen.info.adapter and cost is not None and cost.ratio is not None:
        reason += (
            f". Keep facts in the knowledge base: re-indexing a document took {cost.reindex_seconds:.1f} s, "
            f"retraining the adapter {cost.retrain_seconds:.0f} s"
        )
    return Recommendation(chosen.info.name, chosen.info.rung, reason)


def build(
    evaluation: str,
    endpoint: str,
    infos: Sequence[StrategyInfo],
    records: Sequence[Record],
    questions: int,
    has_format: bool,
    cost: UpdateCost | None,
    warnings: Sequence[str] = (),
    problems: Sequence[str] = (),
) -> Scorecard:
    """The scorecard. `problems`: dependencies found down while checking document ids or timing the
    update cost (they make the run untrustworthy, as a strategy's errors over the limit do)."""
    cards = [strategy_card(i, [r for r in records if r.strategy == i.name]) for i in infos]
    complete = len(records) == questions * len(infos) and all(r.error is None for r in records)
    reasons = untrustworthy(cards, problems)
    if reasons:
        recommendation = Recommendation(
            None,
            None,
            "This run is not trustworthy, so it recommends nothing: "
            + "; ".join(reasons)
            + ". Fix the cause and run the evaluation again",
        )
    else:
        recommendation = recommend(cards, has_format, cost)
    return Scorecard(
        evaluation=evaluation,
        endpoint=endpoint,
        created=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        questions=questions,
        complete=complete,
        strategies=cards,
        update_cost=cost,
        # A claim about a strategy that failed too often is left undecided: an outage's zeros would
        # otherwise confirm or refute the debate.
        expectations=expectations(cards, has_format),
        recommendation=recommendation,
        records=list(records),
        warnings=list(warnings),
        untrustworthy=reasons,
    )
