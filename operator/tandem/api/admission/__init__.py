"""
Admission of an object as the Kubernetes API server does it, in one implementation.

The API emulator of the tests (tests/emulator) admits every write through these functions, and
`tandem validate` admits manifests through them against the CRDs generated in memory from the API types,
so the two cannot disagree. In the API server's order:

1. decoding: the ``apiVersion``/``kind`` of the body must be the resource's (:func:`check_type_meta`), and
   with ``fieldValidation=Strict`` (kubectl's default) an unknown field refuses the request with a 400
   (:func:`check_unknown_fields`); otherwise it is pruned with a warning;
2. validation (one 422 listing every cause): the object's metadata (:mod:`.meta`: name rules of the kind,
   labels, annotations), then, for custom resources, pruning, defaulting, the OpenAPI schema with
   list-map and set uniqueness, and the CEL rules (:mod:`.schema`, :mod:`.cel`) — :func:`admit`.

Errors are :class:`Rejected`, carrying the HTTP code, the reason and the apiserver's message and causes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tandem.api.admission import meta, schema
from tandem.api.admission.causes import Cause
from tandem.api.admission.schema import format_invalid_message

__all__ = [
    "Cause",
    "CustomResource",
    "Rejected",
    "Resource",
    "admit",
    "check_type_meta",
    "check_unknown_fields",
    "resources_from_crd",
    "validate_object",
]


class Resource(Protocol):
    """What admission needs to know of a resource type (the emulator's ResourceType is one)."""

    @property
    def group(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def plural(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def schema(self) -> Mapping[str, Any] | None: ...
    @property
    def api_version(self) -> str: ...


@dataclass(frozen=True)
class CustomResource:
    """One served version of a CRD."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    schema: Mapping[str, Any] | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


def resources_from_crd(crd: Mapping[str, Any]) -> list[CustomResource]:
    """The served versions of an apiextensions.k8s.io/v1 CustomResourceDefinition."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    return [
        CustomResource(
            group=spec["group"],
            version=version["name"],
            plural=names["plural"],
            kind=names["kind"],
            namespaced=(spec.get("scope") or "Namespaced") == "Namespaced",
            schema=copy.deepcopy((version.get("schema") or {}).get("openAPIV3Schema")),
        )
        for version in spec.get("versions") or []
        if version.get("served", True)
    ]


@dataclass
class Rejected(Exception):
    """A refused request: a Kubernetes ``Status`` with ``code``, ``reason``, ``message`` and ``causes``."""

    code: int
    reason: str
    message: str
    causes: list[Cause] = field(default_factory=list)
    kind: str = ""
    group: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    @property
    def fields(self) -> list[str]:
        return [c.field for c in self.causes]


def bad_request(message: str) -> Rejected:
    return Rejected(400, "BadRequest", message)


def invalid(rt: Resource, name: str, causes: Sequence[Cause]) -> Rejected:
    return Rejected(
        422,
        "Invalid",
        format_invalid_message(rt.kind, rt.group, name, list(causes)),
        list(causes),
        rt.kind,
        rt.group,
        name,
    )


def check_type_meta(rt: Resource, obj: dict[str, Any]) -> None:
    """The body's kind and apiVersion must be the resource's (another version of its group is accepted:
    no conversion is needed between versions of one schema). Sets both to the resource's."""
    kind = obj.get("kind")
    api_version = obj.get("apiVersion")
    if kind is not None and kind != rt.kind:
        raise bad_request(
            f"the API version in the data ({api_version}) does not match the expected API version "
            f"({rt.api_version})"
            if api_version != rt.api_version
            else f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})"
        )
    if api_version is not None and api_version != rt.api_version:
        group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
        if group != rt.group:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({rt.api_version})"
            )
    obj["kind"] = rt.kind
    obj["apiVersion"] = rt.api_version


def check_unknown_fields(rt: Resource, obj: Any, field_validation: str | None) -> list[str]:
    """Fields the schema does not declare: with ``Strict`` a 400 naming them all (kubectl's default,
    ``--validate=strict``); with ``Warn`` (the API's default) or ``Ignore`` they are pruned later, with
    warnings for ``Warn``. Returns the warnings."""
    if not rt.schema:
        return []
    unknown = schema.unknown_fields(rt.schema, obj)
    mode = (field_validation or "").lower()
    if unknown and mode == "strict":
        listed = ", ".join(f'unknown field "{u}"' for u in unknown)
        raise bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
            f"strict decoding error: {listed}"
        )
    if mode == "ignore":
        return []
    return [f'unknown field "{u}"' for u in unknown]


def validate_object(
    rt: Resource,
    obj: dict[str, Any],
    old: dict[str, Any] | None = None,
    *,
    check_metadata: bool = True,
) -> None:
    """Prune unknown fields and apply defaults (in place), then validate: the metadata and, with a
    schema, the OpenAPI rules and the CEL rules. Raises :class:`Rejected` (422) listing every cause."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        raise bad_request("metadata must be an object")
    causes: list[Cause] = meta.metadata_causes(rt.group, rt.plural, metadata) if check_metadata else []
    if rt.schema:
        schema.prune(rt.schema, obj)
        schema.apply_defaults(rt.schema, obj)
        causes += schema.validate(rt.schema, obj, old)
    if causes:
        raise invalid(rt, str(metadata.get("name") or metadata.get("generateName") or ""), causes)


@dataclass
class Admitted:
    """What the API server would store (pruned and defaulted), and its warnings."""

    object: dict[str, Any]
    warnings: list[str]


def admit(
    rt: Resource,
    body: Mapping[str, Any],
    old: dict[str, Any] | None = None,
    *,
    field_validation: str | None = "Strict",
) -> Admitted:
    """The whole admission of a create (or, with ``old``, an update) of ``body`` as ``rt``: decoding
    (:func:`check_type_meta`, :func:`check_unknown_fields`), then :func:`validate_object`.
    Raises :class:`Rejected`."""
    if not isinstance(body, Mapping):
        raise bad_request("the body of the request must be a JSON object")
    obj = copy.deepcopy(dict(body))
    check_type_meta(rt, obj)
    warnings = check_unknown_fields(rt, obj, field_validation)
    obj.setdefault("metadata", {})
    validate_object(rt, obj, old)
    return Admitted(obj, warnings)
