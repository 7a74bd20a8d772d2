"""ReferenceGrant: lets resources in other namespaces refer to Tandem objects in this one.

A namespace is a tenant boundary. A HybridEndpoint in `team-a` may use the KnowledgeBase `handbook` in
`shared-docs` only if `shared-docs` holds a ReferenceGrant naming `team-a` (as Gateway API does).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import DNS_LABEL, DNS_SUBDOMAIN, TandemModel

ReferringKind = Literal["HybridEndpoint", "AdapterTraining"]
ReferableKind = Literal["KnowledgeBase", "AdapterTraining", "ServingPool"]


class GrantFrom(TandemModel):
    """Who may refer: resources of a kind in a namespace."""

    kind: ReferringKind = Field(description="Kind of the referring resource.")
    namespace: str = Field(
        min_length=1, max_length=63, pattern=DNS_LABEL, description="Namespace of the referring resource."
    )


class GrantTo(TandemModel):
    """What may be referred to in the grant's namespace."""

    kind: ReferableKind = Field(description="Kind of the referenced object.")
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="A single object by name; all of the kind if omitted.",
    )


class ReferenceGrantSpec(TandemModel):
    """Grants references from `from` to `to` (which lies in this grant's namespace)."""

    from_: list[GrantFrom] = Field(
        alias="from",
        min_length=1,
        max_length=16,
        description="Allowed referrers, each kind and namespace once.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["kind", "namespace"],
        },
    )
    to: list[GrantTo] = Field(min_length=1, max_length=16, description="Objects they may refer to.")
