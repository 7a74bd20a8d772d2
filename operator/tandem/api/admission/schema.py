"""
Structural-schema handling of custom resources, as kube-apiserver does it for CRDs.

Used by the API emulator of the tests (tests/emulator) and by `tandem validate`, so both apply one
implementation::

    from tandem.api.admission import schema
    obj = schema.prune(crd_schema, obj)           # drop unknown fields (in place, returns obj)
    schema.apply_defaults(crd_schema, obj)        # apply `default:` values (in place)
    causes = schema.validate(crd_schema, obj, old=None)   # -> list[Cause]; empty when valid

``crd_schema`` is a version's ``schema.openAPIV3Schema`` dict (or the whole
``schema`` dict of a CRD version containing ``openAPIV3Schema``).

The order of the apiserver is: prune → default → validate (OpenAPI) → CEL rules.
:func:`prepare` does the first two, :func:`validate` does the last two.

Messages imitate the apiserver's (k8s.io/apimachinery field errors), e.g.::

    spec.chunking.size: Invalid value: 5000: spec.chunking.size in body should be less than or equal to 4096
    spec.index.type: Unsupported value: "FOO": supported values: "HNSW", "FLAT"
    spec.sources: Required value
"""

from __future__ import annotations

import copy
import datetime
import json
import re
from collections.abc import Mapping
from typing import Any

import tandem.api.admission.cel as cel
from tandem.api.admission.causes import Cause

JSON = Any
Schema = Mapping[str, Any]

# Fields of the root object that are never pruned nor validated by the CR schema (handled elsewhere).
_ROOT_META_FIELDS = ("apiVersion", "kind", "metadata")


# ---------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------


def unwrap(schema: Schema | None) -> Schema:
    """Accept both a CRD version's ``schema`` and its ``openAPIV3Schema``."""
    if not schema:
        return {}
    if "openAPIV3Schema" in schema:
        return schema["openAPIV3Schema"] or {}
    return schema


def render_value(value: JSON) -> str:
    """Render a value roughly as Go's ``%#v`` does in field errors."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def type_name(value: JSON) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _index(path: str, index: int) -> str:
    return f"{path}[{index}]"


def _mapkey(path: str, key: str) -> str:
    return f"{path}[{key}]"


def _matches_type(value: JSON, expected: str) -> bool:
    match expected:
        case "object":
            return isinstance(value, dict)
        case "array":
            return isinstance(value, list)
        case "string":
            return isinstance(value, str)
        case "boolean":
            return isinstance(value, bool)
        case "integer":
            return (isinstance(value, int) and not isinstance(value, bool)) or (
                isinstance(value, float) and value.is_integer()
            )
        case "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
        case _:
            return True


def _preserves(schema: Schema) -> bool:
    return (
        bool(schema.get("x-kubernetes-preserve-unknown-fields")) or schema.get("additionalProperties") is True
    )


def _is_embedded(schema: Schema) -> bool:
    return bool(schema.get("x-kubernetes-embedded-resource"))


# ---------------------------------------------------------------------------------------------------------
# Pruning
# ---------------------------------------------------------------------------------------------------------


def prune(schema: Schema | None, obj: JSON, *, root: bool = True) -> JSON:
    """
    Remove the fields not declared in the schema (in place), as the apiserver silently does.

    Fields under ``x-kubernetes-preserve-unknown-fields: true`` are kept.
    Returns the same object for convenience. See :func:`unknown_fields` to list what would be pruned.
    """
    _prune(unwrap(schema), obj, root=root, path="", pruned=[])
    return obj


def unknown_fields(schema: Schema | None, obj: JSON, *, root: bool = True) -> list[str]:
    """The paths of fields that :func:`prune` would remove (the object is not modified)."""
    pruned: list[str] = []
    _prune(unwrap(schema), copy.deepcopy(obj), root=root, path="", pruned=pruned)
    return pruned


def _prune(schema: Schema, value: JSON, *, root: bool, path: str, pruned: list[str]) -> None:
    if not schema:
        return
    if isinstance(value, dict):
        props: Mapping[str, Any] = schema.get("properties") or {}
        addl = schema.get("additionalProperties")
        for key in list(value):
            if root and key in _ROOT_META_FIELDS:
                if key == "metadata" and isinstance(value[key], dict):
                    # Only name/generateName can be constrained in the metadata; nothing is pruned.
                    pass
                continue
            if _is_embedded(schema) and key in _ROOT_META_FIELDS:
                continue
            if key in props:
                _prune(props[key] or {}, value[key], root=False, path=_child(path, key), pruned=pruned)
            elif isinstance(addl, dict):
                _prune(addl, value[key], root=False, path=_mapkey(path, key), pruned=pruned)
            elif _preserves(schema) or (
                not props and not addl and schema.get("type") not in (None, "object")
            ):
                continue
            else:
                pruned.append(_child(path, key))
                del value[key]
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                _prune(items, item, root=False, path=_index(path, i), pruned=pruned)


# ---------------------------------------------------------------------------------------------------------
# Defaulting
# ---------------------------------------------------------------------------------------------------------


def apply_defaults(schema: Schema | None, obj: JSON) -> JSON:
    """
    Apply ``default:`` values where fields are absent (in place; also returns the object).

    As the apiserver does, defaults are applied recursively, including inside the values
    that were defaulted themselves (e.g. ``default: {}`` on an object whose fields have defaults).
    ``null`` values of non-nullable fields are dropped first, then defaulted (if a default exists).
    """
    _default(unwrap(schema), obj)
    return obj


def _default(schema: Schema, value: JSON) -> None:
    if not schema:
        return
    if isinstance(value, dict):
        props: Mapping[str, Any] = schema.get("properties") or {}
        for key, sub in props.items():
            sub = sub or {}
            if key in value and value[key] is None and not sub.get("nullable"):
                del value[key]  # non-nullable nulls are pruned (and then defaulted if there is a default)
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                _default(sub, value[key])
        addl = schema.get("additionalProperties")
        if isinstance(addl, dict):
            for key in list(value):
                if key not in props:
                    _default(addl, value[key])
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for item in value:
                _default(items, item)


def prepare(schema: Schema | None, obj: JSON) -> JSON:
    """Prune unknown fields, then apply defaults (in place) — what the apiserver does before validation."""
    prune(schema, obj)
    apply_defaults(schema, obj)
    return obj


# ---------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------

_MISSING = object()


def validate(schema: Schema | None, obj: JSON, old: JSON = None, *, root: bool = True) -> list[Cause]:
    """
    Validate an object against a structural schema (OpenAPI v3 subset + CEL rules).

    ``old`` is the previous object on updates: transition rules (those referencing ``oldSelf``)
    are evaluated only when the old value exists at the same path; they are skipped on creation.
    Returns the list of causes; an empty list means valid.

    As in the apiserver, CEL rules are not evaluated when the OpenAPI validation has found
    "blocking" errors (wrong types, unsupported enum values); a generic cause is added instead.
    """
    causes: list[Cause] = []
    sch = unwrap(schema)
    oldv = old if old is not None else _MISSING
    _validate(sch, obj, oldv, path="", root=root, causes=causes)
    if any(cause.reason in _BLOCKING for cause in causes):
        if _has_rules(sch):
            causes.append(
                Cause(
                    "<nil>",
                    'Invalid value: "null": some validation rules were not checked because '
                    "the object was invalid; correct the existing errors to complete validation",
                )
            )
    else:
        _cel_walk(sch, obj, oldv, path="", root=root, causes=causes)
    return causes


_BLOCKING = frozenset({"FieldValueTypeInvalid", "FieldValueNotSupported"})


def _has_rules(schema: Any) -> bool:
    if isinstance(schema, dict):
        if schema.get("x-kubernetes-validations"):
            return True
        return any(_has_rules(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_has_rules(v) for v in schema)
    return False


def _cel_walk(schema: Schema, value: JSON, old: Any, *, path: str, root: bool, causes: list[Cause]) -> None:
    if not schema or value is None:
        return
    if isinstance(value, dict):
        props: Mapping[str, Any] = schema.get("properties") or {}
        old_dict = old if isinstance(old, dict) else {}
        addl = schema.get("additionalProperties")
        for key, item in value.items():
            if root and key in _ROOT_META_FIELDS:
                continue
            if key in props:
                _cel_walk(
                    props[key] or {},
                    item,
                    old_dict.get(key, _MISSING),
                    path=_child(path, key),
                    root=False,
                    causes=causes,
                )
            elif isinstance(addl, dict):
                _cel_walk(
                    addl,
                    item,
                    old_dict.get(key, _MISSING),
                    path=_mapkey(path, key),
                    root=False,
                    causes=causes,
                )
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            old_by_key = _old_list_items(schema, old)
            keys = schema.get("x-kubernetes-list-map-keys") or []
            for i, item in enumerate(value):
                old_item: Any = _MISSING
                if old_by_key is not None and isinstance(item, dict):
                    old_item = old_by_key.get(tuple(item.get(k) for k in keys), _MISSING)
                _cel_walk(items, item, old_item, path=_index(path, i), root=False, causes=causes)
    if schema.get("x-kubernetes-validations"):
        causes.extend(
            cel.check_rules(
                schema, value, None if old is _MISSING else old, path=path, has_old=old is not _MISSING
            )
        )


def _validate(schema: Schema, value: JSON, old: Any, *, path: str, root: bool, causes: list[Cause]) -> None:
    if not schema:
        return

    if value is None:
        if schema.get("nullable"):
            return
        if schema.get("type") or schema.get("x-kubernetes-int-or-string"):
            expected = "string" if schema.get("x-kubernetes-int-or-string") else schema.get("type")
            causes.append(
                Cause(
                    path,
                    f'Invalid value: "null": {path} in body must be of type {expected}: "null"',
                    "FieldValueTypeInvalid",
                )
            )
            return

    if schema.get("x-kubernetes-int-or-string"):
        if not (isinstance(value, str) or _matches_type(value, "integer")):
            causes.append(
                Cause(
                    path,
                    f"Invalid value: {render_value(type_name(value))}: "
                    f"{path} in body must be of type integer,string: {render_value(type_name(value))}",
                    "FieldValueTypeInvalid",
                )
            )
            return
    else:
        expected = schema.get("type")
        if expected and not _matches_type(value, expected):
            actual = type_name(value)
            causes.append(
                Cause(
                    path,
                    f'Invalid value: "{actual}": {path} in body must be of type {expected}: "{actual}"',
                    "FieldValueTypeInvalid",
                )
            )
            return

    _validate_format(schema, value, path, causes)
    _validate_enum(schema, value, path, causes)
    _validate_numbers(schema, value, path, causes)
    _validate_strings(schema, value, path, causes)
    if isinstance(value, list):
        _validate_array(schema, value, old, path, causes)
    if isinstance(value, dict):
        _validate_object(schema, value, old, path, root, causes)

    for sub in schema.get("allOf") or []:
        _validate(sub, value, old, path=path, root=root, causes=causes)
    for key in ("anyOf", "oneOf"):
        subs = schema.get(key) or []
        if subs:
            matches = sum(1 for sub in subs if not validate(sub, value, root=False))
            if (key == "anyOf" and matches == 0) or (key == "oneOf" and matches != 1):
                msg = (
                    "must validate one and only one schema (oneOf)"
                    if key == "oneOf"
                    else "must validate at least one schema (anyOf)"
                )
                causes.append(Cause(path, f"Invalid value: {render_value(value)}: {path} in body {msg}"))
    if "not" in schema and not validate(schema["not"], value, root=False):
        causes.append(
            Cause(
                path,
                f"Invalid value: {render_value(value)}: {path} in body must not validate the schema (not)",
            )
        )


_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _validate_format(schema: Schema, value: JSON, path: str, causes: list[Cause]) -> None:
    fmt = schema.get("format")
    if not fmt:
        return
    if fmt in _INT_RANGES and _matches_type(value, "integer") and not isinstance(value, str):
        lo, hi = _INT_RANGES[fmt]
        if not lo <= int(value) <= hi:
            causes.append(
                Cause(
                    path,
                    f"Invalid value: {render_value(value)}: {path} in body must be of type {fmt}: "
                    f"{render_value(value)}",
                )
            )
    elif fmt == "date-time" and isinstance(value, str):
        try:
            datetime.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            causes.append(
                Cause(
                    path,
                    f"Invalid value: {render_value(value)}: {path} in body must be of type "
                    f"date-time: {render_value(value)}",
                )
            )
    elif fmt == "date" and isinstance(value, str) and not _DATE_RE.match(value):
        causes.append(
            Cause(
                path,
                f"Invalid value: {render_value(value)}: {path} in body must be of type date: "
                f"{render_value(value)}",
            )
        )
    # Other formats (uri, email, byte, uuid, ...) are accepted as-is (loosely, like many apiserver versions).


def _validate_enum(schema: Schema, value: JSON, path: str, causes: list[Cause]) -> None:
    enum = schema.get("enum")
    if enum is None:
        return
    if value not in enum or any(isinstance(value, bool) != isinstance(e, bool) for e in enum if e == value):
        supported = ", ".join(render_value(e) for e in enum)
        causes.append(
            Cause(
                path,
                f"Unsupported value: {render_value(value)}: supported values: {supported}",
                "FieldValueNotSupported",
            )
        )


def _validate_numbers(schema: Schema, value: JSON, path: str, causes: list[Cause]) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    shown = render_value(value)
    if "maximum" in schema:
        maximum = schema["maximum"]
        if schema.get("exclusiveMaximum") and value >= maximum:
            causes.append(
                Cause(
                    path,
                    f"Invalid value: {shown}: {path} in body should be less than {render_value(maximum)}",
                )
            )
        elif value > maximum:
            causes.append(
                Cause(
                    path,
                    f"Invalid value: {shown}: {path} in body should be less than or equal to "
                    f"{render_value(maximum)}",
                )
            )
    if "minimum" in schema:
        minimum = schema["minimum"]
        if schema.get("exclusiveMinimum") and value <= minimum:
            causes.append(
                Cause(
                    path,
                    f"Invalid value: {shown}: {path} in body should be greater than {render_value(minimum)}",
                )
            )
        elif value < minimum:
            causes.append(
                Cause(
                    path,
                    f"Invalid value: {shown}: {path} in body should be greater than or equal to "
                    f"{render_value(minimum)}",
                )
            )
    if schema.get("multipleOf"):
        factor = schema["multipleOf"]
        if (value / factor) != int(value / factor):
            causes.append(
                Cause(
                    path,
                    f"Invalid value: {shown}: {path} in body should be a multiple of {render_value(factor)}",
                )
            )


def _validate_strings(schema: Schema, value: JSON, path: str, causes: list[Cause]) -> None:
    if not isinstance(value, str):
        return
    shown = render_value(value)
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        causes.append(
            Cause(path, f"Too long: may not be more than {schema['maxLength']} bytes", "FieldValueTooLong")
        )
    if "minLength" in schema and len(value) < schema["minLength"]:
        causes.append(
            Cause(
                path,
                f"Invalid value: {shown}: {path} in body should be at least {schema['minLength']} chars long",
            )
        )
    if "pattern" in schema:
        try:
            ok = re.search(schema["pattern"], value) is not None
        except re.error:
            ok = True  # Go RE2 syntax that Python does not understand: be permissive.
        if not ok:
            causes.append(
                Cause(path, f"Invalid value: {shown}: {path} in body should match '{schema['pattern']}'")
            )


def _validate_array(schema: Schema, value: list[Any], old: Any, path: str, causes: list[Cause]) -> None:
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        causes.append(
            Cause(
                path,
                f"Too many: {len(value)}: must have at most {schema['maxItems']} items",
                "FieldValueTooMany",
            )
        )
    if "minItems" in schema and len(value) < schema["minItems"]:
        causes.append(
            Cause(
                path,
                f"Invalid value: {len(value)}: {path} in body should have at least "
                f"{schema['minItems']} items",
            )
        )
    list_type = schema.get("x-kubernetes-list-type")
    if schema.get("uniqueItems") or list_type == "set":
        seen: list[Any] = []
        for i, item in enumerate(value):
            if item in seen:
                causes.append(
                    Cause(_index(path, i), f"Duplicate value: {render_value(item)}", "FieldValueDuplicate")
                )
            seen.append(item)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen_keys: list[tuple[Any, ...]] = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            key = tuple(item.get(k) for k in keys)
            if key in seen_keys:
                shown = render_value({k: item.get(k) for k in keys})
                causes.append(Cause(_index(path, i), f"Duplicate value: {shown}", "FieldValueDuplicate"))
            seen_keys.append(key)
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            _validate(items, item, _MISSING, path=_index(path, i), root=False, causes=causes)


def _old_list_items(schema: Schema, old: Any) -> dict[tuple[Any, ...], Any] | None:
    # Only map-lists are correlatable for transition rules (as in the apiserver).
    if schema.get("x-kubernetes-list-type") != "map" or not isinstance(old, list):
        return None
    keys = schema.get("x-kubernetes-list-map-keys") or []
    return {tuple(item.get(k) for k in keys): item for item in old if isinstance(item, dict)}


def _validate_object(
    schema: Schema, value: dict[str, Any], old: Any, path: str, root: bool, causes: list[Cause]
) -> None:
    props: Mapping[str, Any] = schema.get("properties") or {}
    old_dict = old if isinstance(old, dict) else {}
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        causes.append(
            Cause(
                path,
                f"Too many: {len(value)}: must have at most {schema['maxProperties']} items",
                "FieldValueTooMany",
            )
        )
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        causes.append(
            Cause(
                path,
                f"Invalid value: {len(value)}: {path} in body should have at least "
                f"{schema['minProperties']} properties",
            )
        )
    for key in schema.get("required") or []:
        if key not in value:
            causes.append(Cause(_child(path, key), "Required value", "FieldValueRequired"))
    for key, sub in props.items():
        if key not in value:
            continue
        if root and key in _ROOT_META_FIELDS:
            if key == "metadata" and isinstance(value[key], dict):
                _validate_metadata(sub or {}, value[key], causes)
            continue
        _validate(
            sub or {},
            value[key],
            old_dict.get(key, _MISSING),
            path=_child(path, key),
            root=False,
            causes=causes,
        )
    addl = schema.get("additionalProperties")
    if isinstance(addl, dict):
        for key, item in value.items():
            if key not in props:
                _validate(
                    addl,
                    item,
                    old_dict.get(key, _MISSING),
                    path=_mapkey(path, key),
                    root=False,
                    causes=causes,
                )


def _validate_metadata(schema: Schema, meta: dict[str, Any], causes: list[Cause]) -> None:
    # CRDs may constrain only metadata.name and metadata.generateName (string validations).
    for key in ("name", "generateName"):
        sub = (schema.get("properties") or {}).get(key)
        if sub and key in meta:
            _validate(sub, meta[key], _MISSING, path=f"metadata.{key}", root=False, causes=causes)


def format_invalid_message(kind: str, group: str, name: str, causes: list[Cause]) -> str:
    """The top-level message of a 422 Invalid Status, e.g. ``Kind.group "name" is invalid: ...``."""
    qualified = f"{kind}.{group}" if group else kind
    details = [str(cause) for cause in causes]
    text = details[0] if len(details) == 1 else "[" + ", ".join(details) + "]"
    return f'{qualified} "{name}" is invalid: {text}'
