"""The CRDs in crds/ are exactly what the API types generate, and they are valid, structural CRDs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tandem.api.crd import crd_for, file_name, render
from tandem.api.kinds import ALL_KINDS, RECONCILED_KINDS, Kind

CRDS = Path(__file__).resolve().parents[2] / "crds"


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.kind)
def test_committed_crd_matches_the_types(kind: Kind) -> None:
    committed = (CRDS / file_name(kind)).read_text()
    assert committed == render(kind), f"crds/{file_name(kind)} is stale: run `make crds`"


def test_no_stray_files_in_crds() -> None:
    assert sorted(p.name for p in CRDS.glob("*.yaml")) == sorted(file_name(k) for k in ALL_KINDS)


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.kind)
def test_crd_is_valid_for_the_api_server(kind: Kind) -> None:
    kubernetes_validate.validate(yaml.safe_load((CRDS / file_name(kind)).read_text()), "1.32", strict=True)


def _walk(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for name, sub in (schema.get("properties") or {}).items():
        out += _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        out += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        out += _walk(schema["additionalProperties"], f"{path}{{}}")
    return out


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.kind)
def test_schema_is_structural_and_explained(kind: Kind) -> None:
    schema = crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema["properties"]["spec"], "spec"):
        # Structural: every node has a type and no unions; explainable: every field has a description.
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        for banned in ("anyOf", "oneOf", "allOf", "$ref", "title"):
            assert banned not in node, f"{path} carries {banned}"
        if path.endswith(("[]", "{}")) and node["type"] != "object":
            continue  # a list's or map's scalar values are explained by the field that holds them
        assert node.get("description"), f"{path} has no description (kubectl explain would be empty)"


@pytest.mark.parametrize("kind", RECONCILED_KINDS, ids=lambda k: k.kind)
def test_reconciled_kinds_have_status_subresource_columns_and_names(kind: Kind) -> None:
    crd = crd_for(kind)
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[0] == "Ready" and "Age" in columns and "Phase" in columns
    names = crd["spec"]["names"]
    assert names["categories"] == ["tandem"] and names["shortNames"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"conditions", "observedGeneration"} <= set(status)


def test_defaults_and_cel_rules_reach_the_crd() -> None:
    kb = crd_for(ALL_KINDS[0])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    chunking = kb["properties"]["chunking"]
    assert chunking["default"] == {}
    assert chunking["properties"]["size"]["default"] == 200
    [overlap] = chunking["x-kubernetes-validations"]
    assert overlap["fieldPath"] == ".overlap" and overlap["message"] == "overlap must be smaller than size"
    # guarded: not checked while size or overlap is outside its own bounds (one mistake, one message)
    assert overlap["rule"] == (
        "!((!has(self.size) || self.size >= 16 && self.size <= 8192) && "
        "(!has(self.overlap) || self.overlap >= 0 && self.overlap <= 4096)) || (self.overlap < self.size)"
    )
    assert overlap["messageExpression"] == (  # says the values
        "'overlap (%d) must be smaller than size (%d)'.format([self.overlap, self.size])"
    )
    assert kb["properties"]["index"]["properties"]["type"]["enum"][0] == "HNSW"


# The short names of the built-in kinds of Kubernetes 1.32 (each registry's ShortNames() in
# pkg/registry/*/*/storage, plus apiextensions' crd/crds). A CRD may not reuse one: `kubectl get <name>`
# would warn that the short name is ambiguous and list only one of the two kinds.
BUILTIN_SHORT_NAMES = frozenset(
    {
        "cm", "cs", "ep", "ev", "limits", "no", "ns", "po", "pv", "pvc", "quota", "rc", "sa", "svc",  # core
        "deploy", "ds", "rs", "sts",  # apps
        "hpa", "cj",  # autoscaling, batch
        "csr", "ing", "netpol", "pdb", "psp", "pc", "sc", "vac",  # certificates ... storage
        "crd", "crds",  # apiextensions
    }
)  # fmt: skip


def test_short_names_do_not_clash_with_built_in_kinds() -> None:
    ours = [(k.kind, s) for k in ALL_KINDS for s in k.short_names]
    clashes = [f"{kind}: {short}" for kind, short in ours if short in BUILTIN_SHORT_NAMES]
    assert not clashes, f"short names taken by built-in kinds: {clashes}"
    assert len({s for _, s in ours}) == len(ours), "two Tandem kinds share a short name"
    assert ("Evaluation", "teval") in ours


def _fields(kind: Kind) -> list[tuple[str, dict[str, Any]]]:
    version = crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    return [(p, n) for part in ("spec", "status") if part in version for p, n in _walk(version[part], part)]


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.kind)
def test_explain_says_every_default_and_bound(kind: Kind) -> None:
    """`kubectl explain` shows a field's description, not its schema: every default and every bound
    (minimum/maximum, lengths, list sizes, a list's bounds on its items) must be said in a description."""
    import re

    from tandem.api.crd import limits

    unsaid = []
    for path, node in _fields(kind):
        description = node.get("description")
        if description is None:
            continue  # a list's scalar items: said on the list (checked there through limits())
        if "default" in node and node["default"] != {} and not re.search(r"default", description, re.I):
            unsaid.append(f"{path}: default {node['default']!r}")
        for _, values in limits(node):
            for value in values:
                shown = str(int(value) if isinstance(value, float) and value.is_integer() else value)
                if not re.search(rf"(?<![\w.]){re.escape(shown)}(?!\w|\.\d)", description):
                    unsaid.append(f"{path}: bound {shown}")
    assert not unsaid, f"kubectl explain would not show: {unsaid}"


def test_explain_phrases() -> None:
    kb = crd_for(ALL_KINDS[0])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    chunking = kb["properties"]["chunking"]
    assert chunking["properties"]["overlap"]["description"].endswith("Default: 32. Range: 0-4096.")
    sources = kb["properties"]["sources"]
    assert sources["description"].endswith("Items: 1-64.")
    keys = sources["items"]["properties"]["configMap"]["properties"]["keys"]
    assert keys["description"].endswith("Each item's length: at most 253.")  # the items' own bound
    assert "default" not in kb["properties"]["chunking"]["description"].lower()  # {}: nothing to say


def test_hybrid_endpoint_scales_and_shows_ready_as_a_deployment_does() -> None:
    from tandem.api.kinds import HYBRID_ENDPOINT

    version = crd_for(HYBRID_ENDPOINT)["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.serving.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    # every path the scale subresource names is a field of the schema, of the type the API server requires
    assert spec["serving"]["properties"]["replicas"]["type"] == "integer"
    assert status["replicas"]["type"] == "integer" and status["selector"]["type"] == "string"
    [ready] = [c for c in version["additionalPrinterColumns"] if c["name"] == "Ready"]
    assert ready["jsonPath"] == ".status.ready" and status["ready"]["type"] == "string"
    others = [k for k in ALL_KINDS if k is not HYBRID_ENDPOINT]
    assert all("scale" not in (crd_for(k)["spec"]["versions"][0].get("subresources") or {}) for k in others)
