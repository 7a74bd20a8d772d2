"""Building blocks shared by the Tandem kinds: the model base, CEL rules, references, conditions.

Every rule that crosses fields is written once, as a CEL expression on the model that owns it. The CRD
generator copies it into `x-kubernetes-validations` (so the API server enforces it) and the model
evaluates the same expression when it parses a body (so `tandem up` and the operator enforce it too).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, model_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from tandem.api.admission import cel

GROUP = "tandem.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# RFC 1123 label: what Kubernetes accepts as the name of most objects and of list-map keys.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# RFC 1123 subdomain: the names of most objects (ConfigMaps, Secrets, custom resources).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A DNS-1035 label: what a Service's name must be (it starts with a letter).
DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# A label value's length: every child carries its owner's name as the value of tandem.dev/name.
LABEL_VALUE_MAX = 63
# A CronJob's name: its Jobs add 11 characters and must still be a DNS label (63).
CRONJOB_NAME_MAX = 52
# A Kubernetes quantity (resource.Quantity), as in the OpenAPI of the built-in kinds: '500m', '8Gi', '1e3'.
QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|"
    r"(\.[0-9]+))))?$"
)


def _cron_field(number: str, names: str = "", question: bool = False) -> str:
    """One field of a cron schedule: `*`, values, ranges and steps in the field's range, comma-separated."""
    value = f"({number}|{names})" if names else number
    start = r"\*|\?" if question else r"\*"
    item = rf"({start}|{value}(-{value})?)(/[1-9][0-9]*)?"
    return rf"{item}(,{item})*"


# A cron schedule as a CronJob accepts it (robfig/cron's standard parser): five fields in their ranges
# (minute 0-59, hour 0-23, day of month 1-31, month 1-12 or JAN-DEC, day of week 0-6 or SUN-SAT) or a
# descriptor.
CRON_SCHEDULE = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|"
    + r"\s+".join(
        [
            _cron_field("[0-5]?[0-9]"),
            _cron_field("(1?[0-9]|2[0-3])"),
            _cron_field("(0?[1-9]|[12][0-9]|3[01])", question=True),
            _cron_field("(0?[1-9]|1[0-2])", "(?i:JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)"),
            _cron_field("[0-6]", "(?i:SUN|MON|TUE|WED|THU|FRI|SAT)", question=True),
        ]
    )
    + r")$"
)
# A Go-style duration restricted to the units people use for schedules and timeouts.
DURATION = r"^([0-9]+(s|m|h))+$"

# Paths and keys never climb out of the place they name (a pod would read its own files, its
# service-account token first). Written without look-around, which neither the API server's RE2 nor
# pydantic's regex engine has.
# A ConfigMap key as Kubernetes validates it (IsConfigMapKey): [-._a-zA-Z0-9], not "." and not starting
# with "..". A key is a file name in the mounted volume: it names nothing outside it.
CONFIG_MAP_KEY = r"^\.?[-_a-zA-Z0-9][-._a-zA-Z0-9]*$"
_SEGMENT = r"(\.?[^/.][^/]*|\.\.[^/]+|\.?)"  # a path segment other than ".."
_FIRST_SEGMENT = r"(\.?[^/.][^/]*|\.\.[^/]+|\.)"  # the same, not empty
# A path, absolute or relative, with no ".." segment.
NO_PARENT_PATH = rf"^{_SEGMENT}(/{_SEGMENT})*$"
# A path relative to a folder that stays inside it: not absolute, no ".." segment.
INSIDE_PATH = rf"^{_FIRST_SEGMENT}(/{_SEGMENT})*$"


def uri_pattern(*schemes: str) -> str:
    """A URI of one of `schemes` (regular expressions, e.g. "https?"); a pvc:// URI's path stays inside
    its claim (no ".." segment: the claim is mounted whole and the path joined to its mount)."""
    alternatives = [rf"pvc://{_FIRST_SEGMENT}(/{_SEGMENT})*"] if "pvc" in schemes else []
    others = [s for s in schemes if s != "pvc"]
    if others:
        alternatives.append(rf"({'|'.join(others)})://.+")
    return f"^({'|'.join(alternatives)})$"


@dataclass(frozen=True)
class CelRule:
    """A cross-field rule: `rule` must hold for `self` (the object the model describes).

    `field_path` is the field to change when it fails (where the API server reports it), and
    `message_expression` a CEL expression saying the offending values (the API server falls back to
    `message` if it fails). `guards` are fields of the same object with bounds of their own: the rule is
    not checked while one of them is out of its bounds (absent optional fields do not count), so that
    one mistake gives one message, the field's own.
    """

    rule: str
    message: str
    field_path: str | None = None
    message_expression: str | None = None
    guards: tuple[str, ...] = ()

    def guarded(self, properties: Mapping[str, Any]) -> str:
        """The rule as the CRD carries it: with its guards, from the fields' bounds in `properties`."""
        conditions = [_bounds(name, properties.get(name) or {}) for name in self.guards]
        conditions = [c for c in conditions if c]
        if not conditions:
            return self.rule
        return f"!({' && '.join(conditions)}) || ({self.rule})"

    def as_schema(self, properties: Mapping[str, Any] | None = None) -> dict[str, str]:
        out = {"rule": self.guarded(properties or {}), "message": self.message}
        if self.message_expression:
            out["messageExpression"] = self.message_expression
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


def _bounds(name: str, schema: Mapping[str, Any]) -> str:
    """A CEL condition: field `name` is within the numeric bounds of its schema (or absent)."""
    parts = []
    if "minimum" in schema:
        parts.append(f"self.{name} {'>' if schema.get('exclusiveMinimum') else '>='} {schema['minimum']}")
    if "maximum" in schema:
        parts.append(f"self.{name} {'<' if schema.get('exclusiveMaximum') else '<='} {schema['maximum']}")
    if not parts:
        return ""
    return f"(!has(self.{name}) || {' && '.join(parts)})"


def _duplicates(name: str, info: Any, value: Any) -> str | None:
    """The first duplicate of a list-map (by its keys) or set field, as the API server reports it."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    list_type = extra.get("x-kubernetes-list-type")
    if list_type not in ("map", "set") or not isinstance(value, list):
        return None
    keys = list(extra.get("x-kubernetes-list-map-keys") or [])
    seen: list[Any] = []
    for i, item in enumerate(value):
        if list_type == "map":
            wire = item.model_dump(by_alias=True, mode="json") if isinstance(item, BaseModel) else item
            key: Any = {k: wire.get(k) for k in keys}
        else:
            key = item
        if key in seen:
            shown = json.dumps(key, separators=(",", ":"), sort_keys=True)
            return f"{info.alias or name}[{i}]: Duplicate value: {shown}"
        seen.append(key)
    return None


class TandemModel(BaseModel):
    """Base of every spec model: camelCase on the wire, strict about unknown fields, CEL-checked."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        if cls.cel_rules:
            properties = target.get("properties") or {}
            target["x-kubernetes-validations"] = [r.as_schema(properties) for r in cls.cel_rules]
        return schema

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        """What the API server checks beyond each field: list-map and set uniqueness, then the CEL rules
        (evaluated by the same CEL environment as the API server's, tandem.api.admission.cel)."""
        for name, info in type(self).model_fields.items():
            duplicate = _duplicates(name, info, getattr(self, name))
            if duplicate:
                raise ValueError(duplicate)
        if not self.cel_rules:
            return self
        wire = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        for rule in self.cel_rules:
            try:
                holds = bool(cel.evaluate(rule.rule, wire))
            except cel.CELError:
                holds = False  # as the API server: a rule that cannot be evaluated fails
            if not holds:
                message = rule.message
                if rule.message_expression:
                    with contextlib.suppress(cel.CELError):
                        message = str(cel.evaluate(rule.message_expression, wire))
                where = (rule.field_path or "").lstrip(".")
                raise ValueError(f"{where}: {message}" if where else message)
        return self


class StatusModel(BaseModel):
    """Base of status models: written by the operator, read back tolerantly."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


def nested(model: type[BaseModel], description: str) -> Any:
    """An object field that defaults to the model's own defaults (`default: {}` in the CRD)."""
    return Field(default_factory=model, description=description, json_schema_extra={"default": {}})


class LocalObjectReference(TandemModel):
    """The name of an object in the same namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the referenced object.")


class SecretKeyReference(TandemModel):
    """A key of a Secret in the same namespace as the resource."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Secret.")
    key: str = Field(min_length=1, max_length=253, description="Key within the Secret's data.")


class CrossNamespaceReference(TandemModel):
    """A Tandem object by name. Without a namespace it resolves in the referring resource's own namespace;
    a reference into another namespace is honoured only if a ReferenceGrant in that namespace allows it."""

    name: str = Field(min_length=1, max_length=253, description="Name of the referenced object.")
    namespace: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        max_length=63,
        description=(
            "Namespace of the referenced object; defaults to the referring resource's namespace. "
            "Another namespace must grant the reference with a ReferenceGrant."
        ),
    )


class ResourceList(TandemModel):
    """Compute resources of one container or worker, as Kubernetes quantities."""

    cpu: str | None = Field(
        default=None, max_length=64, pattern=QUANTITY, description="CPU quantity, e.g. '2' or '500m'."
    )
    memory: str | None = Field(
        default=None, max_length=64, pattern=QUANTITY, description="Memory quantity, e.g. '8Gi'."
    )
    gpu: int | None = Field(
        default=None, ge=0, le=16, description="Number of GPUs (requested as nvidia.com/gpu)."
    )


class ComputeResources(TandemModel):
    """Requests and limits, as in a container's `resources`."""

    requests: ResourceList | None = Field(default=None, description="Minimum resources reserved.")
    limits: ResourceList | None = Field(default=None, description="Maximum resources allowed.")


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(StatusModel):
    """An observation of one aspect of the resource, following the Kubernetes API conventions."""

    type: str = Field(description="Condition type: Ready, Reconciling or Stalled.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="A CamelCase word naming the cause of the last transition.")
    message: str = Field(default="", description="A human-readable explanation.")
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation this condition was computed from."
    )
    last_transition_time: str = Field(description="When the status last changed (RFC 3339).")


class CommonStatus(StatusModel):
    """Status fields every Tandem kind carries."""

    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation the operator last reconciled."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Reconciling and Stalled conditions (kstatus convention).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
