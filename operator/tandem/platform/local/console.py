"""What `tandem up` shows: a progress bar per piece of long work, one clean line per state change."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from .state import ResourceState, State


class Reporter:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.bars = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.tasks: dict[str, TaskID] = {}
        self.stage: dict[str, str] = {}

    def __enter__(self) -> Reporter:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def _bar(self, key: str, description: str, total: float | None) -> TaskID:
        if key not in self.tasks:
            self.tasks[key] = self.bars.add_task(description, total=total)
        return self.tasks[key]

    def _done(self, key: str) -> None:
        task = self.tasks.pop(key, None)
        if task is not None:
            self.bars.remove_task(task)

    def event(self, key: str, event: dict[str, Any]) -> None:
        stage = str(event.get("stage", ""))
        if self.stage.get(key) != stage and stage not in ("indexing", "training", "answer"):
            self._line(key, stage, event)
        self.stage[key] = stage
        name = key.split("/", 1)[1]
        if stage == "planning":
            self._bar(key, f"ingest {name}: documents", event.get("documents") or None)
        elif stage == "indexing":
            task = self._bar(key, f"ingest {name}: documents", event.get("documents"))
            self.bars.update(
                task,
                completed=event.get("documentsDone", 0),
                description=f"ingest {name}: {event.get('chunksEmbedded', 0)} chunks embedded",
            )
        elif stage == "training":
            task = self._bar(key, f"train {name}", event.get("totalSteps"))
            self.bars.update(
                task,
                completed=event.get("step", 0),
                description=f"train {name}: loss {event.get('loss')}, ETA {event.get('etaSeconds')}s",
            )
        elif stage == "answer":
            task = self._bar(key, f"evaluate {name}", event.get("total"))
            self.bars.update(
                task, completed=event.get("done", 0), description=f"evaluate {name}: {event.get('strategy')}"
            )
        elif stage == "update-cost":
            self._done(key)
        elif stage in ("vllm", "model"):
            self._done(key)
            self._bar(key, f"{name}: {event.get('message')}", None)
        elif stage in ("done", "failed", "training-done"):
            self._done(key)

    def _line(self, key: str, stage: str, event: dict[str, Any]) -> None:
        if stage == "failed":
            self.console.print(f"[red]✗[/red] {key}: {event.get('reason')}: {event.get('message')}")
        elif stage == "done":
            self.console.print(
                f"[green]✓[/green] {key}: {event.get('documents')} documents, {event.get('chunks')} chunks"
            )
        elif stage == "read":
            failed = f", {event['failed']} failed" if event.get("failed") else ""
            self.console.print(
                f"  {key}: source {event.get('source')}: {event.get('documents')} documents{failed}"
            )
        elif stage == "resumed":
            self.console.print(
                f"  {key}: resumed from checkpoint {event.get('checkpoint')} (step {event.get('step')})"
            )
        elif stage == "training-start":
            self.console.print(f"  {key}: training on {event.get('examples')} examples")
        elif stage in ("vllm", "model", "reindex", "gateway"):
            self.console.print(f"  {key}: {event.get('message')}")
        elif stage == "probing":
            routes = ", ".join(event.get("routes", []))
            self.console.print(f"  {key}: checking that each route answers first ({routes})")
        elif stage == "asking":
            routes = ", ".join(event.get("strategies", []))
            self.console.print(f"  {key}: {event.get('questions')} questions through {routes}")
        elif stage == "update-cost":
            self.console.print(f"  {key}: timing the re-index of one document (the update cost)")

    def changed(self, resource: ResourceState) -> None:
        mark = "[green]✓[/green]" if resource.ready else "[yellow]…[/yellow]"
        self.console.print(
            f"{mark} {resource.kind}/{resource.namespace}/{resource.name}: "
            f"{resource.reason}: {resource.message}"
        )


KINDS = ["KnowledgeBase", "AdapterTraining", "ServingPool", "HybridEndpoint", "Evaluation"]


def placement_table(state: State) -> Table | None:
    """Where each adapter of each ServingPool is placed and loaded (as the last pass observed: each pod's
    /v1/models after its sync); None without pools."""
    pools = [r for r in state.resources.values() if r.kind == "ServingPool"]
    if not pools:
        return None
    table = Table(title="adapters in serving pools")
    for column in ("POOL", "ENDPOINT", "ADAPTER", "PLACED ON", "LOADED ON", "ERROR"):
        table.add_column(column)
    for pool in sorted(pools, key=lambda r: (r.namespace, r.name)):
        for entry in pool.figures.get("adapters") or []:
            table.add_row(
                f"{pool.namespace}/{pool.name}",
                entry["endpoint"],
                entry["adapter"],
                ", ".join(entry["placed"]) or "-",
                ", ".join(entry["loaded"]) or "-",
                "; ".join(entry.get("errors") or []) or "-",  # why not loaded where placed, if it failed
            )
    return table


def status_table(state: State) -> Table:
    """Each resource's condition and each process's health, as observed now: a process is probed (its PID
    still the process started, and answering), and a resource whose dependency does not answer now is
    shown not Ready with what was observed, whatever was recorded."""
    from . import health, servers

    observed = health.observed(state)
    table = Table(title="tandem status")
    for column in ("KIND", "NAME", "READY", "REASON", "MESSAGE"):
        table.add_column(column)
    for key, r in sorted(
        state.resources.items(),
        key=lambda item: (
            KINDS.index(item[1].kind) if item[1].kind in KINDS else len(KINDS),
            item[1].name,
        ),
    ):
        ready, reason, message = observed.get(key, (r.ready, r.reason, r.message))
        table.add_row(r.kind, f"{r.namespace}/{r.name}", "True" if ready else "False", reason, message)
    for name, server in sorted(state.servers.items()):
        found = servers.check(server)
        table.add_row(
            "Process",
            name,
            "True" if found.ok else "False",
            f"pid {server.pid}",
            server.url if found.ok else f"{server.url}: {found}",
        )
    return table
