"""Which endpoints a ServingPool's reconciliation tells of its new status (pools.endpoints_to_tell): those
whose part of it changed (their entry in endpoints or refused, the placed and loaded pods of their adapters),
and no other. The reconciler around it: tests/integration/test_operator_serving_pool.py."""

from __future__ import annotations

import copy
from typing import Any

from tandem.platform.kubernetes.pools import endpoints_to_tell


def entry(endpoint: str, adapter: str, placed: list[str], loaded: list[str]) -> dict[str, Any]:
    return {
        "endpoint": endpoint,
        "adapter": adapter,
        "servedName": f"{endpoint}/{adapter}",
        "placed": placed,
        "loaded": loaded,
    }


STATUS: dict[str, Any] = {
    "replicas": 2,
    "readyReplicas": 2,
    "ready": "2/2",
    "endpointCount": 2,
    "endpoints": ["team-a/assistant", "team-c/bot"],
    "refused": ["team-b/helpdesk: no ReferenceGrant in serving allows HybridEndpoints from team-b"],
    "adapters": [
        entry("team-a/assistant", "support", ["pod-0"], []),
        entry("team-c/bot", "faq", ["pod-1"], ["pod-1"]),
    ],
    "unplaced": [],
    "phase": "Progressing",
}


def changed(**edits: Any) -> dict[str, Any]:
    new = copy.deepcopy(STATUS)
    new.update(edits)
    return new


def test_an_unchanged_status_tells_no_one() -> None:
    assert endpoints_to_tell(STATUS, copy.deepcopy(STATUS)) == []


def test_figures_that_are_no_endpoint_part_tell_no_one() -> None:
    assert endpoints_to_tell(STATUS, changed(phase="Ready", unplaced=["x: no room"])) == []


def test_an_adapter_loaded_tells_its_endpoint_only() -> None:
    new = changed()
    new["adapters"][0]["loaded"] = ["pod-0"]
    assert endpoints_to_tell(STATUS, new) == ["team-a/assistant"]


def test_an_adapter_placed_elsewhere_tells_its_endpoint_only() -> None:
    new = changed()
    new["adapters"][1]["placed"] = ["pod-0"]
    assert endpoints_to_tell(STATUS, new) == ["team-c/bot"]


def test_attached_and_detached_endpoints_are_told() -> None:
    first = endpoints_to_tell({}, STATUS)
    assert first == ["team-a/assistant", "team-b/helpdesk", "team-c/bot"]  # a pool's first status
    gone = changed(
        endpoints=["team-a/assistant"], adapters=[entry("team-a/assistant", "support", ["pod-0"], [])]
    )
    assert endpoints_to_tell(STATUS, gone) == ["team-c/bot"]


def test_a_refusal_that_changes_or_ends_tells_that_endpoint() -> None:
    other_reason = changed(refused=["team-b/helpdesk: its baseModel hf://x is not the pool's hf://y"])
    assert endpoints_to_tell(STATUS, other_reason) == ["team-b/helpdesk"]
    assert endpoints_to_tell(STATUS, changed(refused=[])) == ["team-b/helpdesk"]


def test_an_endpoint_with_an_adapter_more_is_told() -> None:
    new = changed()
    new["adapters"].append(entry("team-a/assistant", "billing", [], []))
    assert endpoints_to_tell(STATUS, new) == ["team-a/assistant"]
