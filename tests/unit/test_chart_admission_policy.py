"""The chart's optional admission policy (issue 15, item 8: say who may do what).

Rendered by the real helm with the policy on, each ValidatingAdmissionPolicy and binding validated against
the upstream admissionregistration.k8s.io/v1 schema (kubernetes-validate, strict), and every CEL
expression of it evaluated the way the API server runs a policy (match constraints, match conditions,
variables in order, then validations) by the project's CEL evaluator (tandem.api.admission.cel, celpy with
the Kubernetes string, list, regex and URL functions), against hostile manifests the policy must refuse
and the examples and ordinary manifests it must admit.

What this does not cover, and a real API server does: the type checking of every expression against each
matched kind's schema (the API server reports mismatches in the policy's status.typeChecking, the reason
there is one policy per kind); CEL cost limits per expression and per evaluation; RE2 versus Python's
`re` (the host patterns avoid constructs where they differ, except that Python's `$` also matches before a
final newline, which only makes this evaluation looser than the API server); the bindings' namespace
selector; the API server's own defaulting of the policy (e.g. matchPolicy, namespaceSelector). The API
emulator runs no admission policies at all (tests/emulator/README.md).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

from tandem.api.admission.cel import compile_rule
from tandem.api.crd import file_name
from tandem.api.kinds import ALL_KINDS

from .test_chart import HELM, KUBE_VERSION, helm, objects, render

pytestmark = pytest.mark.skipif(HELM is None, reason="helm is not installed: run `make tools`")

ROOT = Path(__file__).resolve().parents[2]
PLURALS = {k.kind: k.plural for k in ALL_KINDS}
ON = (
    "--set",
    "admissionPolicy.enabled=true",
    "--set",
    "admissionPolicy.allowedRegistries={ghcr.io/tandem-dev,docker.io/vllm/vllm-openai}",
    "--set",
    "admissionPolicy.allowedSecretHosts={docs.example.com,*.corp.example.com}",
    "--set",
    "admissionPolicy.allowedExtraArgs={--max-num-seqs,--enforce-eager,--served-model-name}",
)
Doc = dict[str, Any]


def policies(*values: str) -> list[Doc]:
    return objects(render(*values), "ValidatingAdmissionPolicy")


def run(expression: str, activation: dict[str, Any]) -> Any:
    result = compile_rule(expression).evaluate(activation)
    if isinstance(result, CELEvalError | Exception):
        raise AssertionError(f"{expression!r} failed: {result}")
    return result


def refusals(policy_docs: list[Doc], obj: Doc, old: Doc | None = None) -> list[str]:
    """The messages of every validation `obj` fails, as the API server evaluates the policies."""
    operation = "CREATE" if old is None else "UPDATE"
    activation: dict[str, Any] = {
        "object": json_to_cel(obj),
        "oldObject": json_to_cel(old),
        "request": json_to_cel(
            {"operation": operation, "kind": {"group": "tandem.dev", "kind": obj["kind"]}}
        ),
    }
    messages: list[str] = []
    for policy in policy_docs:
        spec = policy["spec"]
        if not any(
            "tandem.dev" in rule["apiGroups"]
            and PLURALS[obj["kind"]] in rule["resources"]
            and operation in rule["operations"]
            for rule in spec["matchConstraints"]["resourceRules"]
        ):
            continue
        if not all(run(c["expression"], activation) for c in spec.get("matchConditions", [])):
            continue
        variables: dict[Any, Any] = {}
        for variable in spec.get("variables", []):
            bound = {**activation, "variables": celtypes.MapType(variables)}
            variables[celtypes.StringType(variable["name"])] = run(variable["expression"], bound)
        bound = {**activation, "variables": celtypes.MapType(variables)}
        for validation in spec["validations"]:
            passed = run(validation["expression"], bound)
            assert isinstance(passed, celtypes.BoolType), validation["expression"]
            if not passed:
                if "messageExpression" in validation:
                    messages.append(str(run(validation["messageExpression"], bound)))
                else:
                    messages.append(validation["message"])
    return messages


# -- rendering ---------------------------------------------------------------------------------------------


def test_off_by_default() -> None:
    docs = render()
    assert not objects(docs, "ValidatingAdmissionPolicy")
    assert not objects(docs, "ValidatingAdmissionPolicyBinding")


def test_policies_and_bindings_are_valid_upstream_objects() -> None:
    docs = render(*ON)
    found = objects(docs, "ValidatingAdmissionPolicy") + objects(docs, "ValidatingAdmissionPolicyBinding")
    assert len(found) == 10  # a policy and a binding per kind with an image or a Secret-bearing field
    for doc in found:
        assert doc["apiVersion"] == "admissionregistration.k8s.io/v1"
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    for expression in (
        e
        for p in objects(docs, "ValidatingAdmissionPolicy")
        for e in [c["expression"] for c in p["spec"]["matchConditions"]]
        + [v["expression"] for v in p["spec"]["variables"]]
        + [v["expression"] for v in p["spec"]["validations"]]
        + [v["messageExpression"] for v in p["spec"]["validations"] if "messageExpression" in v]
    ):
        compile_rule(expression)  # parses as CEL


def test_each_binding_names_its_policy_with_the_chosen_actions() -> None:
    docs = render(*ON, "--set", "admissionPolicy.validationActions={Warn,Audit}")
    names = {p["metadata"]["name"] for p in objects(docs, "ValidatingAdmissionPolicy")}
    bindings = objects(docs, "ValidatingAdmissionPolicyBinding")
    assert {b["spec"]["policyName"] for b in bindings} == names
    assert all(b["spec"]["validationActions"] == ["Warn", "Audit"] for b in bindings)
    assert all(p["spec"]["failurePolicy"] == "Fail" for p in objects(docs, "ValidatingAdmissionPolicy"))


def test_namespace_selector_reaches_the_bindings() -> None:
    docs = render(*ON, "--set-string", "admissionPolicy.namespaceSelector.matchLabels.tenant=true")
    for binding in objects(docs, "ValidatingAdmissionPolicyBinding"):
        assert binding["spec"]["matchResources"]["namespaceSelector"] == {"matchLabels": {"tenant": "true"}}


@pytest.mark.parametrize(
    "args,says",
    [
        (["--set", "admissionPolicy.enabled=true"], "would check nothing"),
        ((*ON, "--set", "admissionPolicy.validationActions={Deny,Warn}"), "Deny and Warn"),
        ((*ON, "--set", "admissionPolicy.validationActions={Block}"), "/admissionPolicy/validationActions/0"),
        (
            (*ON, "--set", "admissionPolicy.allowedRegistries={ghcr.io/x/}"),
            "/admissionPolicy/allowedRegistries/0",
        ),
        ((*ON, "--set", "admissionPolicy.allowedSecretHosts={Docs.Example.com}"), "allowedSecretHosts/0"),
    ],
    ids=["nothing-to-check", "deny-and-warn", "unknown-action", "trailing-slash", "upper-case-host"],
)
def test_bad_policy_values_fail_the_install(args: list[str], says: str) -> None:
    done = helm("template", "tandem", str(ROOT / "charts" / "tandem"), *args)
    assert done.returncode != 0
    assert says in done.stderr, done.stderr


def test_only_the_checks_asked_for_are_rendered() -> None:
    only_images = (
        "--set",
        "admissionPolicy.enabled=true",
        "--set",
        "admissionPolicy.allowedRegistries={r.io}",
    )
    assert {
        p["spec"]["matchConstraints"]["resourceRules"][0]["resources"][0] for p in policies(*only_images)
    } == {
        "adaptertrainings",
        "evaluations",
        "hybridendpoints",
        "servingpools",
    }
    # Without allowedSecretHosts a KnowledgeBase is not checked at all: any Secret to any host passes.
    assert not refusals(policies(*only_images), knowledge_base(http_source("https://attacker.example.net/")))


# -- manifests ---------------------------------------------------------------------------------------------


def meta(kind: str, spec: Doc) -> Doc:
    return {
        "apiVersion": "tandem.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "namespace": "t"},
        "spec": spec,
    }


def knowledge_base(*sources: Doc, milvus: Doc | None = None) -> Doc:
    spec: Doc = {"sources": list(sources)}
    if milvus is not None:
        spec["milvus"] = milvus
    return meta("KnowledgeBase", spec)


def http_source(*urls: str, secret: bool = True, name: str = "web") -> Doc:
    http: Doc = {"urls": list(urls)}
    if secret:
        http["headersSecretRef"] = {"name": "wiki-token"}
    return {"name": name, "http": http}


def s3_source(endpoint: str) -> Doc:
    return {
        "name": "bucket",
        "s3": {"bucket": "docs", "endpoint": endpoint, "credentialsSecretRef": {"name": "s3"}},
    }


def training(image: str) -> Doc:
    return meta(
        "AdapterTraining",
        {"baseModel": {"uri": "pvc://models/m"}, "output": {"uri": "pvc://a/b"}, "image": image},
    )


def evaluation(image: str | None = None, judge_url: str | None = None) -> Doc:
    spec: Doc = {"endpointRef": {"name": "e"}}
    if image:
        spec["image"] = image
    if judge_url:
        spec["judge"] = {"url": judge_url, "model": "judge", "apiKeySecretRef": {"name": "judge", "key": "k"}}
    return meta("Evaluation", spec)


def endpoint(image: str | None = None, extra_args: list[str] | None = None) -> Doc:
    serving: Doc = {}
    if image:
        serving["image"] = image
    if extra_args is not None:
        serving["extraArgs"] = extra_args
    return meta("HybridEndpoint", {"baseModel": {"uri": "pvc://models/m"}, "serving": serving})


def pool(image: str | None = None, extra_args: list[str] | None = None) -> Doc:
    """A ServingPool runs vLLM for many namespaces: the same image and flag checks as an endpoint's."""
    serving = endpoint(image, extra_args)["spec"]["serving"]
    return meta("ServingPool", {"baseModel": {"uri": "hf://org/model"}, "serving": serving})


def pool_with_store(prefix: str) -> Doc:
    store = {
        "name": "private",
        "prefix": prefix,
        "credentialsSecretRef": {"name": "registry"},
        "namespaces": ["team-a"],
    }
    return meta("ServingPool", {"baseModel": {"uri": "hf://org/model"}, "adapterStores": [store]})


HOSTILE: dict[str, tuple[Doc, str]] = {
    "pool-store-credentials-to-attacker": (
        pool_with_store("oci://attacker.example.net/team-a"),
        "spec.adapterStores: private",
    ),
    "pool-vllm-image-elsewhere": (pool(image="evil.example.net/vllm:1"), "spec.serving.image"),
    "training-image-elsewhere": (
        training("evil.example.net/miner:1"),
        "spec.image: evil.example.net/miner:1",
    ),
    "training-image-lookalike-path": (training("ghcr.io/tandem-devil/worker:1"), "spec.image"),
    "training-image-registry-as-path": (
        training("evil.example.net/ghcr.io/tandem-dev/worker:1"),
        "spec.image",
    ),
    "evaluation-image": (evaluation(image="docker.io/library/python:3"), "spec.image"),
    "vllm-image-lookalike-repository": (
        endpoint(image="docker.io/vllm/vllm-openai-evil:1"),
        "spec.serving.image",
    ),
    "vllm-image-unqualified": (endpoint(image="vllm/vllm-openai:v0.32.0"), "spec.serving.image"),
    "headers-to-attacker": (
        knowledge_base(http_source("https://attacker.example.net/collect")),
        "spec.sources: web",
    ),
    "headers-userinfo-trick": (
        knowledge_base(http_source("https://docs.example.com@attacker.example.net/")),
        "web",
    ),
    "headers-suffix-trick": (
        knowledge_base(http_source("https://docs.example.com.attacker.example.net/")),
        "web",
    ),
    "headers-backslash-trick": (
        knowledge_base(http_source("https://docs.example.com\\@attacker.example.net/")),
        "web",
    ),
    "headers-port-userinfo": (
        knowledge_base(http_source("https://docs.example.com:443@attacker.example.net/")),
        "web",
    ),
    "headers-wildcard-without-dot": (knowledge_base(http_source("https://evilcorp.example.com/")), "web"),
    "headers-upper-case": (knowledge_base(http_source("https://DOCS.example.com/")), "web"),
    "headers-one-bad-url-of-two": (
        knowledge_base(
            http_source("https://docs.example.com/a", name="ok"),
            http_source("https://docs.example.com/b", "http://169.254.169.254/", name="bad"),
        ),
        "spec.sources: bad:",
    ),
    "s3-credentials-to-attacker": (
        knowledge_base(s3_source("https://attacker.example.net:9000")),
        "spec.sources: bucket",
    ),
    "milvus-credentials-to-attacker": (
        knowledge_base(
            milvus={
                "uri": "http://attacker.example.net:19530",
                "credentialsSecretRef": {"name": "m", "key": "t"},
            }
        ),
        "spec.milvus.uri",
    ),
    "judge-key-to-attacker": (evaluation(judge_url="https://attacker.example.net/v1"), "spec.judge.url"),
    "vllm-trust-remote-code": (endpoint(extra_args=["--trust-remote-code"]), "--trust-remote-code"),
    "pool-trust-remote-code": (pool(extra_args=["--trust-remote-code"]), "--trust-remote-code"),
    "vllm-flag-abbreviation": (endpoint(extra_args=["--trust-remote"]), "--trust-remote"),
    "vllm-local-media": (
        endpoint(extra_args=["--allowed-local-media-path=/"]),
        "--allowed-local-media-path=/",
    ),
    "vllm-flag-as-a-value": (
        endpoint(extra_args=["--served-model-name", "--trust-remote-code"]),
        "--trust-remote-code",
    ),
    "vllm-allowed-flag-prefix": (endpoint(extra_args=["--enforce-eager-evil"]), "--enforce-eager-evil"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_manifest_is_refused(name: str) -> None:
    manifest, says = HOSTILE[name]
    found = refusals(policies(*ON), manifest)
    assert found, f"{name} admitted"
    assert any(says in message for message in found), found


FINE: dict[str, Doc] = {
    "pool-store-allowed-host": pool_with_store("oci://docs.example.com:5000/team-a"),
    "pool-s3-store-endpoint-in-the-secret": pool_with_store("s3://adapters/team-a"),
    "training-image-allowed-registry": training("ghcr.io/tandem-dev/tandem-worker:0.1.0-cu128"),
    "training-image-by-digest": training("ghcr.io/tandem-dev/tandem-worker@sha256:" + "0" * 64),
    "vllm-image-allowed-repository": endpoint(image="docker.io/vllm/vllm-openai:v0.32.0"),
    "no-image-the-operators-default": endpoint(),
    "headers-to-allowed-hosts": knowledge_base(
        http_source("https://docs.example.com/a.md", "https://wiki.corp.example.com:8443/b?page=2")
    ),
    "no-secret-any-host": knowledge_base(http_source("https://elsewhere.example.org/", secret=False)),
    "s3-allowed-endpoint": knowledge_base(s3_source("https://minio.corp.example.com")),
    "milvus-credentials-default-uri": knowledge_base(
        milvus={"credentialsSecretRef": {"name": "m", "key": "t"}}
    ),
    "milvus-uri-without-credentials": knowledge_base(milvus={"uri": "http://milvus.elsewhere:19530"}),
    "judge-allowed-host": evaluation(
        image="ghcr.io/tandem-dev/tandem-worker:1", judge_url="https://docs.example.com/v1"
    ),
    "vllm-allowed-args": endpoint(
        extra_args=["--max-num-seqs", "8", "--enforce-eager", "--served-model-name=m"]
    ),
}


@pytest.mark.parametrize("name", list(FINE))
def test_ordinary_manifest_is_admitted(name: str) -> None:
    assert refusals(policies(*ON), FINE[name]) == []


def example_manifests() -> list[tuple[str, Doc]]:
    found = []
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("apiVersion", "").startswith("tandem.dev/"):
                found.append((f"{path.relative_to(ROOT)}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return found


EXAMPLES = example_manifests()


def test_there_are_examples() -> None:
    assert {doc["kind"] for _, doc in EXAMPLES} >= {
        "KnowledgeBase",
        "AdapterTraining",
        "HybridEndpoint",
        "Evaluation",
    }


@pytest.mark.parametrize("name", [n for n, _ in EXAMPLES])
def test_examples_are_admitted(name: str) -> None:
    assert refusals(policies(*ON), dict(EXAMPLES)[name]) == []


def test_metadata_writes_to_an_object_from_before_the_policy_pass() -> None:
    """The operator patches finalizers and annotations of objects that may predate the policy: those
    updates must pass, or a refused object could never be deleted; a change of its spec is checked."""
    old = training("evil.example.net/miner:1")
    releasing = copy.deepcopy(old)
    releasing["metadata"]["finalizers"] = []
    releasing["metadata"]["annotations"] = {"kopf.zalando.org/last-handled-configuration": "{}"}
    assert refusals(policies(*ON), releasing, old=old) == []
    changed = copy.deepcopy(old)
    changed["spec"]["image"] = "evil.example.net/miner:2"
    assert refusals(policies(*ON), changed, old=old)
    fixed = copy.deepcopy(old)
    fixed["spec"]["image"] = "ghcr.io/tandem-dev/tandem-worker:1"
    assert refusals(policies(*ON), fixed, old=old) == []


# -- coverage of the API -----------------------------------------------------------------------------------

# Secret references whose value goes nowhere a manifest chooses: the gateway compares tenants' keys with
# what callers send (README, "Who may do what"), so no host check applies.
SECRETS_SENT_NOWHERE = {("HybridEndpoint", "spec.tenants[].apiKeySecretRef")}


def _fields(schema: Doc, path: str) -> Iterator[tuple[str, Doc]]:
    for name, node in (schema.get("properties") or {}).items():
        yield f"{path}.{name}", node
        yield from _fields(node, f"{path}.{name}")
    if "items" in schema:
        yield from _fields(schema["items"], f"{path}[]")


def crd_fields() -> Iterator[tuple[str, str, Doc]]:
    for kind in ALL_KINDS:
        crd = yaml.safe_load((ROOT / "charts" / "tandem" / "crds" / file_name(kind)).read_text())
        for version in crd["spec"]["versions"]:
            spec = version["schema"]["openAPIV3Schema"]["properties"].get("spec", {})
            for path, node in _fields(spec, "spec"):
                yield kind.kind, path, node


def _checked(kind: str) -> str:
    """Every expression of the policy for `kind`, in one string."""
    [policy] = [
        p
        for p in policies(*ON)
        if p["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == [PLURALS[kind]]
    ]
    return " ".join(v["expression"] for v in policy["spec"]["validations"])


def test_every_image_field_of_every_kind_is_checked() -> None:
    """A kind that gains an image field fails here until the policy checks it."""
    images = [(kind, path) for kind, path, _ in crd_fields() if path.rpartition(".")[2] == "image"]
    assert len(images) >= 3
    for kind, path in images:
        used = re.search(rf"object\.{re.escape(path)}\b", _checked(kind))
        assert used, f"{kind} {path} is not checked by the admission policy"


def test_every_secret_reference_is_checked_or_known_to_go_nowhere() -> None:
    """A Secret a pod sends to a host the manifest names must be held to allowedSecretHosts: a new
    *SecretRef field fails here until the policy checks it (or it is shown to go nowhere)."""
    refs = [(kind, path) for kind, path, _ in crd_fields() if path.endswith("SecretRef")]
    assert len(refs) >= 5
    for kind, path in refs:
        if (kind, path) in SECRETS_SENT_NOWHERE:
            continue
        # Inside the sources list the expressions name a source `s`: s.http.headersSecretRef; inside the
        # adapters list an adapter `a`: a.credentialsSecretRef; inside adapterStores a store `s`.
        field = path.replace("[]", "")
        for within in ("spec.sources.", "spec.adapters.", "spec.adapterStores."):
            field = field.removeprefix(within)
        expressions = _checked(kind)
        assert "secretHostPattern" in expressions, f"{kind} {path} is not held to allowedSecretHosts"
        assert re.search(rf"\b{re.escape(field)}\b", expressions), f"{kind} {path}"
