"""
The CEL cost of the CRDs' validation rules, estimated as the apiextensions API server does at install.

A real API server refuses a CRD whose rule is estimated over 10,000,000 (per rule, times the number of
times the rule can run) or whose rules total over 100,000,000; the emulator (tests/emulator/cel_cost.py)
does the same, so every generated CRD is checked here, and the estimator is checked against the costs
the upstream estimator is published to give.
"""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import aiohttp
import pytest
import yaml

from tests.emulator import cel_cost, errors
from tests.emulator.cel_cost import STATIC_ESTIMATED_COST_LIMIT, STATIC_ESTIMATED_CRD_COST_LIMIT
from tests.emulator.server import Emulator

pytest_plugins = ["tests.emulator.fixtures"]  # the k8s_emulator fixture

ROOT = pathlib.Path(__file__).parents[2]
CRD_FILES = sorted((ROOT / "crds").glob("*.yaml"))
RAYJOB_CRD = ROOT / "tests" / "emulator" / "upstream" / "ray.io_rayjobs.yaml"
CRDS_URL = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def load(path: pathlib.Path) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the RayJob CRD is 1.4 MB
    doc: dict[str, Any] = yaml.load(path.read_text(), Loader=loader)
    return doc


def over_limits(crd: dict[str, Any]) -> list[str]:
    """Every rule over the per-rule limit and every schema over the per-CRD total, readably."""
    problems = []
    for schema in cel_cost.crd_costs(crd):
        for expr in schema.expressions:
            if expr.cost > STATIC_ESTIMATED_COST_LIMIT:
                problems.append(
                    f"{expr.path}: {expr.expression!r} costs {expr.raw_cost} x {expr.cardinality} = "
                    f"{expr.cost} > {STATIC_ESTIMATED_COST_LIMIT}"
                )
        if schema.total > STATIC_ESTIMATED_CRD_COST_LIMIT:
            problems.append(f"{schema.path}: rules total {schema.total} > {STATIC_ESTIMATED_CRD_COST_LIMIT}")
    return problems


def test_the_crds_are_found() -> None:
    assert {p.name for p in CRD_FILES} >= {
        "tandem.dev_adaptertrainings.yaml",
        "tandem.dev_evaluations.yaml",
        "tandem.dev_hybridendpoints.yaml",
        "tandem.dev_knowledgebases.yaml",
        "tandem.dev_referencegrants.yaml",
    }


@pytest.mark.parametrize("path", CRD_FILES, ids=lambda p: p.name)
def test_every_rule_of_every_crd_is_within_the_cost_limits(path: pathlib.Path) -> None:
    crd = load(path)
    assert over_limits(crd) == []
    assert cel_cost.crd_cost_causes(crd) == []


@pytest.mark.parametrize("path", CRD_FILES, ids=lambda p: p.name)
def test_every_rule_is_estimated(path: pathlib.Path) -> None:
    """No rule is skipped (a rule the parser could not read would not be estimated at all)."""
    crd = load(path)
    rules = [
        rule
        for version in crd["spec"]["versions"]
        for rule in _rules(version["schema"]["openAPIV3Schema"])
        if rule.get("rule")
    ]
    estimated = [
        e for schema in cel_cost.crd_costs(crd) for e in schema.expressions if e.path.endswith(".rule")
    ]
    assert len(estimated) == len(rules)


def _rules(schema: dict[str, Any]) -> list[dict[str, Any]]:
    found = list(schema.get("x-kubernetes-validations") or [])
    for prop in (schema.get("properties") or {}).values():
        found += _rules(prop)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            found += _rules(schema[key])
    return found


def test_the_hybridendpoint_route_rule_is_bounded_by_routes_and_adapters() -> None:
    """routes x adapters: 128 routes, 64 adapters, names of at most 63 characters."""
    crd = load(ROOT / "crds" / "tandem.dev_hybridendpoints.yaml")
    (schema,) = cel_cost.crd_costs(crd)
    (route_rule,) = [e for e in schema.expressions if "self.routes.all" in e.expression]
    assert (
        route_rule.path == "spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule"
    )
    assert route_rule.cardinality == 1
    assert route_rule.cost == 279_685  # 128 routes x (64 adapters x 34 + 9) + 5
    assert route_rule.cost < STATIC_ESTIMATED_COST_LIMIT / 10


def _unbounded_routes(crd: dict[str, Any]) -> dict[str, Any]:
    """The HybridEndpoint CRD before issue 14: no maxItems on routes, no maxLength on the route's adapter."""
    old = copy.deepcopy(crd)
    spec = old["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    routes = spec["properties"]["routes"]
    del routes["maxItems"]
    del routes["items"]["properties"]["adapter"]["maxLength"]
    spec["x-kubernetes-validations"][0].pop("messageExpression")  # added later (issue 14, item 6)
    return old


def test_the_unbounded_hybridendpoint_crd_is_over_the_limits() -> None:
    """What a real API server said of it: routes sized by the 3 MiB request limit (241,978 items)."""
    old = _unbounded_routes(load(ROOT / "crds" / "tandem.dev_hybridendpoints.yaml"))
    assert over_limits(old) != []
    causes = [str(c) for c in cel_cost.crd_cost_causes(old)]
    rule = "spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule"
    hint = (
        "(try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, "
        "and strings are declared)"
    )
    assert causes == [
        f"{rule}: Forbidden: estimated rule cost exceeds budget by factor of 52.9x {hint}",
        f"{rule}: Forbidden: contributed to estimated rule cost total exceeding cost limit for entire "
        "OpenAPIv3 schema",
        "spec.validation.openAPIV3Schema: Forbidden: x-kubernetes-validations estimated rule cost total for "
        f"entire OpenAPIv3 schema exceeds budget by factor of 5.3x {hint}",
    ]


def test_the_upstream_rayjob_crd_is_within_the_limits() -> None:
    """A CRD real clusters install (KubeRay's) must install here too."""
    assert cel_cost.crd_cost_causes(load(RAYJOB_CRD)) == []


# ---------------------------------------------------------------------------------------------------------
# The estimator agrees with the upstream one (costs published by the apiextensions-apiserver's tests)
# ---------------------------------------------------------------------------------------------------------


def _array(items: dict[str, Any], max_items: int | None = None) -> dict[str, Any]:
    return {"type": "array", "items": items, **({"maxItems": max_items} if max_items is not None else {})}


def _map(values: dict[str, Any], max_props: int | None = None) -> dict[str, Any]:
    limit = {"maxProperties": max_props} if max_props is not None else {}
    return {"type": "object", "additionalProperties": values, **limit}


def _string(max_length: int | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "string", **({"maxLength": max_length} if max_length is not None else {}), **extra}


_OBJECT = {
    "type": "object",
    "required": ["required"],
    "properties": {"required": {"type": "string"}, "optional": {"type": "string"}},
}

UPSTREAM_COSTS = [
    (_array({"type": "number"}), "self.all(x, true)", 4_718_591),
    (_array({"type": "number"}, 10), "self.all(x, true)", 32),
    (_array({"type": "string"}), "self.all(x, true)", 3_145_727),
    (_array({"type": "boolean"}, 5), "self.all(x, true)", 17),
    (_array(_OBJECT), "self.all(x, true)", 555_128),
    (_array({"type": "string", "format": "date-time"}), "self.all(x, true)", 428_963),
    (_array({"x-kubernetes-int-or-string": True}), "self.all(x, true)", 4_718_591),
    (_map({"type": "number"}), "self.all(x, true)", 1_348_169),
    (_map({"type": "number"}, 0), 'self["x"] == 0.0', 2),
    (_array({"type": "number"}, 10), "self.all(x, self.all(y, true))", 352),
    (_array({"type": "number"}, 10), "self.all(x, self.all(y, self.all(z, true)))", 3_552),
    (_array({"type": "string"}), "self[1] == self[1]", 314_577),
    (_array({"type": "number"}), "self.all(x, x == 0.0)", 6_291_454),
    (_string(), "self.contains('test')", 314_574),
    (_string(10), "self.contains('test')", 5),
    (_string(15), "self.startsWith('test')", 2),
    (_string(), 'size(self + "hello") > size("hello")', 314_578),
    (_string(), 'self.matches("x")', 314_574),
    (_string(50), 'self.matches("x")', 22),
    (_string(), '"".matches("(((((((((())))))))))[0-9]")', 7),
    (_string(0), 'self == "x"', 1),
    (_string(), "self.find('[0-9]+') == ''", 629_147),
    (_string(10), "self.lowerAscii() == 'lower!'", 6),
    (_string(enum=["A", "B", "C", "LongValue"]), "self.contains('A')", 2),
    (_map(_string()), "self.all(x, x.contains(self[x]))", 2_752_507),
    (_map(_string(10), 10), "self.all(x, x.contains(self[x]))", 72),
    (_array(_string(10), 10), "self.join(' ') == 'aa bb'", 43),
    (_array(_string(10), 10), "self.isSorted() == true", 52),
    (_array(_map(_OBJECT, 10), 10), 'self.all(x, x["y"].required == "z")', 72),
    (_array(_map(_OBJECT, 10)), 'self.all(x, x["y"].required == "z")', 7_340_027),
    (_array({"type": "string", "format": "duration"}), "self[0].getHours() == 2", 4),
    (_map({"type": "integer"}), "oldSelf.size() == self.size()", 5),
    (
        {"type": "object", "properties": {"str": _string(4), "before": _string(2), "after": _string(4)}},
        "self.str.replace(self.before, self.after) == 'does not matter'",
        12,
    ),
    (
        {"type": "object", "properties": {"str": _string(), "separator": _string()}},
        "self.str.split(self.separator) == []",
        629_160,
    ),
]


@pytest.mark.parametrize(
    ("schema", "rule", "expected"), UPSTREAM_COSTS, ids=[r for _, r, _ in UPSTREAM_COSTS]
)
def test_the_estimate_agrees_with_upstream(schema: dict[str, Any], rule: str, expected: int) -> None:
    decl = cel_cost.decl_type(schema)
    assert decl is not None
    assert cel_cost.estimate(rule, decl) == expected


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("self.all(x, true)", 3 * 10 + 2),  # @not_strictly_false(accu) + accu && p, per item
        ("self.exists(x, true)", 4 * 10 + 2),  # @not_strictly_false(!accu) + accu || p
        ("self.exists_one(x, true)", 2 * 10 + 3),  # p ? accu + 1 : accu, then accu == 1
        ("self.map(x, x)", 13 * 10 + 12),  # accu + [x], on an accumulator [] created once
        ("self.filter(x, true)", 13 * 10 + 12),  # p ? accu + [x] : accu
        ("has(self[0].a) && self[0].a.size() > 0", 2 + 5),  # has() is free in Kubernetes
        ("'x' in self.map(i, i.a)", 10 + 152),  # in a list: its size
    ],
)
def test_the_comprehension_macros(rule: str, expected: int) -> None:
    schema = _array({"type": "object", "properties": {"a": _string(5)}}, 10)
    decl = cel_cost.decl_type(schema)
    assert decl is not None
    assert cel_cost.estimate(rule, decl) == expected


# ---------------------------------------------------------------------------------------------------------
# Cardinality, totals and messages
# ---------------------------------------------------------------------------------------------------------


def _crd(schema: dict[str, Any], versions: tuple[str, ...] = ("v1",)) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.dev"},
        "spec": {
            "group": "example.dev",
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "listKind": "GadgetList"},
            "versions": [
                {
                    "name": v,
                    "served": True,
                    "storage": i == 0,
                    "schema": {"openAPIV3Schema": copy.deepcopy(schema)},
                }
                for i, v in enumerate(versions)
            ],
        },
    }


def _with_rule(schema: dict[str, Any], rule: str) -> dict[str, Any]:
    return {**schema, "x-kubernetes-validations": [{"rule": rule, "message": "m"}]}


def test_cardinality_is_the_product_of_the_bounds_above() -> None:
    names = _array(_with_rule(_string(63), "self.startsWith('a')"), 5)
    lists = _array({"type": "object", "properties": {"names": names}}, 4)
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {"lists": lists}}}}
    (schema_cost,) = cel_cost.crd_costs(_crd(schema))
    (expr,) = schema_cost.expressions
    assert expr.path == (
        "spec.validation.openAPIV3Schema.properties[spec].properties[lists].items.properties[names].items"
        ".x-kubernetes-validations[0].rule"
    )
    assert (expr.raw_cost, expr.cardinality, expr.cost) == (2, 20, 40)


def test_under_an_unbounded_list_the_rule_runs_as_often_as_its_node_fits_in_a_request() -> None:
    item = _with_rule({"type": "object", "required": ["name"], "properties": {"name": _string(8)}}, "true")
    schema = {"type": "object", "properties": {"items": _array(item)}}
    (schema_cost,) = cel_cost.crd_costs(_crd(schema))
    (expr,) = schema_cost.expressions
    # {"name":""}: 2 + len("name") + 2 + 4 = 12 bytes, plus a comma
    assert expr.cardinality == 3 * 1024 * 1024 // 13
    assert expr.raw_cost == 0 and expr.cost == 0


def test_per_version_schemas_are_estimated_separately() -> None:
    crd = _crd({"type": "object"}, ("v1", "v2"))
    crd["spec"]["versions"][1]["schema"]["openAPIV3Schema"] = _with_rule(
        {"type": "object", "properties": {"s": _string()}}, "self.s.contains(self.s)"
    )
    causes = [str(c) for c in cel_cost.crd_cost_causes(crd)]
    assert causes[0].startswith(
        "spec.versions[1].schema.openAPIV3Schema.x-kubernetes-validations[0].rule: Forbidden: estimated rule "
        "cost exceeds budget by factor of more than 100x"
    )
    assert causes[-1].startswith(
        "spec.versions[1].schema.openAPIV3Schema: Forbidden: x-kubernetes-validations"
    )


def test_the_total_names_the_most_expensive_rules() -> None:
    # each rule: 28 x 314,577 + 2 = 8,808,158 (under the per-rule limit); twelve of them: over the total
    props = {
        f"f{i}": _with_rule(_array(_string(), 28), "self.all(x, x.contains('0123456789'))") for i in range(12)
    }
    crd = _crd({"type": "object", "properties": props})
    (schema_cost,) = cel_cost.crd_costs(crd)
    assert all(not e.over_limit for e in schema_cost.expressions) and schema_cost.over_limit
    causes = [str(c) for c in cel_cost.crd_cost_causes(crd)]
    assert len(causes) == 5  # the four most expensive, and the schema
    assert all("contributed to estimated rule cost total" in c for c in causes[:4])
    assert causes[4].startswith(
        "spec.validation.openAPIV3Schema: Forbidden: x-kubernetes-validations estimated rule cost total for "
        "entire OpenAPIv3 schema exceeds budget by factor of"
    )


def test_message_expressions_are_limited_too() -> None:
    concatenation = " + ".join(f"self[{i}]" for i in range(8))  # of unbounded strings
    field = {
        **_array(_string()),
        "x-kubernetes-validations": [{"rule": "true", "messageExpression": concatenation}],
    }
    schema = {"type": "object", "properties": {"f": field}}
    (cause,) = cel_cost.crd_cost_causes(_crd(schema))
    assert (
        cause.field
        == "spec.validation.openAPIV3Schema.properties[f].x-kubernetes-validations[0].messageExpression"
    )
    assert cause.message.startswith("Forbidden: estimated messageExpression cost exceeds budget by factor of")


@pytest.mark.parametrize(
    ("cost", "factor"),
    [
        (10_000_001, "1.000000x"),
        (14_990_000, "1.499000x"),
        (52_872_193, "5.3x"),
        (2_000_000_000, "more than 100x"),
    ],
)
def test_the_factor_is_worded_as_upstream(cost: int, factor: str) -> None:
    message = cel_cost.cost_error_message("estimated rule cost", cost, STATIC_ESTIMATED_COST_LIMIT)
    assert message.startswith(f"estimated rule cost exceeds budget by factor of {factor} (try simplifying")


def test_an_unchanged_schema_is_not_refused_for_a_rule_on_update() -> None:
    """As upstream: the per-rule limit applies only to changed schemas; the total always applies."""
    # 314,573 x 40 + 4: over the per-rule limit, under the total
    schema = {"type": "object", "properties": {"s": _string(), "t": _string(100)}}
    over = _crd(_with_rule(schema, "self.s.contains(self.t)"))
    assert cel_cost.crd_cost_causes(over) != []
    assert cel_cost.crd_cost_causes(over, old=copy.deepcopy(over)) == []


# ---------------------------------------------------------------------------------------------------------
# The emulator refuses such CRDs at install
# ---------------------------------------------------------------------------------------------------------


def test_the_emulator_refuses_a_crd_over_budget(k8s_emulator: Emulator) -> None:
    old = _unbounded_routes(load(ROOT / "crds" / "tandem.dev_hybridendpoints.yaml"))
    with pytest.raises(errors.ApiError) as refused:
        k8s_emulator.install_crds(old)
    assert refused.value.code == 422
    assert refused.value.message.startswith(
        'CustomResourceDefinition.apiextensions.k8s.io "hybridendpoints.tandem.dev" is invalid: ['
        "spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Forbidden: "
        "estimated rule cost exceeds budget by factor of 52.9x (try simplifying the rule, or adding "
        "maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
    )
    crd_type = k8s_emulator.resource_type("customresourcedefinitions")
    assert k8s_emulator.store.find(crd_type, None, "hybridendpoints.tandem.dev") is None


def test_the_emulator_installs_the_crds_under_budget(k8s_emulator: Emulator) -> None:
    installed = k8s_emulator.install_crds(ROOT / "crds", RAYJOB_CRD)
    assert {rt.plural for rt in installed} >= {"hybridendpoints", "knowledgebases", "evaluations", "rayjobs"}


async def test_the_api_refuses_a_crd_over_budget_and_an_update_over_budget(k8s_emulator: Emulator) -> None:
    crd = _crd(_with_rule({"type": "object", "properties": {"s": _string(100)}}, "self.s.contains('x')"))
    async with aiohttp.ClientSession() as session:
        async with session.post(k8s_emulator.url + CRDS_URL, json=crd) as resp:
            assert resp.status == 201  # 42 x 1: within the budget
            created = await resp.json()
        over = copy.deepcopy(created)
        schema = over["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        del schema["properties"]["s"]["maxLength"]
        schema["x-kubernetes-validations"][0]["rule"] = "self.s.contains(self.s)"
        async with session.put(f"{k8s_emulator.url}{CRDS_URL}/gadgets.example.dev", json=over) as resp:
            assert resp.status == 422
            status = await resp.json()
    assert status["reason"] == "Invalid"
    fields = [c["field"] for c in status["details"]["causes"]]
    assert fields == [
        "spec.validation.openAPIV3Schema.x-kubernetes-validations[0].rule",
        "spec.validation.openAPIV3Schema.x-kubernetes-validations[0].rule",
        "spec.validation.openAPIV3Schema",
    ]
    assert {c["reason"] for c in status["details"]["causes"]} == {"FieldValueForbidden"}
