"""Labels and owner references that every child object carries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tandem.core.digests import digest

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "tandem"
KIND_LABEL = "tandem.dev/kind"
NAME_LABEL = "tandem.dev/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
# Annotation a user sets (any new value) to ask for a re-index or retrain now.
RECONCILE_TOKEN = "tandem.dev/run"
FIELD_MANAGER = "tandem-operator"


@dataclass(frozen=True)
class Owner:
    """The Tandem resource a child belongs to."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str

    @classmethod
    def from_body(cls, body: Any) -> Owner:
        meta = body["metadata"]
        return cls(body["apiVersion"], body["kind"], meta["namespace"], meta["name"], meta["uid"])

    def selector(self) -> dict[str, str]:
        return {MANAGED_BY: MANAGER, KIND_LABEL: self.kind.lower(), NAME_LABEL: self.name}

    def labels(self, component: str) -> dict[str, str]:
        return {**self.selector(), COMPONENT_LABEL: component}

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def metadata(self, name: str, component: str) -> dict[str, Any]:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": self.labels(component),
            "ownerReferences": [self.reference()],
        }


def child_name(owner: str, suffix: str) -> str:
    """`<owner>-<suffix>`, cut to the 63 characters a label value and most names allow."""
    name = f"{owner}-{suffix}"
    if len(name) <= 63:
        return name
    return f"{owner[: 63 - len(suffix) - 12]}-{digest(owner, 10)}-{suffix}"
