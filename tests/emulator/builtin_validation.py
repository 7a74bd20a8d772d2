"""
Validation of the built-in kinds the operator creates, as the API server validates them.

For ConfigMap, Pod, Service, Deployment, Job, CronJob, NetworkPolicy and HorizontalPodAutoscaler:

* the upstream OpenAPI schema of Kubernetes 1.32 (as JSON Schema, from the ``kubernetes-validate``
  package): types, required fields, enums; fields it does not declare are unknown: with
  ``fieldValidation=Strict`` a 400 ``strict decoding error: unknown field "spec.x"``, otherwise dropped with a
  warning (the apiserver's default);
* what the Go validation adds: quantities (``8 gigs`` is not one), a CronJob's schedule (robfig/cron's
  standard parser, :mod:`tests.emulator.cron`), label keys and values in pod templates and selectors, a
  Job's name as the value of its pods' ``job-name`` label (at most 63 characters), a Deployment's selector
  matching its template's labels, ConfigMap keys and size;
* on updates, a Job's ``spec.template`` and ``spec.selector`` are immutable.

Metadata (name rules of each kind, labels, annotations) is checked for every kind by
:mod:`tandem.api.admission.meta`. Errors are :class:`tandem.api.admission.Rejected` (422, or 400 for strict
decoding) with the apiserver's wording where it has one; a real API server reports a wrong type or an
unparsable quantity as a 400 decoding error, here it is a 422 cause naming the field.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
from referencing import Registry, Resource

from tandem.api.admission import Rejected, bad_request, invalid
from tandem.api.admission.causes import Cause
from tandem.api.admission.meta import label_value, labels_causes
from tandem.api.admission.schema import render_value
from tests.emulator import cron

KUBERNETES_VERSION = "1.32.0"
SCHEMAS = (
    Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}-local"
)

# (group, plural) -> the schema file of the kind, in the version the emulator serves.
VALIDATED: dict[tuple[str, str], str] = {
    ("", "configmaps"): "configmap-v1.json",
    ("", "pods"): "pod-v1.json",
    ("", "services"): "service-v1.json",
    ("apps", "deployments"): "deployment-apps-v1.json",
    ("batch", "jobs"): "job-batch-v1.json",
    ("batch", "cronjobs"): "cronjob-batch-v1.json",
    ("networking.k8s.io", "networkpolicies"): "networkpolicy-networking-v1.json",
    ("autoscaling", "horizontalpodautoscalers"): "horizontalpodautoscaler-autoscaling-v2.json",
}

_QUANTITY_REF = "io.k8s.apimachinery.pkg.api.resource.Quantity"
# resource.Quantity's grammar: a signed decimal, then a binary or decimal SI suffix or an exponent.
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?(\d+(\.\d*)?|\.\d+))?$")
_QUANTITY_MSG = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
_CONFIG_MAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_CONFIG_MAP_KEY_MSG = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
    "'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
)
CONFIG_MAP_MAX_BYTES = 1024 * 1024
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


@functools.cache
def _definitions() -> dict[str, Any]:
    defs: dict[str, Any] = json.loads((SCHEMAS / "_definitions.json").read_text())
    return defs


@functools.cache
def _validator(file: str) -> tuple[Any, dict[str, Any]]:
    schema = json.loads((SCHEMAS / file).read_text())
    registry: Registry = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(_definitions()) @ registry
    return jsonschema.validators.Draft202012Validator(schema, registry=registry), schema


def _resolve(node: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """The schema a `$ref` points to (within the definitions) and the name of its definition."""
    name = ""
    while "$ref" in node:
        name = str(node["$ref"]).rsplit("/", 1)[-1]
        node = _definitions()["$defs"][name]
    return node, name


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _walk(
    node: Mapping[str, Any], value: Any, path: str
) -> Iterator[tuple[str, str, Any]]:  # (what, path, value): ("unknown" | "quantity", ...)
    node, name = _resolve(node)
    if name == _QUANTITY_REF:
        if isinstance(value, str) and not _QUANTITY.match(value.strip()):
            yield "quantity", path, value
        return
    if isinstance(value, dict):
        props: Mapping[str, Any] = node.get("properties") or {}
        addl = node.get("additionalProperties")
        for key, item in value.items():
            if key in props:
                yield from _walk(props[key], item, _join(path, key))
            elif isinstance(addl, Mapping):
                yield from _walk(addl, item, f"{path}[{key}]")
            elif props and addl is not True:
                yield "unknown", _join(path, key), item
    elif isinstance(value, list) and isinstance(node.get("items"), Mapping):
        for i, item in enumerate(value):
            yield from _walk(node["items"], item, f"{path}[{i}]")


def _path(error: jsonschema.ValidationError) -> str:
    out = ""
    for part in error.absolute_path:
        out = f"{out}[{part}]" if isinstance(part, int) else _join(out, str(part))
    return out


def _schema_causes(validator: Any, obj: Mapping[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        path = _path(error)
        if error.validator == "required":
            missing = error.message.split("'")[1] if "'" in error.message else ""
            causes.append(Cause(_join(path, missing), "Required value", "FieldValueRequired"))
        elif error.validator == "enum":
            supported = ", ".join(render_value(v) for v in error.validator_value if v is not None)
            causes.append(
                Cause(
                    path,
                    f"Unsupported value: {render_value(error.instance)}: supported values: {supported}",
                    "FieldValueNotSupported",
                )
            )
        else:
            causes.append(Cause(path, f"Invalid value: {render_value(error.instance)}: {error.message}"))
    return causes


def _pod_templates(kind_key: tuple[str, str], obj: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    spec = obj.get("spec") or {}
    if kind_key in {("apps", "deployments"), ("batch", "jobs")}:
        yield "spec.template", spec.get("template")
    elif kind_key == ("batch", "cronjobs"):
        job = (spec.get("jobTemplate") or {}).get("spec") or {}
        yield "spec.jobTemplate.spec.template", job.get("template")


def _semantic_causes(kind_key: tuple[str, str], obj: Mapping[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    spec = obj.get("spec") or {}
    name = str((obj.get("metadata") or {}).get("name") or "")
    for path, template in _pod_templates(kind_key, obj):
        if isinstance(template, Mapping):
            causes += labels_causes((template.get("metadata") or {}).get("labels"), f"{path}.metadata.labels")
    selector = spec.get("selector") if isinstance(spec.get("selector"), Mapping) else None
    if selector is not None and kind_key != ("", "services"):
        causes += labels_causes(selector.get("matchLabels"), "spec.selector.matchLabels")
    elif kind_key == ("", "services"):
        causes += labels_causes(spec.get("selector"), "spec.selector")
    if kind_key == ("apps", "deployments") and selector is not None:
        wanted = selector.get("matchLabels") or {}
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if any(labels.get(k) != v for k, v in wanted.items()):
            causes.append(
                Cause(
                    "spec.template.metadata.labels",
                    f"Invalid value: {render_value(labels)}: `selector` does not match template `labels`",
                )
            )
    if kind_key == ("batch", "jobs") and not spec.get("manualSelector"):
        # The API server labels the Job's pods with its name: it must be a label value.
        causes += [
            Cause("spec.template.labels", f"Invalid value: {render_value(name)}: {m}")
            for m in label_value(name)
        ]
    if kind_key == ("batch", "cronjobs") and isinstance(spec.get("schedule"), str):
        causes += [
            Cause("spec.schedule", f"Invalid value: {render_value(spec['schedule'])}: {m}")
            for m in cron.errors(spec["schedule"])
        ]
    if kind_key == ("", "configmaps"):
        total = 0
        for field in ("data", "binaryData"):
            for key, value in (obj.get(field) or {}).items():
                if not _CONFIG_MAP_KEY.match(key) or key in (".", "..") or key.startswith(".."):
                    causes.append(
                        Cause(f"{field}[{key}]", f"Invalid value: {render_value(key)}: {_CONFIG_MAP_KEY_MSG}")
                    )
                total += len(key) + len(str(value))
        if total > CONFIG_MAP_MAX_BYTES:
            causes.append(
                Cause("", f"Too long: must have at most {CONFIG_MAP_MAX_BYTES} bytes", "FieldValueTooLong")
            )
    return causes


def admit(
    rt: Any, obj: dict[str, Any], old: Mapping[str, Any] | None, field_validation: str | None
) -> list[str]:
    """Validate a built-in object before it is stored (in place: unknown fields are dropped).
    Returns the warnings; raises :class:`Rejected`."""
    key = (rt.group, rt.plural)
    file = VALIDATED.get(key)
    if file is None:
        return []
    validator, schema = _validator(file)
    body = {k: v for k, v in obj.items() if k != "status"}
    found = list(_walk(schema, body, ""))
    unknown = [path for what, path, _ in found if what == "unknown"]
    warnings: list[str] = []
    if unknown:
        if (field_validation or "").lower() == "strict":
            listed = ", ".join(f'unknown field "{u}"' for u in unknown)
            raise bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                f"strict decoding error: {listed}"
            )
        if (field_validation or "").lower() != "ignore":
            warnings = [f'unknown field "{u}"' for u in unknown]
        _drop(obj, unknown)
        body = {k: v for k, v in obj.items() if k != "status"}
    causes = [
        Cause(path, f"Invalid value: {render_value(value)}: {_QUANTITY_MSG}")
        for what, path, value in found
        if what == "quantity"
    ]
    causes += _schema_causes(validator, body)
    causes += _semantic_causes(key, body)
    if old is not None and key == ("batch", "jobs"):
        old_spec, new_spec = old.get("spec") or {}, body.get("spec") or {}
        for field in ("template", "selector"):
            if field in old_spec and old_spec.get(field) != new_spec.get(field):
                causes.append(
                    Cause(
                        f"spec.{field}",
                        f"Invalid value: {render_value(new_spec.get(field))}: field is immutable",
                    )
                )
    if causes:
        raise invalid(rt, str((obj.get("metadata") or {}).get("name") or ""), causes)
    return warnings


def _drop(obj: dict[str, Any], paths: list[str]) -> None:
    for path in paths:
        parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
        node: Any = obj
        for part in parts[:-1]:
            node = node[int(part[1:-1])] if part.startswith("[") else node.get(part)
            if node is None:
                break
        else:
            if isinstance(node, dict):
                node.pop(parts[-1], None)


__all__ = ["VALIDATED", "Rejected", "admit"]
