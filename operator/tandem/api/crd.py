"""Generate CustomResourceDefinitions from the API models.

`python -m tandem.api.crd crds/` writes one file per kind. The models are the source of truth; this
module only translates pydantic's JSON Schema into a structural OpenAPI v3 schema the API server accepts:
references inlined, optional fields without the `null` branch, no titles, exclusive bounds in OpenAPI
3.0 form, no `additionalProperties: false` (the server prunes unknown fields instead).
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from .kinds import ALL_KINDS, CATEGORY, Kind

# Keywords a structural schema may carry, in the order they are written (anything else is dropped).
_KEPT = (
    "type",
    "description",
    "default",
    "enum",
    "format",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "items",
    "properties",
    "required",
    "additionalProperties",
    "nullable",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
)


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline `$ref`s and collapse `anyOf: [X, null]` into X, merging sibling keywords."""
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
        node = {**target, **node}  # field-level description/default win over the model's
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b != {"type": "null"}]
        if len(branches) != 1:
            raise ValueError(f"cannot express a union of {branches} in a structural schema")
        merged = _resolve(branches[0], defs)
        node = {**merged, **node}
        if node.get("default", 0) is None:
            del node["default"]
    return {k: _resolve(v, defs) if k != "default" else v for k, v in node.items()}


def _clean(node: Any) -> Any:
    if isinstance(node, list):
        return [_clean(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties",):
            out[key] = {name: _clean(sub) for name, sub in value.items()}
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = _clean(value)
            # `false` is the server's default behaviour (pruning) and is not allowed in a CRD.
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key in _KEPT:
            out[key] = _clean(value) if key in ("items",) else value
    return {key: out[key] for key in sorted(out, key=_KEPT.index)}


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _said(description: str, values: list[Any]) -> bool:
    """Whether the description already states every one of these values (as a number of its own)."""
    return all(re.search(rf"(?<![\w.]){re.escape(_number(v))}(?![\w]|\.\d)", description) for v in values)


def _range(node: dict[str, Any], low: str, high: str, unit: str) -> tuple[str, list[Any]] | None:
    """One phrase for a pair of bounds (`low`/`high` are the keywords), and the values it states."""
    lo, hi = node.get(low), node.get(high)
    exclusive_lo = bool(node.get("exclusiveMinimum")) and low == "minimum"
    exclusive_hi = bool(node.get("exclusiveMaximum")) and high == "maximum"
    if lo is None and hi is None:
        return None
    if lo is not None and hi is not None and not exclusive_lo and not exclusive_hi:
        return f"{unit}: {_number(lo)}-{_number(hi)}.", [lo, hi]
    parts, values = [], []
    if lo is not None:
        parts.append(f"{'greater than' if exclusive_lo else 'at least'} {_number(lo)}")
        values.append(lo)
    if hi is not None:
        parts.append(f"{'less than' if exclusive_hi else 'at most'} {_number(hi)}")
        values.append(hi)
    return f"{unit}: {' and '.join(parts)}.", values


def _default_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value) if value == "" or value.strip() != value else value
    if isinstance(value, (int, float)):
        return _number(value)
    return json.dumps(value, separators=(", ", ": "))


def limits(node: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    """What `kubectl explain` should say of a field's default and bounds, each with the values it names.

    An empty object default ({}) only makes the API server fill in the defaults below it: nothing to say.
    A list's bounds on its items' values are said on the list (its items carry no description)."""
    said: list[tuple[str, list[Any]]] = []
    if "default" in node and node["default"] != {}:
        said.append((f"Default: {_default_text(node['default'])}.", []))
    for low, high, unit in (
        ("minimum", "maximum", "Range"),
        ("minLength", "maxLength", "Length"),
        ("minItems", "maxItems", "Items"),
        ("minProperties", "maxProperties", "Entries"),
    ):
        phrase = _range(node, low, high, unit)
        if phrase is not None:
            said.append(phrase)
    items = node.get("items")
    if isinstance(items, dict) and "description" not in items:
        for text, values in limits(items):
            said.append((f"Each item's {text[0].lower()}{text[1:]}", values))
    return said


def _explain(node: Any) -> None:
    """Append each field's default and bounds to its description, where it does not already say them:
    `kubectl explain` shows descriptions, not the schema's keywords."""
    if isinstance(node, list):
        for sub in node:
            _explain(sub)
        return
    if not isinstance(node, dict):
        return
    for key in ("properties", "additionalProperties", "items"):
        sub = node.get(key)
        if key == "properties" and isinstance(sub, dict):
            for field_schema in sub.values():
                _explain(field_schema)
        elif isinstance(sub, dict):
            _explain(sub)
    description = node.get("description")
    if not isinstance(description, str):
        return
    extra = []
    for phrase, values in limits(node):
        if phrase.startswith("Default") and re.search(r"\bdefault", description, re.IGNORECASE):
            continue
        if values and _said(description, values):
            continue
        extra.append(phrase)
    if extra:
        node["description"] = " ".join([description.rstrip(), *extra])


def structural_schema(model: Any) -> dict[str, Any]:
    """The OpenAPI v3 schema of a pydantic model, as a CRD wants it, each field's default and bounds said
    in its description."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema = dict(_clean(_resolve(raw, defs)))
    _explain(schema)
    return schema


def crd_for(kind: Kind) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "apiVersion": {"type": "string", "description": "tandem.dev/v1alpha1"},
        "kind": {"type": "string", "description": kind.kind},
        "metadata": {"type": "object"},
        "spec": structural_schema(kind.spec),
    }
    if kind.name:
        name = {key: kind.name[key] for key in _KEPT if key in kind.name}
        properties["metadata"] = {"type": "object", "properties": {"name": {"type": "string", **name}}}
    if kind.status is not None:
        properties["status"] = structural_schema(kind.status)
    root: dict[str, Any] = {
        "type": "object",
        "description": kind.description,
        "required": ["spec"],
        "properties": properties,
    }
    if kind.rules:
        root["x-kubernetes-validations"] = [rule.as_schema() for rule in kind.rules]
    version: dict[str, Any] = {
        "name": kind.version,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": root},
        "additionalPrinterColumns": [dict(c) for c in kind.columns],
    }
    if kind.status is not None:
        version["subresources"] = {"status": {}}
    if kind.scale is not None:
        version["subresources"]["scale"] = dict(kind.scale)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/name": "tandem", "app.kubernetes.io/part-of": "tandem"},
        },
        "spec": {
            "group": kind.group,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": [CATEGORY],
            },
            "versions": [version],
        },
    }


def render(kind: Kind) -> str:
    header = "# Generated by `make crds` (python -m tandem.api.crd) from tandem.api. Do not edit.\n"
    return header + yaml.safe_dump(crd_for(kind), sort_keys=False, width=100, allow_unicode=True)


def file_name(kind: Kind) -> str:
    return f"{kind.group}_{kind.plural}.yaml"


def write_all(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in ALL_KINDS:
        path = directory / file_name(kind)
        path.write_text(render(kind))
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    """Write the CRDs into each directory given (default: crds/)."""
    for target in argv[1:] or ["crds"]:
        for path in write_all(Path(target)):
            print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
