"""The Argo CD health check (Lua) reads the conditions the operator writes as Argo CD should."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa
import pytest

from tandem.platform.kubernetes.conditions import Outcome, conditions_for

SCRIPT = (Path(__file__).resolve().parents[2] / "docs" / "argocd" / "health.lua").read_text()


def health(obj: dict[str, Any]) -> tuple[str, str]:
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)

    def to_lua(value: Any) -> Any:
        if isinstance(value, dict):
            return lua.table_from({k: to_lua(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([to_lua(v) for v in value])
        return value

    result = lua.eval(f"function(obj) {SCRIPT} end")(to_lua(obj))
    return result["status"], result["message"]


def resource(outcome: Outcome | None, generation: int = 2, observed: int = 2) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"generation": generation}}
    if outcome is not None:
        obj["status"] = {"observedGeneration": observed, "conditions": conditions_for(outcome, observed, [])}
    return obj


@pytest.mark.parametrize(
    "obj,expected",
    [
        (resource(Outcome.ready("Indexed", "collection holds revision r1")), "Healthy"),
        (resource(Outcome.progressing("Running", "ingest Job running")), "Progressing"),
        (resource(Outcome.stalled("JobFailed", "ingest Job failed")), "Degraded"),
        (resource(None), "Progressing"),
        (resource(Outcome.ready("Indexed", "old"), generation=3, observed=2), "Progressing"),
    ],
    ids=["ready", "reconciling", "stalled", "no-status", "stale-generation"],
)
def test_health_follows_conditions(obj: dict[str, Any], expected: str) -> None:
    status, message = health(obj)
    assert status == expected
    if expected == "Degraded":
        assert message == "JobFailed: ingest Job failed"
