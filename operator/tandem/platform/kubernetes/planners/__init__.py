"""Pure planners: a resource's spec (plus resolved references and settings) in, child manifests out.

Planners do no I/O, so they are tested by comparing dicts, and applying the same plan twice changes
nothing. Children whose spec must not change in place (Jobs, RayJobs) are named after a digest of what
they run, so a spec change makes a new child and the old one is pruned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Bump when the pods planners render change shape (env, volumes, security): immutable work (Jobs,
# RayJobs) is then recreated under a new name instead of being patched, which the API server refuses.
POD_SCHEMA = "3"


@dataclass
class Plan:
    """The children a resource should have, and the work item the operator watches for completion."""

    children: list[dict[str, Any]] = field(default_factory=list)
    # The Job or RayJob whose completion makes the resource Ready (None for long-running kinds).
    work: dict[str, Any] | None = None
    # Facts the planner derived that status reports (e.g. the collection name).
    facts: dict[str, Any] = field(default_factory=dict)
