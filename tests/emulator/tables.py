"""
Server-side table output (``Accept: application/json;as=Table;g=meta.k8s.io;v=v1``), as for ``kubectl get``.

CRDs: ``Name`` + ``additionalPrinterColumns`` (simple JSONPath: ``.a.b``, ``.a[0]``, ``.a[*].b``,
``.a[?(@.type=="Ready")].status``), or ``Name`` + ``Age`` when none are declared.
Built-in kinds: ``Name`` + a few well-known columns for common kinds + ``Age``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tests.emulator.resources import ResourceType

_TOKEN_RE = re.compile(
    r'\.([A-Za-z0-9_\-/]+)|\[(\*|-?\d+)\]|\[\?\(@\.([A-Za-z0-9_.\-]+)\s*==\s*["\']([^"\']*)["\']\)\]|'
    r"\['([^']+)'\]"
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Evaluate a simple JSONPath (kubectl's flavour, without the braces). Returns all matches."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if path.startswith("$"):
        path = path[1:]
    nodes: list[Any] = [obj]
    pos = 0
    while pos < len(path):
        m = _TOKEN_RE.match(path, pos)
        if not m:
            return []
        pos = m.end()
        field, index, filter_key, filter_value, quoted = m.groups()
        nxt: list[Any] = []
        for node in nodes:
            if field is not None or quoted is not None:
                key = field if field is not None else quoted
                if isinstance(node, Mapping) and key in node:
                    nxt.append(node[key])
            elif index is not None:
                if isinstance(node, list):
                    if index == "*":
                        nxt.extend(node)
                    elif -len(node) <= int(index) < len(node):
                        nxt.append(node[int(index)])
                elif isinstance(node, Mapping) and index == "*":
                    nxt.extend(node.values())
            elif filter_key is not None and isinstance(node, list):
                for item in node:
                    value = jsonpath(item, "." + filter_key)
                    if value and str(value[0]) == filter_value:
                        nxt.append(item)
        nodes = nxt
    return nodes


def human_duration(seconds: float) -> str:
    """Like k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    years = days // 365
    if years < 8:
        return f"{years}y{days % 365}d" if days % 365 else f"{years}y"
    return f"{years}y"


def age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    return human_duration((datetime.datetime.now(tz=datetime.UTC) - then).total_seconds())


Column = tuple[str, str, str, int, Callable[[Mapping[str, Any]], Any]]  # name, type, format, priority, getter


def _name_col() -> Column:
    return ("Name", "string", "name", 0, lambda o: o.get("metadata", {}).get("name", ""))


def _age_col() -> Column:
    return ("Age", "string", "", 0, lambda o: age(o.get("metadata", {}).get("creationTimestamp")))


def _printer_column(col: Mapping[str, Any]) -> Column:
    col_type = col.get("type", "string")
    path = col.get("jsonPath", "")

    def getter(obj: Mapping[str, Any]) -> Any:
        values = jsonpath(obj, path)
        if not values:
            return None
        value = values[0] if len(values) == 1 else ",".join(str(v) for v in values)
        if col_type == "date":
            return age(str(value))
        if col_type == "integer" and isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
        if col_type == "number" and isinstance(value, int | float) and not isinstance(value, bool):
            return value
        if col_type == "boolean" and isinstance(value, bool):
            return value
        if isinstance(value, dict | list):
            import json

            return json.dumps(value, separators=(",", ":"))
        return str(value) if not isinstance(value, bool) else ("true" if value else "false")

    return (
        col.get("name", ""),
        "string" if col_type == "date" else col_type,
        col.get("format", ""),
        int(col.get("priority", 0)),
        getter,
    )


def _ready_containers(o: Mapping[str, Any]) -> str:
    statuses = (o.get("status") or {}).get("containerStatuses") or []
    total = len((o.get("spec") or {}).get("containers") or [])
    ready = sum(1 for s in statuses if s.get("ready"))
    return f"{ready}/{total}"


def _replicas(o: Mapping[str, Any]) -> str:
    return f"{(o.get('status') or {}).get('readyReplicas', 0)}/{(o.get('spec') or {}).get('replicas', 1)}"


_BUILTIN_COLUMNS: dict[tuple[str, str], list[Column]] = {
    ("", "pods"): [
        ("Ready", "string", "", 0, _ready_containers),
        ("Status", "string", "", 0, lambda o: (o.get("status") or {}).get("phase", "")),
        (
            "Restarts",
            "string",
            "",
            0,
            lambda o: str(
                sum(s.get("restartCount", 0) for s in (o.get("status") or {}).get("containerStatuses") or [])
            ),
        ),
    ],
    ("", "configmaps"): [
        ("Data", "integer", "", 0, lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})),
    ],
    ("", "secrets"): [
        ("Type", "string", "", 0, lambda o: o.get("type", "Opaque")),
        ("Data", "integer", "", 0, lambda o: len(o.get("data") or {}) + len(o.get("stringData") or {})),
    ],
    ("", "namespaces"): [
        ("Status", "string", "", 0, lambda o: (o.get("status") or {}).get("phase", "Active")),
    ],
    ("", "services"): [
        ("Type", "string", "", 0, lambda o: (o.get("spec") or {}).get("type", "ClusterIP")),
        ("Cluster-IP", "string", "", 0, lambda o: (o.get("spec") or {}).get("clusterIP", "<none>")),
        (
            "Ports",
            "string",
            "",
            0,
            lambda o: (
                ",".join(
                    f"{p.get('port')}/{p.get('protocol', 'TCP')}"
                    for p in (o.get("spec") or {}).get("ports") or []
                )
                or "<none>"
            ),
        ),
    ],
    ("apps", "deployments"): [
        ("Ready", "string", "", 0, _replicas),
        ("Up-to-date", "integer", "", 0, lambda o: (o.get("status") or {}).get("updatedReplicas", 0)),
        ("Available", "integer", "", 0, lambda o: (o.get("status") or {}).get("availableReplicas", 0)),
    ],
    ("batch", "jobs"): [
        (
            "Status",
            "string",
            "",
            0,
            lambda o: "Complete" if (o.get("status") or {}).get("succeeded") else "Running",
        ),
        (
            "Completions",
            "string",
            "",
            0,
            lambda o: (
                f"{(o.get('status') or {}).get('succeeded', 0)}/{(o.get('spec') or {}).get('completions', 1)}"
            ),
        ),
    ],
    ("apiextensions.k8s.io", "customresourcedefinitions"): [
        ("Created At", "date", "", 0, lambda o: (o.get("metadata") or {}).get("creationTimestamp", "")),
    ],
}


def columns_for(rt: ResourceType) -> list[Column]:
    if rt.is_custom:
        if rt.printer_columns:
            return [_name_col()] + [_printer_column(c) for c in rt.printer_columns]
        return [_name_col(), _age_col()]
    return [_name_col(), *_BUILTIN_COLUMNS.get(rt.storage_key, []), _age_col()]


def partial_metadata(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def to_table(
    rt: ResourceType,
    objs: Sequence[Mapping[str, Any]],
    resource_version: str,
    include_object: str = "Metadata",
) -> dict[str, Any]:
    columns = columns_for(rt)
    rows: list[dict[str, Any]] = []
    for obj in objs:
        row: dict[str, Any] = {"cells": [col[4](obj) for col in columns]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = partial_metadata(obj)
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {"name": name, "type": col_type, "format": fmt, "description": "", "priority": priority}
            for name, col_type, fmt, priority, _ in columns
        ],
        "rows": rows,
    }
