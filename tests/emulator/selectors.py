"""
Label selectors and field selectors, as in ``?labelSelector=...&fieldSelector=...``.

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x,y)``, ``a`` (exists),
``!a`` (does not exist), comma-separated (AND).

Field selectors: ``metadata.name``, ``metadata.namespace`` and any other dotted path into the object
(the real apiserver allows only a few per kind, e.g. ``status.phase`` for pods, ``spec.nodeName``;
here, any dotted path works), with ``=``, ``==``, ``!=``, comma-separated (AND).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    pass


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # '=', '!=', 'in', 'notin', 'exists', '!'
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        match self.op:
            case "=":
                return labels.get(self.key) == self.values[0] if self.key in labels else False
            case "!=":
                return labels.get(self.key) != self.values[0]
            case "in":
                return self.key in labels and labels[self.key] in self.values
            case "notin":
                return self.key not in labels or labels[self.key] not in self.values
            case "exists":
                return self.key in labels
            case "!":
                return self.key not in labels
        raise SelectorError(f"unknown operator {self.op!r}")  # pragma: no cover


_KEY = r"[A-Za-z0-9](?:[-A-Za-z0-9_./]*[A-Za-z0-9])?"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\(([^)]*)\)\s*")
_EQ_RE = re.compile(rf"^\s*({_KEY})\s*(==|!=|=)\s*([-A-Za-z0-9_.]*)\s*")
_NOT_RE = re.compile(rf"^\s*!\s*({_KEY})\s*")
_EXISTS_RE = re.compile(rf"^\s*({_KEY})\s*")


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse a label selector string. Raises :class:`SelectorError` if malformed."""
    reqs: list[Requirement] = []
    rest = (text or "").strip()
    while rest:
        if m := _SET_RE.match(rest):
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(Requirement(m.group(1), m.group(2), values))
        elif m := _EQ_RE.match(rest):
            op = "=" if m.group(2) in ("=", "==") else "!="
            reqs.append(Requirement(m.group(1), op, (m.group(3),)))
        elif m := _NOT_RE.match(rest):
            reqs.append(Requirement(m.group(1), "!"))
        elif m := _EXISTS_RE.match(rest):
            reqs.append(Requirement(m.group(1), "exists"))
        else:
            raise SelectorError(f"unable to parse requirement: {rest!r}")
        rest = rest[m.end() :].strip()
        if rest.startswith(","):
            rest = rest[1:].strip()
            if not rest:
                raise SelectorError("trailing comma in the selector")
        elif rest:
            raise SelectorError(f"unable to parse requirement: {rest!r}")
    return reqs


def match_labels(reqs: list[Requirement], obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(req.matches(labels) for req in reqs)


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    op: str  # '=' or '!='
    value: str

    def matches(self, obj: Mapping[str, Any]) -> bool:
        actual = _field_value(obj, self.path)
        return (actual == self.value) if self.op == "=" else (actual != self.value)


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return ""
        node = node.get(part)
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def parse_field_selector(text: str | None) -> list[FieldRequirement]:
    reqs: list[FieldRequirement] = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(==|!=|=)\s*(.*)$", part)
        if not m:
            raise SelectorError(f"invalid field selector: {part!r}")
        op = "!=" if m.group(2) == "!=" else "="
        reqs.append(FieldRequirement(m.group(1), op, m.group(3).strip()))
    return reqs


def match_fields(reqs: list[FieldRequirement], obj: Mapping[str, Any]) -> bool:
    return all(req.matches(obj) for req in reqs)


@dataclass(frozen=True)
class Selector:
    """A combined label + field selector, as parsed from the query parameters."""

    labels: tuple[Requirement, ...] = ()
    fields: tuple[FieldRequirement, ...] = ()

    @classmethod
    def parse(cls, label_selector: str | None, field_selector: str | None) -> Selector:
        return cls(tuple(parse_label_selector(label_selector)), tuple(parse_field_selector(field_selector)))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return match_labels(list(self.labels), obj) and match_fields(list(self.fields), obj)

    def __bool__(self) -> bool:
        return bool(self.labels or self.fields)
