"""KEDA's ScaledObject CRD for the emulator, derived at run time from the pydantic models of the PyPI
package cloudcoil-models-keda (``cloudcoil.models.keda.v1alpha1.ScaledObject``, 2.16), not copied from
KEDA: no file or text of KEDA's repository is kept in this project.

:func:`keda_crd` builds an ``apiextensions.k8s.io/v1`` CustomResourceDefinition (``scaledobjects.keda.sh``,
version v1alpha1, namespaced, status subresource, short name ``so``) whose ``openAPIV3Schema`` is the
model's ``model_json_schema(by_alias=True)`` made structural: ``$ref``/``$defs`` inlined, ``anyOf [X, null]``
(an optional field) turned into X, ``default: null`` and ``title`` dropped, ``required`` and
``additionalProperties`` maps (``triggers[].metadata``, ``status.health``) kept, an ``int | str`` union as
``x-kubernetes-int-or-string``. As in every CRD (and the project's own, tandem.api.crd), the root's
``apiVersion`` and ``kind`` are plain strings and ``metadata`` is ``{type: object}``: the API server checks
those itself. A keyword the conversion does not know, another union, a recursive model or
``additionalProperties`` beside ``properties`` raises ValueError instead of being dropped silently.

What it loses against KEDA v2.16.1's own CRD (config/crd/bases/keda.sh_scaledobjects.yaml, compared node by
node when this was written: the same fields, the same ``required`` lists, the same types and maps):

* ``format: int32`` on every integer field (the replica counts, ``pollingInterval``, the cooldown periods,
  ``fallback.*``, the HPA policies' ``value``/``periodSeconds``, ``stabilizationWindowSeconds``,
  ``status.health[*].numberOfFailures``, ``status.{original,paused}ReplicaCount``): the models have plain
  integers, so a value above 2^31-1 is stored here where KEDA's CRD refuses it;
* ``x-kubernetes-list-type: atomic`` on the HPA behaviour's ``scaleUp.policies``/``scaleDown.policies``
  (it matters only to server-side apply, which the emulator approximates anyway);
* every ``description``: the models carry none, so ``kubectl explain`` shows only the types;
* the printer columns (``kubectl get so`` shows Name and Age here) and controller-gen's annotation.

It adds one constraint KEDA's CRD does not have: ``stabilizationWindowSeconds`` (scaleUp and scaleDown)
has ``minimum: 0``/``maximum: 3600`` in the models (the HPA API's own limits), so a value outside them,
which KEDA's CRD would store and the HPA that KEDA then makes would be refused for, is refused at once.

KEDA 2.16.1's ScaledObject CRD has no ``default``, ``enum``, ``pattern``, ``x-kubernetes-int-or-string``,
``x-kubernetes-preserve-unknown-fields`` nor CEL rule, so none is lost with this version. KEDA 2.17 adds
enums (``fallback.behavior``, with a default, and ``advanced.scalingModifiers.metricType``): whether they
survive depends on what cloudcoil's generator keeps; compare again when cloudcoil-models-keda is upgraded.
KEDA's admission webhook (e.g. refusing two ScaledObjects on one target, or minReplicaCount above
maxReplicaCount) is not emulated either.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import Any

GROUP = "keda.sh"
VERSION = "v1alpha1"
KIND = "ScaledObject"
PLURAL = "scaledobjects"

# pydantic JSON Schema keywords carried into the CRD unchanged (all valid in a structural schema).
_CARRIED = frozenset(
    {
        "description",
        "format",
        "enum",
        "pattern",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "uniqueItems",
        "multipleOf",
    }
)
# Handled below: anything else in the models' schema is an error.
_HANDLED = frozenset(
    {
        "type",
        "title",
        "default",
        "const",
        "$ref",
        "anyOf",
        "properties",
        "required",
        "items",
        "additionalProperties",
        "exclusiveMinimum",
        "exclusiveMaximum",
    }
)
_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean"})


def _structural(
    node: Mapping[str, Any], defs: Mapping[str, Any], path: str, refs: tuple[str, ...]
) -> dict[str, Any]:
    """One node of pydantic's JSON Schema as a structural OpenAPI v3 node (``path`` names it in errors)."""
    node = dict(node)
    if "$ref" in node:
        name = node.pop("$ref").rsplit("/", 1)[-1]
        if name in refs:
            raise ValueError(f"{path}: {name} refers to itself; a structural schema cannot express recursion")
        # The field's own keywords (its description, its default) win over the referenced model's.
        return _structural({**defs[name], **node}, defs, path, (*refs, name))
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b != {"type": "null"}]
        if node.get("default", 0) is None:
            del node["default"]  # an optional field: absent, not null
        if len(branches) == 1:
            return _structural({**branches[0], **node}, defs, path, refs)
        if sorted(b.get("type", "") for b in branches) == ["integer", "string"]:
            # int | str: the one union a structural schema has (a string branch's pattern is kept).
            [string] = [b for b in branches if b.get("type") == "string"]
            kept = {k: v for k, v in {**string, **node}.items() if k in _CARRIED}
            if node.get("default") is not None:
                kept["default"] = copy.deepcopy(node["default"])
            return {**kept, "x-kubernetes-int-or-string": True}
        raise ValueError(f"{path}: cannot express the union {branches} in a structural schema")
    unknown = node.keys() - _CARRIED - _HANDLED
    if unknown:
        raise ValueError(f"{path}: keywords {sorted(unknown)} are not converted")
    out: dict[str, Any] = {k: v for k, v in node.items() if k in _CARRIED}
    type_ = node.get("type")
    if type_ is not None:
        if not isinstance(type_, str) or type_ not in _TYPES:
            raise ValueError(f"{path}: type {type_!r} has no structural form")
        out["type"] = type_
    if "const" in node:
        out["enum"] = [node["const"]]
    if node.get("default") is not None:
        out["default"] = copy.deepcopy(node["default"])
    for key, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if key in node:  # JSON Schema 2020-12's number form, as OpenAPI 3.0's boolean form
            out[bound] = node[key]
            out[key] = True
    if "properties" in node:
        out["type"] = "object"
        out["properties"] = {
            name: _structural(sub, defs, f"{path}.{name}", refs) for name, sub in node["properties"].items()
        }
    if node.get("required"):
        out["required"] = list(node["required"])
    additional = node.get("additionalProperties")
    if isinstance(additional, Mapping):
        if "properties" in node:
            raise ValueError(f"{path}: properties and additionalProperties cannot both be set")
        out["additionalProperties"] = _structural(additional, defs, f"{path}[*]", refs)
    elif additional is True:
        out["x-kubernetes-preserve-unknown-fields"] = True
    # additionalProperties: false is what the API server does anyway (pruning) and is not allowed in a CRD.
    if "items" in node:
        if not isinstance(node["items"], Mapping):
            raise ValueError(f"{path}: tuple items have no structural form")
        out["items"] = _structural(node["items"], defs, f"{path}[*]", refs)
    if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        if node.keys() - {"title", "description", "default"}:
            raise ValueError(f"{path}: a node without a type is not structural")
        out["x-kubernetes-preserve-unknown-fields"] = True  # Any
    return out


@functools.cache
def _schema() -> dict[str, Any]:
    from cloudcoil.models.keda.v1alpha1 import ScaledObject

    fields = ScaledObject.model_fields
    if (fields["api_version"].default, fields["kind"].default) != (f"{GROUP}/{VERSION}", KIND):
        raise ValueError("cloudcoil's ScaledObject is not keda.sh/v1alpha1 ScaledObject")
    raw = ScaledObject.model_json_schema(by_alias=True)
    defs = raw.pop("$defs", {})
    root = _structural(raw, defs, "", ())
    # What the API server validates itself, written as every CRD has it (the models' ObjectMeta is not a
    # CRD's business: the server refuses a CRD constraining more than metadata.name/generateName).
    properties = root["properties"]
    properties["apiVersion"] = {"type": "string"}
    properties["kind"] = {"type": "string"}
    properties["metadata"] = {"type": "object"}
    return root


def keda_crd() -> dict[str, Any]:
    """KEDA's ScaledObject CustomResourceDefinition (apiextensions.k8s.io/v1), derived from
    cloudcoil-models-keda's pydantic models; a new dict at each call."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["so"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": copy.deepcopy(_schema())},
                    "subresources": {"status": {}},
                }
            ],
        },
    }
