"""KEDA's own ScaledObject CRD in the emulator (tests/emulator/keda.py): it takes what the operator plans
without pruning anything, and refuses what KEDA's schema refuses, naming the field."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tandem.api.admission import schema
from tests.emulator.keda import keda_crd
from tests.emulator.server import Emulator
from tests.unit.test_pool_scaling import scaled_object


def open_api(crd: dict[str, Any] | None = None) -> dict[str, Any]:
    crd = crd or keda_crd()
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def nodes(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for name, sub in (node.get("properties") or {}).items():
        out += nodes(sub, f"{path}.{name}")
    for key, suffix in (("items", "[*]"), ("additionalProperties", "{*}")):
        if isinstance(node.get(key), dict):
            out += nodes(node[key], f"{path}{suffix}")
    return out


def test_the_crd_is_a_valid_crd_for_the_api_server() -> None:
    crd = keda_crd()
    kubernetes_validate.validate(crd, "1.32", strict=True)
    assert crd["metadata"]["name"] == "scaledobjects.keda.sh"
    spec_ = crd["spec"]
    assert (spec_["group"], spec_["scope"], spec_["names"]["kind"], spec_["names"]["plural"]) == (
        "keda.sh",
        "Namespaced",
        "ScaledObject",
        "scaledobjects",
    )
    [version] = spec_["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_the_schema_keeps_kedas_required_fields_and_maps() -> None:
    root = open_api()
    spec_ = root["properties"]["spec"]
    assert root["required"] == ["spec"]
    assert sorted(spec_["required"]) == ["scaleTargetRef", "triggers"]
    assert spec_["properties"]["scaleTargetRef"]["required"] == ["name"]
    trigger = spec_["properties"]["triggers"]["items"]
    assert sorted(trigger["required"]) == ["metadata", "type"]
    assert trigger["properties"]["metadata"]["additionalProperties"] == {"type": "string"}
    assert spec_["properties"]["minReplicaCount"]["format"] == "int32"
    assert "health" in root["properties"]["status"]["properties"]


def test_the_operators_scaled_object_passes_with_nothing_pruned() -> None:
    root = open_api()
    obj = scaled_object()
    assert schema.unknown_fields(root, obj) == []
    assert schema.validate(root, schema.prepare(root, obj)) == []
    assert obj == scaled_object()  # no default added, nothing pruned


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        (lambda s: s.pop("scaleTargetRef"), "spec.scaleTargetRef", "Required value"),
        (lambda s: s.pop("triggers"), "spec.triggers", "Required value"),
        (lambda s: s["triggers"][0].pop("type"), "spec.triggers[0].type", "Required value"),
        (lambda s: s["scaleTargetRef"].pop("name"), "spec.scaleTargetRef.name", "Required value"),
        (lambda s: s.update(minReplicaCount="two"), "spec.minReplicaCount", "must be of type integer"),
        (
            lambda s: s["triggers"][0]["metadata"].update(threshold=4),
            "spec.triggers[0].metadata[threshold]",
            "must be of type string",
        ),
    ],
    ids=[
        "no-target",
        "no-triggers",
        "trigger-without-type",
        "target-without-name",
        "string-count",
        "int-map",
    ],
)
def test_the_schema_refuses_what_kedas_refuses(change: Any, field: str, says: str) -> None:
    obj = scaled_object()
    change(obj["spec"])
    causes = schema.validate(open_api(), obj)
    # As the API server does, a schema error also says the CRD's CEL rules were not checked ("<nil>").
    assert [c.field for c in causes if c.field != "<nil>"] == [field], causes
    assert says in causes[0].message


def test_kedas_cel_rule_refuses_more_min_than_max_replicas() -> None:
    obj = scaled_object()
    obj["spec"].update(minReplicaCount=5, maxReplicaCount=2)
    causes = schema.validate(open_api(), obj)
    assert [c.field for c in causes] == ["spec"], causes
    assert "minReplicaCount must be less than or equal to maxReplicaCount" in causes[0].message


def test_unknown_fields_are_pruned() -> None:
    obj = scaled_object()
    obj["spec"]["scaleTargetRef"]["replicas"] = 3
    obj["spec"]["triggers"][0]["threshold"] = "4"  # belongs in the trigger's metadata
    assert schema.unknown_fields(open_api(), obj) == [
        "spec.scaleTargetRef.replicas",
        "spec.triggers[0].threshold",
    ]


def test_the_emulator_serves_it_and_admits_the_planned_object() -> None:
    emulator = Emulator()
    [served] = emulator.install_crds(keda_crd())
    assert (served.api_version, served.kind, served.status_subresource) == (
        "keda.sh/v1alpha1",
        "ScaledObject",
        True,
    )
    stored = emulator.create(scaled_object())
    assert stored["spec"] == scaled_object()["spec"]
    assert emulator.get("so", "serving", stored["metadata"]["name"]) is not None


def test_each_call_gives_a_new_dict() -> None:
    first = keda_crd()
    open_api(first)["properties"]["spec"]["required"].append("x")
    first["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"].clear()
    assert sorted(open_api()["properties"]["spec"]["required"]) == ["scaleTargetRef", "triggers"]
