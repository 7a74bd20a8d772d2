"""
PATCH bodies: JSON merge patch, JSON patch, strategic merge patch (approximation), apply patch.

* ``application/merge-patch+json`` — RFC 7386: dicts merge recursively, ``null`` deletes a key,
  everything else (incl. lists) replaces.
* ``application/json-patch+json`` — RFC 6902 via the ``jsonpatch`` package.
* ``application/strategic-merge-patch+json`` — an APPROXIMATION of Kubernetes' strategic merge patch:
  a merge patch where lists of objects are merged by a well-known merge key (``name`` for containers,
  env, volumes, ...; ``containerPort``/``port`` for ports; ``mountPath`` for volumeMounts; ``type`` for
  conditions; ``uid`` for ownerReferences), ``metadata.finalizers`` are merged as a set, the directives
  ``$patch: delete|replace``, ``$setElementOrder/<list>``, ``$deleteFromPrimitiveList/<list>`` and
  ``$retainKeys`` are honoured (the latter ignored). It does not use the real OpenAPI patch strategies.
* ``application/apply-patch+yaml`` — server-side apply, APPROXIMATED as a merge patch of the applied
  fields (lists: by the same merge keys as above) plus create-if-missing. No managedFields, no conflicts
  between field managers, no removal of fields that a manager stops applying.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (MERGE_PATCH, JSON_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)

# Well-known merge keys of lists in Kubernetes built-in types (by the field name of the list).
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "ports": ("containerPort", "port"),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
    "hostAliases": ("ip",),
    "topologySpreadConstraints": ("topologyKey",),
    "resourceClaims": ("name",),
    "metrics": (),  # atomic
}
# Primitive lists merged as sets by the strategic merge patch.
SET_LISTS = frozenset({"finalizers"})


class PatchError(ValueError):
    pass


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch. Returns a new object; the inputs are not modified."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Any, patch: Any) -> Any:
    """RFC 6902 JSON patch. Raises PatchError on failed operations (e.g. a failed ``test``)."""
    if not isinstance(patch, list):
        raise PatchError("json patch must be a list of operations")
    try:
        return jsonpatch.apply_patch(copy.deepcopy(target), patch)
    except (
        jsonpatch.JsonPatchException,
        jsonpatch.JsonPointerException,
        KeyError,
        IndexError,
        TypeError,
    ) as e:
        raise PatchError(str(e)) from e


def _merge_key(field: str, items: list[Any]) -> str | None:
    candidates = MERGE_KEYS.get(field)
    if candidates is None:
        candidates = ("name",)  # a heuristic for unknown lists of named objects
    for key in candidates:
        if items and all(isinstance(item, dict) and key in item for item in items):
            return key
    return None


def strategic_merge_patch(target: Any, patch: Any, *, field: str = "") -> Any:
    """An approximation of the strategic merge patch (see the module docstring)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            if isinstance(result.get(name), list):
                result[name] = [v for v in result[name] if v not in value]
            continue
        if key.startswith("$"):
            continue  # $retainKeys and other directives are not emulated
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_lists(key, result.get(key), value)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value, field=key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    for name, order in orders.items():
        if isinstance(result.get(name), list):
            result[name] = _reorder(name, result[name], order)
    return result


def _merge_lists(field: str, current: Any, patch: list[Any]) -> list[Any]:
    current_list = current if isinstance(current, list) else []
    if field in SET_LISTS and all(not isinstance(v, dict | list) for v in patch):
        return current_list + [v for v in patch if v not in current_list]
    key = _merge_key(field, [p for p in patch if not (isinstance(p, dict) and "$patch" in p and len(p) <= 2)])
    if key is None or not all(isinstance(c, dict) for c in current_list):
        return [p for p in copy.deepcopy(patch) if not (isinstance(p, dict) and p.get("$patch") == "delete")]
    result = copy.deepcopy(current_list)
    for item in patch:
        if not isinstance(item, dict):
            continue
        index = next((i for i, c in enumerate(result) if c.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(strategic_merge_patch({}, item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def _reorder(field: str, items: list[Any], order: list[Any]) -> list[Any]:
    if not order:
        return items
    if all(not isinstance(o, dict) for o in order):
        ranked = {v: i for i, v in enumerate(order) if isinstance(v, str | int | float | bool)}
        return sorted(
            items, key=lambda v: ranked.get(v, len(ranked)) if isinstance(v, str | int | float) else 0
        )
    key = _merge_key(field, order)
    if key is None:
        return items
    ranks = {o.get(key): i for i, o in enumerate(order)}
    return sorted(items, key=lambda v: ranks.get(v.get(key), len(ranks)) if isinstance(v, dict) else 0)


def apply_patch(target: Any, patch: Any) -> Any:
    """Server-side apply, approximated as a strategic-ish merge of the applied configuration."""
    return strategic_merge_patch(target, patch)


def patch_object(content_type: str, target: Any, patch: Any) -> Any:
    """Dispatch by the PATCH content type (media type parameters are ignored)."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == MERGE_PATCH:
        return merge_patch(target, patch)
    if media == JSON_PATCH:
        return json_patch(target, patch)
    if media == STRATEGIC_MERGE_PATCH:
        return strategic_merge_patch(target, patch)
    if media == APPLY_PATCH:
        return apply_patch(target, patch)
    raise PatchError(f"unsupported patch type: {content_type}")
