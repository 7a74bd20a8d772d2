"""
Object metadata as the API server validates it for every kind: names, labels, annotations.

Messages are the apiserver's (k8s.io/apimachinery/pkg/util/validation and ValidateObjectMeta), e.g.::

    metadata.name: Invalid value: "Handbook": a lowercase RFC 1123 subdomain must consist of ...
    metadata.labels: Invalid value: "x...x": must be no more than 63 characters
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from tandem.api.admission.causes import Cause
from tandem.api.admission.schema import render_value

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
DNS1035_LABEL_MAX = 63
LABEL_VALUE_MAX = 63
QUALIFIED_NAME_MAX = 63
ANNOTATIONS_MAX_BYTES = 256 * 1024
# A CronJob's name: its Jobs are named <name>-<11 characters> and must still be DNS-1035 labels.
CRONJOB_NAME_MAX = 52

_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT = rf"{_DNS1123_LABEL_FMT}(\.{_DNS1123_LABEL_FMT})*"
_DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE_FMT = f"(({_QUALIFIED_NAME_FMT}))?"

_DNS1123_LABEL = re.compile(f"^{_DNS1123_LABEL_FMT}$")
_DNS1123_SUBDOMAIN = re.compile(f"^{_DNS1123_SUBDOMAIN_FMT}$")
_DNS1035_LABEL = re.compile(f"^{_DNS1035_LABEL_FMT}$")
_QUALIFIED_NAME = re.compile(f"^{_QUALIFIED_NAME_FMT}$")
_LABEL_VALUE = re.compile(f"^{_LABEL_VALUE_FMT}$")

DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    f"'{_DNS1123_LABEL_FMT}')"
)
DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    f"'{_DNS1123_SUBDOMAIN_FMT}')"
)
DNS1035_LABEL_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
    f"validation is '{_DNS1035_LABEL_FMT}')"
)
_QUALIFIED_NAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    f"'{_QUALIFIED_NAME_FMT}')"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used "
    f"for validation is '{_LABEL_VALUE_FMT}')"
)


def _too_long(limit: int) -> str:
    return f"must be no more than {limit} characters"


def dns1123_subdomain(value: str) -> list[str]:
    """IsDNS1123Subdomain: the messages of what is wrong (empty when valid)."""
    errs = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(_too_long(DNS1123_SUBDOMAIN_MAX))
    if not _DNS1123_SUBDOMAIN.match(value):
        errs.append(DNS1123_SUBDOMAIN_MSG)
    return errs


def dns1123_label(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_LABEL_MAX:
        errs.append(_too_long(DNS1123_LABEL_MAX))
    if not _DNS1123_LABEL.match(value):
        errs.append(DNS1123_LABEL_MSG)
    return errs


def dns1035_label(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1035_LABEL_MAX:
        errs.append(_too_long(DNS1035_LABEL_MAX))
    if not _DNS1035_LABEL.match(value):
        errs.append(DNS1035_LABEL_MSG)
    return errs


def path_segment_name(value: str) -> list[str]:
    """ValidatePathSegmentName: what names of most apps/autoscaling kinds must avoid."""
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in value]


def qualified_name(value: str) -> list[str]:
    """IsQualifiedName: a label or annotation key, [prefix/]name."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs += [f"prefix part {m}" for m in dns1123_subdomain(prefix)]
    else:
        return [
            "a qualified name "
            + _QUALIFIED_NAME_MSG.removeprefix("name part ")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > QUALIFIED_NAME_MAX:
        errs.append("name part " + _too_long(QUALIFIED_NAME_MAX))
    if name and not _QUALIFIED_NAME.match(name):
        errs.append(_QUALIFIED_NAME_MSG)
    return errs


def label_value(value: str) -> list[str]:
    errs = []
    if len(value) > LABEL_VALUE_MAX:
        errs.append(_too_long(LABEL_VALUE_MAX))
    if not _LABEL_VALUE.match(value):
        errs.append(_LABEL_VALUE_MSG)
    return errs


NameRule = Callable[[str], list[str]]


def _cronjob_name(value: str) -> list[str]:
    # ValidateCronJobCreate: the name's own rule, then room for the Jobs' suffix.
    errs = dns1123_subdomain(value)
    if len(value) > CRONJOB_NAME_MAX:
        errs.append(_too_long(CRONJOB_NAME_MAX))
    return errs


# (group, plural) -> the rule for metadata.name; every other kind (custom resources too) is a subdomain.
NAME_RULES: dict[tuple[str, str], NameRule] = {
    ("", "namespaces"): dns1123_label,
    ("", "services"): dns1035_label,
    ("batch", "cronjobs"): _cronjob_name,
    ("autoscaling", "horizontalpodautoscalers"): path_segment_name,
}


def name_rule(group: str, plural: str) -> NameRule:
    return NAME_RULES.get((group, plural), dns1123_subdomain)


def name_causes(group: str, plural: str, name: Any, *, field: str = "metadata.name") -> list[Cause]:
    """The causes of an invalid metadata.name for objects of this kind (empty when valid)."""
    if not isinstance(name, str):
        return [Cause(field, f"Invalid value: {render_value(name)}: must be a string")]
    return [Cause(field, f"Invalid value: {render_value(name)}: {m}") for m in name_rule(group, plural)(name)]


def generate_name_causes(group: str, plural: str, prefix: Any) -> list[Cause]:
    """generateName is validated as a prefix: the name it starts, with a suffix of 5 characters."""
    if not isinstance(prefix, str):
        return [Cause("metadata.generateName", f"Invalid value: {render_value(prefix)}: must be a string")]
    return [
        Cause("metadata.generateName", f"Invalid value: {render_value(prefix)}: {m}")
        for m in name_rule(group, plural)(prefix + "x1y2z")
    ]


def labels_causes(labels: Any, field: str = "metadata.labels") -> list[Cause]:
    if labels is None:
        return []
    if not isinstance(labels, Mapping):
        return [Cause(field, f"Invalid value: {render_value(labels)}: must be a map of strings")]
    causes: list[Cause] = []
    for key, value in labels.items():
        causes += [Cause(field, f"Invalid value: {render_value(key)}: {m}") for m in qualified_name(str(key))]
        if not isinstance(value, str):
            causes.append(Cause(field, f"Invalid value: {render_value(value)}: must be a string"))
            continue
        causes += [Cause(field, f"Invalid value: {render_value(value)}: {m}") for m in label_value(value)]
    return causes


def annotations_causes(annotations: Any, field: str = "metadata.annotations") -> list[Cause]:
    if annotations is None:
        return []
    if not isinstance(annotations, Mapping):
        return [Cause(field, f"Invalid value: {render_value(annotations)}: must be a map of strings")]
    causes: list[Cause] = []
    total = 0
    for key, value in annotations.items():
        causes += [
            Cause(field, f"Invalid value: {render_value(key)}: {m}") for m in qualified_name(str(key).lower())
        ]
        total += len(str(key)) + len(str(value))
    if total > ANNOTATIONS_MAX_BYTES:
        causes.append(
            Cause(field, f"Too long: must have at most {ANNOTATIONS_MAX_BYTES} bytes", "FieldValueTooLong")
        )
    return causes


def metadata_causes(group: str, plural: str, meta: Mapping[str, Any]) -> list[Cause]:
    """ValidateObjectMeta, the part a manifest can get wrong: name, generateName, labels, annotations."""
    causes: list[Cause] = []
    if meta.get("name"):
        causes += name_causes(group, plural, meta["name"])
    elif meta.get("generateName"):
        causes += generate_name_causes(group, plural, meta["generateName"])
    else:
        causes.append(
            Cause("metadata.name", "Required value: name or generateName is required", "FieldValueRequired")
        )
    namespace = meta.get("namespace")
    if namespace:
        causes += [
            Cause("metadata.namespace", f"Invalid value: {render_value(namespace)}: {m}")
            for m in (dns1123_label(namespace) if isinstance(namespace, str) else ["must be a string"])
        ]
    causes += labels_causes(meta.get("labels"))
    causes += annotations_causes(meta.get("annotations"))
    return causes
