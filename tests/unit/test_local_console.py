"""`tandem status`'s table of adapters in serving pools: where each is placed and loaded, and, as the
cluster's status.adapters[].errors says, why it is not loaded where placed when its sync failed."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from tandem.platform.local.console import placement_table
from tandem.platform.local.state import State


def rendered(state: State) -> str:
    table = placement_table(state)
    assert table is not None
    console = Console(record=True, width=300)
    console.print(table)
    return console.export_text()


def test_the_table_shows_placement_loading_and_the_sync_error(tmp_path: Path) -> None:
    state = State(tmp_path / "state.json")
    pool = state.resource("ServingPool", "serving", "smollm")
    pool.figures["adapters"] = [
        {
            "endpoint": "team-a/assistant",
            "adapter": "support",
            "placed": ["smollm-0"],
            "loaded": ["smollm-0"],
        },
        {
            "endpoint": "team-b/helpdesk",
            "adapter": "tone",
            "placed": ["smollm-1"],
            "loaded": [],
            "errors": ["smollm-1: oci://r/team-b/tone:v1: ArtifactAccessDenied: refused (401)"],
        },
    ]
    lines = [line for line in rendered(state).splitlines() if "serving/smollm" in line]
    support, tone = lines
    assert "team-a/assistant" in support and support.split("│")[-2].strip() == "-"
    assert "ArtifactAccessDenied" in tone and "smollm-1" in tone


def test_without_pools_there_is_no_table(tmp_path: Path) -> None:
    assert placement_table(State(tmp_path / "state.json")) is None
