"""
The registry of served resource types: built-in kinds and installed CRDs (all served versions).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    """One served group/version/plural (the unit of discovery and of URL routing)."""

    group: str  # '' for the core group
    version: str
    plural: str
    kind: str
    singular: str = ""
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = DEFAULT_VERBS
    status_subresource: bool = False
    scale_subresource: Mapping[str, Any] | None = None
    schema: Mapping[str, Any] | None = None  # openAPIV3Schema, for CRDs only
    printer_columns: tuple[Mapping[str, Any], ...] = ()
    crd_name: str | None = None  # e.g. "knowledgebases.tandem.dev" for CRD-defined types
    storage: bool = True  # for CRDs: is it the storage version (only informative)
    list_kind_override: str | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def list_kind(self) -> str:
        return self.list_kind_override or f"{self.kind}List"

    @property
    def storage_key(self) -> tuple[str, str]:
        """Objects are shared by all versions of one group/plural (no conversion, like `None` strategy)."""
        return (self.group, self.plural)

    @property
    def qualified_name(self) -> str:
        """e.g. "knowledgebases.tandem.dev" or "configmaps" — as used in Conflict/NotFound messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """e.g. "KnowledgeBase.tandem.dev" or "ConfigMap" — as used in Invalid messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def is_custom(self) -> bool:
        return self.crd_name is not None

    @property
    def subresources(self) -> tuple[str, ...]:
        subs: list[str] = []
        if self.status_subresource:
            subs.append("status")
        if self.scale_subresource is not None:
            subs.append("scale")
        return tuple(subs)

    def url(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [prefix]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
        if subresource:
            parts.append(subresource)
        return "/".join(parts)


def resource_types_from_crd(crd: Mapping[str, Any]) -> list[ResourceType]:
    """Build the resource types of all served versions of an apiextensions.k8s.io/v1 CRD dict."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec["group"]
    plural = names["plural"]
    kind = names["kind"]
    result: list[ResourceType] = []
    crd_name = (crd.get("metadata") or {}).get("name") or f"{plural}.{group}"
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or spec.get("subresources") or {}
        schema = (version.get("schema") or spec.get("validation") or {}).get("openAPIV3Schema")
        columns = version.get("additionalPrinterColumns") or spec.get("additionalPrinterColumns") or []
        result.append(
            ResourceType(
                group=group,
                version=version["name"],
                plural=plural,
                kind=kind,
                singular=names.get("singular") or kind.lower(),
                namespaced=(spec.get("scope") or "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status_subresource="status" in subresources,
                scale_subresource=subresources.get("scale"),
                schema=copy.deepcopy(schema) if schema else None,
                printer_columns=tuple(columns),
                crd_name=crd_name,
                storage=bool(version.get("storage", True)),
                list_kind_override=names.get("listKind"),
            )
        )
    return result


@dataclass
class Registry:
    """All served resource types, indexed by (group, version, plural)."""

    _types: dict[tuple[str, str, str], ResourceType] = field(default_factory=dict)
    _crds: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)

    def add(self, rtype: ResourceType) -> None:
        self._types[(rtype.group, rtype.version, rtype.plural)] = rtype

    def add_many(self, rtypes: Iterable[ResourceType]) -> None:
        for rtype in rtypes:
            self.add(rtype)

    def add_crd(self, crd: Mapping[str, Any]) -> list[ResourceType]:
        rtypes = resource_types_from_crd(crd)
        name = (crd.get("metadata") or {}).get("name") or ""
        self.remove_crd(name)
        self.add_many(rtypes)
        self._crds[name] = [(r.group, r.version, r.plural) for r in rtypes]
        return rtypes

    def remove_crd(self, name: str) -> None:
        for key in self._crds.pop(name, []):
            self._types.pop(key, None)

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def find(self, spec: str) -> ResourceType:
        """
        Find by a loose spec: "configmaps", "v1/configmaps", "tandem.dev/v1/knowledgebases",
        "knowledgebases.tandem.dev", "kb" (short name), "KnowledgeBase" (kind). Raises KeyError.
        """
        parts = spec.split("/")
        if len(parts) == 3:
            found = self.get(parts[0], parts[1], parts[2])
            if found:
                return found
        elif len(parts) == 2:
            group, version = ("", parts[0]) if "." not in parts[0] else (parts[0], "")
            for rt in self._types.values():
                if rt.plural == parts[1] and rt.group == group and (not version or rt.version == version):
                    return rt
        else:
            lowered = spec.lower()
            candidates = [
                rt
                for rt in self._types.values()
                if lowered in (rt.plural, rt.singular, rt.kind.lower(), rt.qualified_name)
                or lowered in rt.short_names
            ]
            candidates.sort(key=lambda rt: (rt.group != "", not rt.storage))
            if candidates:
                return candidates[0]
        raise KeyError(spec)

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        for rt in self._types.values():
            if rt.api_version == api_version and rt.kind == kind:
                return rt
        return None

    def versions_of(self, group: str, plural: str) -> list[ResourceType]:
        return [rt for rt in self._types.values() if rt.group == group and rt.plural == plural]

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(list(self._types.values()))

    def groups(self) -> dict[str, list[str]]:
        """Group name -> versions (ordered: preferred first; the core group excluded)."""
        result: dict[str, list[str]] = {}
        for rt in self._types.values():
            if rt.group:
                versions = result.setdefault(rt.group, [])
                if rt.version not in versions:
                    versions.append(rt.version)
        for group, versions in result.items():
            versions.sort(key=lambda v: (not self._is_storage(group, v), _version_priority(v)))
        return result

    def _is_storage(self, group: str, version: str) -> bool:
        return any(rt.storage for rt in self._types.values() if rt.group == group and rt.version == version)


def _version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes version ordering: GA > beta > alpha, higher numbers first."""
    import re

    m = re.match(r"^v(\d+)(?:(alpha|beta)(\d+))?$", version)
    if not m:
        return (3, 0, 0)
    major = int(m.group(1))
    stage = {"alpha": 2, "beta": 1, None: 0}[m.group(2)]
    minor = int(m.group(3) or 0)
    return (stage, -major, -minor)
