"""
Manifests checked as the API server would admit them: what `tandem validate` runs.

Each Tandem object in a manifest goes through the same admission as a write to the API server
(:func:`tandem.api.admission.admit`, the code the tests' API emulator runs), against the CRDs generated in
memory from the API types (:mod:`tandem.api.crd`), with kubectl's defaults: strict field validation and
the namespace ``default`` when the manifest names none. As with kubectl, a kind and apiVersion that no CRD
serves is refused before anything is sent (``no matches for kind``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tandem.api.admission import CustomResource, Rejected, admit, resources_from_crd
from tandem.api.admission.causes import Cause

GROUP_SUFFIX = "tandem.dev"


@functools.cache
def tandem_resources() -> dict[tuple[str, str], CustomResource]:
    """(apiVersion, kind) -> the served resource, from the CRDs generated from the API types."""
    from tandem.api.crd import crd_for
    from tandem.api.kinds import ALL_KINDS

    return {(rt.api_version, rt.kind): rt for kind in ALL_KINDS for rt in resources_from_crd(crd_for(kind))}


@dataclass(frozen=True)
class Verdict:
    """The API server's answer to one manifest."""

    kind: str
    namespace: str
    name: str
    admitted: bool
    message: str = ""  # the Status message when refused
    causes: list[Cause] = field(default_factory=list)
    code: int = 0  # 400 (decoding), 422 (validation); 0 when refused before sending (no such kind)

    @property
    def label(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    def lines(self) -> list[str]:
        """Plain text, one cause a line (the API server's wording)."""
        if self.admitted:
            return [f"valid    {self.label}"]
        if self.code != 422 or not self.causes:
            detail = str(self.causes[0]) if self.causes and self.code == 0 else self.message
            return [f"invalid  {self.label}: {detail}"]
        head = self.message.split(" is invalid: ", 1)[0] + " is invalid:"
        return [f"invalid  {self.label}: {head}"] + [f"  {cause}" for cause in self.causes]


def is_tandem(doc: Mapping[str, Any]) -> bool:
    """A manifest meant for Tandem: of group tandem.dev, or of a Tandem kind under any apiVersion."""
    api_version = str(doc.get("apiVersion") or "")
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    kinds = {kind for _, kind in tandem_resources()}
    return group == GROUP_SUFFIX or group.endswith("." + GROUP_SUFFIX) or doc.get("kind") in kinds


def review(doc: Mapping[str, Any], namespace: str = "default") -> Verdict:
    """Admit one manifest as a create in `namespace` (unless it names its own) would be admitted."""
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    kind = str(doc.get("kind") or "")
    ns = str(meta.get("namespace") or namespace)
    name = str(meta.get("name") or meta.get("generateName") or "")
    api_version = str(doc.get("apiVersion") or "")
    rt = tandem_resources().get((api_version, kind))
    if rt is None:
        served = sorted(v for v, k in tandem_resources() if k == kind)
        hint = f"; {kind} is served as {', '.join(served)}" if served else ""
        message = f'no matches for kind "{kind}" in version "{api_version}"{hint}'
        return Verdict(kind, ns, name, False, message, [Cause("apiVersion", message)])
    body = dict(doc)
    body["metadata"] = {**meta, "namespace": ns}
    try:
        admit(rt, body, field_validation="Strict")
    except Rejected as e:
        return Verdict(kind, ns, name, False, e.message, list(e.causes), e.code)
    return Verdict(kind, ns, name, True)
