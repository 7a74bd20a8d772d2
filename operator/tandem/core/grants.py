"""Cross-namespace references: allowed only when the target namespace grants them (ReferenceGrant).

Pure: the operator passes the grants it listed, `tandem up` those among its manifests."""

from __future__ import annotations

from typing import Any


def reference_allowed(
    *,
    from_kind: str,
    from_namespace: str,
    to_kind: str,
    to_namespace: str,
    to_name: str,
    grants: list[dict[str, Any]],
) -> bool:
    """True for same-namespace references, or when a grant in the target namespace names the referrer."""
    if from_namespace == to_namespace:
        return True
    for grant in grants:
        if grant.get("metadata", {}).get("namespace") != to_namespace:
            continue
        spec = grant.get("spec") or {}
        sources_ok = any(
            f.get("kind") == from_kind and f.get("namespace") == from_namespace
            for f in spec.get("from") or []
        )
        targets_ok = any(
            t.get("kind") == to_kind and t.get("name") in (None, to_name) for t in spec.get("to") or []
        )
        if sources_ok and targets_ok:
            return True
    return False
