"""The evaluation report: a scorecard as Markdown (terminal, pull request) and as one self-contained HTML file
with plots, written beside `scorecard.json`.

Both renderings are built from the same tables and sentences below, so they cannot disagree on a figure.
Every piece of text that comes from the data (questions, answers, errors, names) is escaped: answers are
model output and may contain anything, including markup.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
import io
import json
import math
import os
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from tandem.workloads.evaluation.records import (
    INTERVALS,
    METRICS,
    Estimate,
    Expectation,
    Quantiles,
    Question,
    Recommendation,
    Record,
    Scorecard,
    StrategyCard,
    UpdateCost,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["render_html", "render_markdown", "write_report"]

DASH = "—"  # a figure that is missing
EN_DASH, TIMES = "\N{EN DASH}", "\N{MULTIPLICATION SIGN}"  # named: they pass for "-" and "x" in source
EXCERPT_CHARS = 240
# The kinds question sets use, in a fixed order so that reports line up; any other kind follows, sorted.
KIND_ORDER = ("fact", "fresh", "format", "unanswerable")
# Beyond this ratio a linear axis shows re-indexing as a bar too thin to see next to retraining.
LOG_SCALE_RATIO = 20.0
# The metrics in the headline table, in column order (keys of StrategyCard.metrics).
HEADLINE_METRICS = ("correct", "factual", "format", "citationRecall", "groundedness", "refusal")
METRIC_LABELS = {
    "correct": "correct",
    "factual": "factual",
    "format": "format",
    "citationRecall": "citation recall",
    "groundedness": "groundedness",
    "refusal": "refusal",
}
# No date or creator in the SVG: the same scorecard must give the same bytes.
_SVG_METADATA: dict[str, Any] = {"Date": None, "Creator": None, "Format": None, "Type": None}


# --- Figures as text ----------------------------------------------------------------------------------


def _fraction(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}"


def _estimate(estimate: Estimate | None) -> str:
    """`0.80 (0.58-0.92)` (an en dash): the value and its 95% interval, or the value alone without one."""
    if estimate is None or estimate.value is None:
        return DASH
    if estimate.low is None or estimate.high is None:
        return _fraction(estimate.value)
    return f"{estimate.value:.2f} ({estimate.low:.2f}{EN_DASH}{estimate.high:.2f})"


def _seconds(value: float | None) -> str:
    """Three significant figures or so: latencies are sub-second, training runs take minutes."""
    if value is None:
        return DASH
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _duration(value: float | None) -> str:
    return DASH if value is None else f"{_seconds(value)} s"


def _tokens(estimate: Estimate | None) -> str:
    return DASH if estimate is None or estimate.value is None else f"{estimate.value:.0f}"


def _ratio(value: float) -> str:
    return f"{value:,.0f}{TIMES}" if value >= 10 else f"{value:.1f}{TIMES}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The start of an answer on one line, cut at a word boundary."""
    flat = _one_line(text)
    if len(flat) <= limit:
        return flat
    cut = flat[:limit].rsplit(" ", 1)[0] or flat[:limit]
    return cut.rstrip(" ,.;:") + "…"


# --- What both renderings show ------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    text_columns: int = 1  # the leading columns that hold names; the rest are figures, right-aligned
    highlight: int | None = None  # row index of the recommended strategy


@dataclass(frozen=True)
class ExpectationView:
    mark: str
    verdict: str
    css: str
    claim: str
    evidence: str


@dataclass(frozen=True)
class AnswerView:
    strategy: str
    mark: str
    verdict: str
    css: str
    cited: str
    excerpt: str
    error: str | None


@dataclass(frozen=True)
class QuestionView:
    number: int
    question: str
    about: str  # kind, line, tenant, supporting documents
    reference: str
    answers: tuple[AnswerView, ...]


def _latency(card: StrategyCard, stage: str) -> Quantiles:
    return card.latency.get(stage) or Quantiles(p50=None, p95=None, n=0)


def _headline_row(card: StrategyCard) -> tuple[str, ...]:
    total = _latency(card, "total")
    return (
        card.info.name,
        card.info.rung,
        *(_estimate(card.metrics.get(key)) for key in HEADLINE_METRICS),
        _seconds(total.p50),
        _seconds(total.p95),
        _tokens(card.tokens.get("prompt")),
        _tokens(card.tokens.get("completion")),
        str(card.errors),
    )


def headline_table(card: Scorecard) -> Table:
    headers = (
        "strategy",
        "rung",
        *(METRIC_LABELS[key] for key in HEADLINE_METRICS),
        "latency p50 (s)",
        "latency p95 (s)",
        "prompt tokens",
        "completion tokens",
        "errors",
    )
    names = [strategy.info.name for strategy in card.strategies]
    chosen = card.recommendation.strategy
    return Table(
        headers=headers,
        rows=tuple(_headline_row(strategy) for strategy in card.strategies),
        text_columns=2,
        highlight=names.index(chosen) if chosen in names else None,
    )


def _headline_legend(card: Scorecard) -> list[tuple[str, str]]:
    legend = [(METRIC_LABELS[key], METRICS[key]) for key in HEADLINE_METRICS]
    legend.append(("scored by", card.scoring))
    legend.append(("intervals", INTERVALS))
    legend.append(("latency", "seconds per question as the client saw it, median and 95th percentile"))
    legend.append(("tokens", "mean per question"))
    return legend


def _kind_key(kind: str) -> tuple[int, str]:
    return (KIND_ORDER.index(kind), "") if kind in KIND_ORDER else (len(KIND_ORDER), kind)


def _kinds(card: Scorecard) -> list[str]:
    kinds = {kind for strategy in card.strategies for kind in strategy.by_kind}
    kinds.update(record.question.kind for record in card.records)
    return sorted(kinds, key=_kind_key)


def _questions_per_kind(card: Scorecard) -> dict[str, int]:
    counts: dict[str, int] = {}
    for question in {record.question for record in card.records}:
        counts[question.kind] = counts.get(question.kind, 0) + 1
    return counts


def kind_table(card: Scorecard, metric: str) -> Table | None:
    """One metric per question kind (rows) and strategy (columns); None when no strategy measured it."""
    kinds = _kinds(card)
    cells = {
        kind: [strategy.by_kind.get(kind, {}).get(metric) for strategy in card.strategies] for kind in kinds
    }
    if not any(estimate and estimate.value is not None for row in cells.values() for estimate in row):
        return None
    counts = _questions_per_kind(card)
    return Table(
        headers=("kind", "questions", *(strategy.info.name for strategy in card.strategies)),
        rows=tuple(
            (kind, str(counts[kind]) if kind in counts else DASH, *(_estimate(e) for e in cells[kind]))
            for kind in kinds
        ),
    )


def _kind_tables(card: Scorecard) -> list[tuple[str, Table]]:
    tables = [
        (f"{METRIC_LABELS[metric]} by question kind", kind_table(card, metric))
        for metric in ("correct", "format")
    ]
    return [(title, table) for title, table in tables if table is not None]


def _recommendation(recommendation: Recommendation) -> str:
    reason = _one_line(recommendation.reason)
    if recommendation.strategy is None:
        return f"Recommendation: none. {reason}".rstrip()
    rung = f" ({recommendation.rung} rung)" if recommendation.rung else ""
    return f"Recommendation: {recommendation.strategy}{rung}. {reason}".rstrip()


def _about(card: Scorecard) -> str:
    return (
        f"Endpoint {card.endpoint} · {card.created} · {card.questions} questions · "
        f"{len(card.strategies)} strategies"
    )


def trust_notice(card: Scorecard) -> str | None:
    """The report's first line when the run is not trustworthy (None when it is)."""
    if card.trustworthy:
        return None
    return (
        f"NOT TRUSTWORTHY: {'; '.join(card.untrustworthy)}. This run makes no recommendation; the "
        "figures below describe the failures as much as the strategies."
    )


def partial_notice(card: Scorecard) -> str | None:
    """Why the figures do not cover the whole question set, or None when they do."""
    failed = sum(1 for record in card.records if record.error is not None)
    missing = card.questions * len(card.strategies) - len(card.records)
    if card.complete and not failed:
        return None
    reasons = []
    if failed:
        reasons.append(f"{failed} of {len(card.records)} answers failed (marked below)")
    if missing > 0:
        reasons.append(f"{missing} {'answer was' if missing == 1 else 'answers were'} never asked for")
    if not reasons:
        reasons.append("the run stopped before every strategy answered every question")
    return f"PARTIAL RESULTS: {'; '.join(reasons)}. The figures cover only the answers that came back."


def update_cost_lines(cost: UpdateCost | None) -> list[str]:
    if cost is None:
        return ["Not measured: this evaluation has no update-cost figures."]
    document = f" ({cost.document})" if cost.document else ""
    load = (
        f", plus {_duration(cost.model_load_seconds)} to load the embedding model once per ingest run"
        if cost.model_load_seconds is not None
        else ""
    )
    adapter = f" ({cost.adapter})" if cost.adapter else ""
    lines = [
        f"Re-index one document{document}: {_duration(cost.reindex_seconds)}{load}.",
        f"Retrain the adapter{adapter}: {_duration(cost.retrain_seconds)}.",
    ]
    if cost.ratio is not None:
        lines.append(f"Retraining takes {_ratio(cost.ratio)} as long as re-indexing.")
    lines.extend(_one_line(note) for note in cost.notes)
    return lines


def _expectation(expectation: Expectation) -> ExpectationView:
    mark, verdict, css = {
        True: ("✓", "holds", "ok"),
        False: ("✗", "does not hold", "bad"),
        None: ("?", "cannot tell", "unknown"),
    }[expectation.holds]
    return ExpectationView(mark, verdict, css, _one_line(expectation.claim), _one_line(expectation.evidence))


def _answer(record: Record) -> AnswerView:
    if record.error is not None:
        mark, verdict, css = "⚠", "error", "error"
    else:
        mark, verdict, css = {
            True: ("✓", "correct", "ok"),
            False: ("✗", "wrong", "bad"),
            None: ("?", "not scored", "unknown"),
        }[record.correct]
    return AnswerView(
        strategy=record.strategy,
        mark=mark,
        verdict=verdict,
        css=css,
        cited=", ".join(record.cited_documents) or "nothing",
        excerpt=_excerpt(record.answer),
        error=_one_line(record.error) if record.error is not None else None,
    )


def _question_about(question: Question) -> str:
    parts = [question.kind, f"line {question.line}"]
    if question.tenant:
        parts.append(f"tenant {question.tenant}")
    if question.documents:
        parts.append(f"supported by {', '.join(question.documents)}")
    return " · ".join(parts)


def question_views(card: Scorecard) -> list[QuestionView]:
    """The records grouped by question, in question-set order, answers in the strategies' order."""
    order = {strategy.info.name: index for index, strategy in enumerate(card.strategies)}
    groups: dict[Question, list[Record]] = {}
    for record in card.records:
        groups.setdefault(record.question, []).append(record)
    questions = sorted(groups, key=lambda question: question.line)
    return [
        QuestionView(
            number=number,
            question=_one_line(question.question),
            about=_question_about(question),
            reference=_one_line(question.reference) or DASH,
            answers=tuple(
                _answer(record)
                for record in sorted(groups[question], key=lambda r: order.get(r.strategy, len(order)))
            ),
        )
        for number, question in enumerate(questions, start=1)
    ]


# --- Markdown -----------------------------------------------------------------------------------------

# Enough to keep data text literal: no tags or links, no emphasis running on, no broken table cells.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|])")


def _md(text: str) -> str:
    return _MARKDOWN_SPECIAL.sub(r"\\\1", _one_line(text))


def _md_table(table: Table) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    aligns = [":--" if i < table.text_columns else "--:" for i in range(len(table.headers))]
    rows = []
    for index, row in enumerate(table.rows):
        cells = [_md(cell) for cell in row]
        if index == table.highlight:
            cells[0] = f"**{cells[0]}**"
        rows.append(line(cells))
    return "\n".join([line([_md(header) for header in table.headers]), line(aligns), *rows])


def _md_strategies(card: Scorecard) -> str:
    if not card.strategies:
        return "No strategy was evaluated."
    legend = "\n".join(f"- {label}: {meaning}" for label, meaning in _headline_legend(card))
    note = "Fractions from 0 to 1, with the 95% interval in brackets; the recommended strategy in bold."
    return f"{_md_table(headline_table(card))}\n\n{note}\n\n{legend}"


def _md_questions(card: Scorecard) -> str:
    blocks = []
    for view in question_views(card):
        answers = "\n".join(_md_answer(answer) for answer in view.answers)
        blocks.append(
            f"### {view.number}. {_md(view.question)}\n\n{_md(view.about)}\n\n"
            f"Reference: {_md(view.reference)}\n\n{answers}"
        )
    return "\n\n".join(blocks) or "No answers were recorded."


def _md_answer(answer: AnswerView) -> str:
    head = f"- **{_md(answer.strategy)}**: {answer.mark} {answer.verdict}"
    if answer.error is not None:
        return f"{head}: {_md(answer.error)}"
    return f"{head} · cited {_md(answer.cited)} · “{_md(answer.excerpt)}”"


def _md_section(title: str, body: str) -> str:
    return f"## {title}\n\n{body}"


def render_markdown(card: Scorecard) -> str:
    notice = partial_notice(card)
    untrusted = trust_notice(card)
    expectations = [_expectation(e) for e in card.expectations]
    parts = [
        f"**⚠ {_md(untrusted)}**" if untrusted else "",  # the first line, before anything else is read
        f"# Evaluation report: {_md(card.evaluation)}",
        _md(_about(card)),
        f"**{_md(_recommendation(card.recommendation))}**",
        f"> **⚠ {_md(notice)}**" if notice else "",
        _md_section("Strategies", _md_strategies(card)),
        *(_md_section(title.capitalize(), _md_table(table)) for title, table in _kind_tables(card)),
        _md_section(
            "Update cost", "\n".join(f"- {_md(line)}" for line in update_cost_lines(card.update_cost))
        ),
        _md_section(
            "Expectations",
            "\n".join(f"- {e.mark} **{e.verdict}**: {_md(e.claim)} ({_md(e.evidence)})" for e in expectations)
            or "None were checked.",
        ),
        _md_section("Warnings", "\n".join(f"- {_md(w)}" for w in card.warnings)) if card.warnings else "",
        _md_section("Questions", _md_questions(card)),
    ]
    return "\n\n".join(part for part in parts if part) + "\n"


# --- Plots (SVG text) ---------------------------------------------------------------------------------

# An id, or a reference to one: id="x", xlink:href="#x", url(#x).
_SVG_ID = re.compile(r'(\bid="|href="#|url\(#)')


def _plot(draw: Callable[[Axes], None], name: str, size: tuple[float, float] = (6.4, 3.6)) -> str:
    """Draw on a fresh figure and return its SVG element, ready to inline.

    `Figure` directly, not pyplot: no GUI backend, no global figure registry. A fixed hash salt gives the
    same ids, so the same bytes, for the same input.
    """
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(
        {
            "svg.fonttype": "none",  # text stays text: no glyph outlines embedded, the page's font draws it
            "svg.hashsalt": "tandem",
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    ):
        figure = Figure(figsize=size, layout="constrained")
        draw(figure.add_subplot())
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata=_SVG_METADATA)
    svg = buffer.getvalue()
    # Drop the XML declaration and DOCTYPE (not allowed inside HTML), and give ids a prefix of the plot's
    # own: every matplotlib SVG numbers its groups from figure_1, and one page must not repeat an id.
    return _SVG_ID.sub(rf"\1{name}-", svg[svg.index("<svg") :])


def _label(text: str) -> str:
    return text.replace("$", r"\$")  # a name with two dollar signs would otherwise be parsed as maths


@dataclass(frozen=True)
class _Point:
    name: str
    latency: float
    correct: float
    low: float
    high: float


def _accuracy_points(card: Scorecard) -> list[_Point]:
    points = []
    for strategy in card.strategies:
        estimate, latency = strategy.metrics.get("correct"), _latency(strategy, "total").p50
        if estimate is None or estimate.value is None or latency is None:
            continue
        low = estimate.low if estimate.low is not None else estimate.value
        high = estimate.high if estimate.high is not None else estimate.value
        points.append(_Point(strategy.info.name, latency, estimate.value, low, high))
    return points


def _draw_accuracy(points: Sequence[_Point]) -> Callable[[Axes], None]:
    def draw(axes: Axes) -> None:
        for index, point in enumerate(points):
            below, above = max(point.correct - point.low, 0.0), max(point.high - point.correct, 0.0)
            axes.errorbar(
                [point.latency],
                [point.correct],
                yerr=[[below], [above]],
                fmt="o",
                capsize=4,
                color=f"C{index}",
            )
            axes.annotate(
                _label(point.name), (point.latency, point.correct), xytext=(6, 5), textcoords="offset points"
            )
        # Room on the right for the last point's label; from zero so distances read as ratios.
        axes.set_xlim(0, max(point.latency for point in points) * 1.3 or 1.0)
        axes.set_ylim(0, 1.05)
        axes.set_xlabel("latency p50, whole request (s)")
        axes.set_ylabel("correct (95% interval)")
        axes.grid(alpha=0.3)

    return draw


def _token_means(card: Scorecard, kind: str) -> list[float]:
    means = []
    for strategy in card.strategies:
        estimate = strategy.tokens.get(kind)
        means.append(math.nan if estimate is None or estimate.value is None else estimate.value)
    return means


def _draw_tokens(
    names: Sequence[str], prompt: Sequence[float], completion: Sequence[float]
) -> Callable[[Axes], None]:
    def draw(axes: Axes) -> None:
        width = 0.38
        positions = range(len(names))
        for offset, label, values in ((-width / 2, "prompt", prompt), (width / 2, "completion", completion)):
            bars = axes.bar([p + offset for p in positions], values, width, label=label)
            axes.bar_label(bars, labels=["" if math.isnan(v) else f"{v:.0f}" for v in values], padding=2)
        crowded = len(names) > 4
        axes.set_xticks(
            list(positions),
            [_label(n) for n in names],
            rotation=20 if crowded else 0,
            ha="right" if crowded else "center",
        )
        axes.set_ylabel("tokens per question (mean)")
        axes.legend(frameon=False)

    return draw


def _draw_update_cost(cost: UpdateCost, ratio: float) -> Callable[[Axes], None]:
    def draw(axes: Axes) -> None:
        values = [cost.reindex_seconds or 0.0, cost.retrain_seconds or 0.0]
        bars = axes.bar(
            ["re-index one document", "retrain the adapter"], values, width=0.5, color=["C2", "C3"]
        )
        axes.bar_label(bars, labels=[_duration(v) for v in values], padding=2)
        log = ratio >= LOG_SCALE_RATIO
        if log:
            axes.set_yscale("log")
        axes.set_ylabel("seconds (log scale)" if log else "seconds")
        axes.set_title(f"retraining takes {_ratio(ratio)} as long", fontsize=9)

    return draw


@dataclass(frozen=True)
class Plot:
    title: str
    svg: str | None  # None: not drawn, `missing` says why
    missing: str = ""


def _accuracy_plot(card: Scorecard) -> Plot:
    title = "Accuracy against latency"
    points = _accuracy_points(card)
    if not points:
        return Plot(title, None, "No strategy has both an accuracy and a latency figure to plot.")
    left_out = [s.info.name for s in card.strategies if s.info.name not in {p.name for p in points}]
    missing = f"Not plotted, a figure missing: {', '.join(left_out)}." if left_out else ""
    return Plot(title, _plot(_draw_accuracy(points), "accuracy"), missing)


def _tokens_plot(card: Scorecard) -> Plot:
    title = "Tokens per question"
    prompt, completion = _token_means(card, "prompt"), _token_means(card, "completion")
    if all(math.isnan(v) for v in [*prompt, *completion]):
        return Plot(title, None, "No strategy reported token counts.")
    names = [strategy.info.name for strategy in card.strategies]
    return Plot(title, _plot(_draw_tokens(names, prompt, completion), "tokens"))


def _update_cost_plot(cost: UpdateCost | None) -> Plot:
    title = "Update cost: one new fact"
    ratio = cost.ratio if cost is not None else None
    if cost is None or ratio is None:
        return Plot(title, None, "No update-cost plot: re-index or retrain seconds are missing (see above).")
    return Plot(title, _plot(_draw_update_cost(cost, ratio), "update-cost", size=(5.0, 3.2)))


# --- HTML ---------------------------------------------------------------------------------------------

# The page's template: a file inside the package (package data, see pyproject.toml), found through
# importlib.resources however the package is installed.
_TEMPLATE = importlib.resources.files("tandem.workloads.evaluation") / "templates" / "report.html.j2"

# Autoescape everywhere: the only unescaped text is the SVG matplotlib wrote (which escapes its own text).
_ENVIRONMENT = jinja2.Environment(
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
)


@functools.cache
def _template() -> jinja2.Template:
    return _ENVIRONMENT.from_string(_TEMPLATE.read_text(encoding="utf-8"))


def render_html(card: Scorecard) -> str:
    return _template().render(
        card=card,
        about=_about(card),
        recommendation=_recommendation(card.recommendation),
        untrusted=trust_notice(card),
        notice=partial_notice(card),
        headline=headline_table(card),
        legend=_headline_legend(card),
        plots=[_accuracy_plot(card), _tokens_plot(card)],
        kind_tables=_kind_tables(card),
        cost_lines=update_cost_lines(card.update_cost),
        cost_plot=_update_cost_plot(card.update_cost),
        expectations=[_expectation(e) for e in card.expectations],
        questions=question_views(card),
    )


# --- Files --------------------------------------------------------------------------------------------


def _write_atomically(path: Path, text: str) -> Path:
    """Write beside the target, then rename over it: a reader never sees half a report.

    Not tempfile.mkstemp: its 0600 mode would survive the rename; os.open with 0o666 honours the umask
    like any other file the workload writes.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    return path


def write_report(card: Scorecard, directory: Path) -> list[Path]:
    """Write report.md, report.html and scorecard.json into `directory` (created); return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    contents = {
        "report.md": render_markdown(card),
        "report.html": render_html(card),
        "scorecard.json": json.dumps(card.to_dict(), indent=2, default=str) + "\n",
    }
    return [_write_atomically(directory / name, text) for name, text in contents.items()]
