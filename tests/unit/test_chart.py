"""The Helm chart, rendered by the real helm and checked object by object against the operator's code.

RBAC is compared with what the code calls: the operator's child kinds and reconciled kinds, its KubeApi
call sites that name a kind (found by reading the source), and what kopf does with the resources its
handler registry holds. A kind or a call added to the code without RBAC fails here, and so does a rule
the code does not need.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kopf
import kubernetes_validate
import pytest
import yaml

from tandem.api.crd import file_name
from tandem.api.kinds import ALL_KINDS, RECONCILED_KINDS
from tandem.platform.kubernetes.api import RESOURCES, KubeApi, resource_of
from tandem.platform.kubernetes.children import CHILD_KINDS
from tandem.platform.kubernetes.ownership import Owner
from tandem.platform.kubernetes.settings import OperatorSettings
from tandem.workloads.gateway.config import METRICS_PORT

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tandem"
FULL_VALUES = CHART / "ci" / "full-values.yaml"
NAMESPACE = "tandem-system"
KUBE_VERSION = "1.32"


def _helm() -> str | None:
    local = ROOT / ".tools" / "bin" / "helm"
    return str(local) if local.exists() else shutil.which("helm")


HELM = _helm()
pytestmark = pytest.mark.skipif(
    HELM is None,
    reason="helm is not installed: run `make tools` (python3 scripts/install-tools.py .tools/bin)",
)

Rule = tuple[str, str, str]  # (apiGroup, resource, verb)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=60, check=False)


@cache
def render(*args: str) -> tuple[dict[str, Any], ...]:
    done = helm(
        "template", "tandem", str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, *args
    )
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


DEFAULT: tuple[str, ...] = ()
FULL = ("--values", str(FULL_VALUES))
RENDERINGS = pytest.mark.parametrize("values", [DEFAULT, FULL], ids=["default-values", "full-values"])


def objects(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def the(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    found = objects(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"


def operator_rbac(docs: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
    """`docs` without the ClusterRoles for users (aggregated into view/edit/admin, bound to nobody here):
    what remains is the operator's RBAC, which the tests below compare with the code."""
    return tuple(d for d in docs if not any(k.startswith(AGGREGATE) for k in d["metadata"].get("labels", {})))


def containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod.get("initContainers") or []
    yield from pod["containers"]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env") or []}


def flags(container: dict[str, Any]) -> dict[str, str]:
    return dict(arg.removeprefix("--").partition("=")[::2] for arg in container["args"])


# -- every object ----------------------------------------------------------------------------------------


@RENDERINGS
def test_rendered_objects_are_valid_kubernetes(values: tuple[str, ...]) -> None:
    for doc in render(*values):
        if doc["apiVersion"].startswith(("kopf.dev/", "monitoring.coreos.com/")):
            continue  # custom resources: the lint script checks peerings against their CRD
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_default_values_render_the_cluster_wide_operator() -> None:
    kinds = sorted(d["kind"] for d in operator_rbac(render()))
    assert kinds == sorted(
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ClusterKopfPeering"]
    )
    assert len(render()) - len(operator_rbac(render())) == 3  # the view, edit and admin ClusterRoles


def test_full_values_render_every_optional_object() -> None:
    kinds = {d["kind"] for d in render(*FULL)}
    assert {
        "ServiceMonitor",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
        "KopfPeering",
        "PodDisruptionBudget",
    } <= kinds


# -- the Deployment ---------------------------------------------------------------------------------------


@RENDERINGS
def test_pod_security_is_restricted(values: tuple[str, ...]) -> None:
    pod = the(render(*values), "Deployment")["spec"]["template"]["spec"]
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security.get("runAsUser", 1000) != 0
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(flag), flag
    assert not [v for v in pod.get("volumes") or [] if "hostPath" in v]
    for container in containers(pod):
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, container["name"]
        assert sc["readOnlyRootFilesystem"] is True, container["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert not sc.get("privileged"), container["name"]
        assert sc.get("runAsUser", 1000) != 0, container["name"]


@RENDERINGS
def test_container_has_resources_and_a_writable_tmp(values: tuple[str, ...]) -> None:
    pod = the(render(*values), "Deployment")["spec"]["template"]["spec"]
    for container in containers(pod):
        assert container["resources"]["requests"]["cpu"], container["name"]
        assert container["resources"]["requests"]["memory"], container["name"]
        assert container["resources"]["limits"]["memory"], container["name"]
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


@RENDERINGS
def test_probes_read_kopfs_health_endpoint(values: tuple[str, ...]) -> None:
    (container,) = the(render(*values), "Deployment")["spec"]["template"]["spec"]["containers"]
    health = re.fullmatch(r"http://0\.0\.0\.0:(\d+)/healthz", flags(container)["health"])
    assert health, flags(container)["health"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["health"] == int(health.group(1))
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe


@RENDERINGS
def test_arguments_are_the_entrypoints_flags(values: tuple[str, ...]) -> None:
    entrypoint = ROOT / "operator" / "tandem" / "platform" / "kubernetes" / "__main__.py"
    known = set(re.findall(r'add_argument\("--([a-z-]+)"', entrypoint.read_text()))
    (container,) = the(render(*values), "Deployment")["spec"]["template"]["spec"]["containers"]
    assert set(flags(container)) <= known


def test_environment_defaults_equal_the_operators_settings() -> None:
    """Every TANDEM_* setting is set, and the chart's defaults are the operator's own defaults."""
    read = set(re.findall(r'"(TANDEM_[A-Z_]+)"', inspect.getsource(OperatorSettings.from_env)))
    (container,) = the(render(), "Deployment")["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    assert read <= set(env), f"the chart does not set {read - set(env)}"
    defaults = OperatorSettings()
    assert env["TANDEM_WORKER_IMAGE"] == defaults.worker_image
    assert env["TANDEM_GATEWAY_IMAGE"] == defaults.gateway_image
    assert env["TANDEM_VLLM_IMAGE"] == defaults.vllm_image
    assert env["TANDEM_RAY_VERSION"] == defaults.ray_version
    assert env["TANDEM_DEFAULT_MILVUS_URI"] == defaults.default_milvus_uri
    assert env["TANDEM_IMAGE_PULL_POLICY"] == defaults.image_pull_policy
    assert float(env["TANDEM_RESYNC_SECONDS"]) == defaults.resync_seconds
    assert env["TANDEM_NAMESPACES"] == ""
    assert env["TANDEM_KEDA_PROMETHEUS_URL"] == ""  # no KEDA: pools autoscale with HPAs
    assert defaults.keda_prometheus_url is None
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["TANDEM_OPERATOR_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_full_values_reach_the_environment() -> None:
    (container,) = the(render(*FULL), "Deployment")["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    assert env["TANDEM_NAMESPACES"] == "team-a,team-b"
    assert env["TANDEM_KEDA_PROMETHEUS_URL"] == "http://prometheus.monitoring.svc:9090"
    assert env["TANDEM_GATEWAY_IMAGE"].startswith("registry.example.com/tandem/tandem-gateway@sha256:")
    assert "@sha256:" in container["image"]
    assert flags(container)["peering"] == "tandem-prod"
    assert "verbose" in flags(container)


# -- Services, monitoring, network ------------------------------------------------------------------------


@RENDERINGS
def test_metrics_service_and_monitor_reach_the_metrics_port(values: tuple[str, ...]) -> None:
    docs = render(*values)
    deployment = the(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == int(flags(container)["metrics-port"])
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = the(docs, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["metrics"]
    for monitor in objects(docs, "ServiceMonitor"):
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]


def test_metrics_off_means_no_port_and_no_service() -> None:
    docs = render("--set", "metrics.enabled=false")
    (container,) = the(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert flags(container)["metrics-port"] == "0"
    assert not objects(docs, "Service")


def test_network_policy_admits_probes_and_scrapes_and_lets_out_what_the_operator_calls() -> None:
    """In: probes and scrapes. Out: DNS, the API server, Ray dashboards (training progress) and vLLM
    pods' adapter-sync status port (adapter load state), each to the pods that serve it."""
    docs = render(*FULL)
    policy = the(docs, "NetworkPolicy")
    pod_labels = the(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == ["health", "metrics"]
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}
    vllm_port = yaml.safe_load(FULL_VALUES.read_text())["workloads"]["vllmPort"]
    status_port = OperatorSettings().adapter_status_port
    # The adapter sync's status port, not vLLM's own (which requires a key the operator does not hold).
    assert {53, 443, 8265, status_port} <= egress_ports and vllm_port not in egress_ports
    vllm_pods = {"app.kubernetes.io/managed-by": "tandem", "app.kubernetes.io/component": "vllm"}
    [vllm] = [
        r
        for r in policy["spec"]["egress"]
        if r.get("to", [{}])[0].get("podSelector", {}).get("matchLabels") == vllm_pods
    ]
    assert [p["port"] for p in vllm["ports"]] == [status_port]
    gateway_pods = {"app.kubernetes.io/managed-by": "tandem", "app.kubernetes.io/component": "gateway"}
    [gateway] = [
        r
        for r in policy["spec"]["egress"]
        if r.get("to", [{}])[0].get("podSelector", {}).get("matchLabels") == gateway_pods
    ]
    assert [p["port"] for p in gateway["ports"]] == [METRICS_PORT]  # its internal port: dependencies
    (container,) = the(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert (
        env_of(container)["TANDEM_GATEWAY_PORT"] == str(METRICS_PORT) == str(OperatorSettings().gateway_port)
    )
    assert env_of(container)["TANDEM_ADAPTER_STATUS_PORT"] == str(status_port)


# -- RBAC against the code ---------------------------------------------------------------------------------

# KubeApi's request methods and the verbs the API server authorizes them as.
METHOD_VERBS: dict[str, set[str]] = {
    "get": {"get"},
    "list": {"list"},
    "create": {"create"},
    "apply": {"patch", "create"},  # server-side apply is a PATCH; when it creates, create is checked too
    "patch_status": {"patch"},  # on the status subresource
    "delete": {"delete"},
}
# What the reconciler does with every child kind (through variables, so no call site names the kind):
# list an owner's children by label, get a planned child missing from that list (a stranger with its
# name?), server-side apply, prune what is no longer planned.
CHILD_METHODS = ("get", "list", "apply", "delete")
OPERATOR = ROOT / "operator" / "tandem" / "platform" / "kubernetes"


def _plural(api_version: str, kind: str) -> tuple[str, str]:
    res = resource_of(api_version, kind)
    return res.group, res.plural


def _static(node: ast.expr, namespace: dict[str, Any]) -> Any:
    """The value of a constant expression (literals, names, attributes of names), else None."""
    if not all(isinstance(n, (ast.Constant, ast.Name, ast.Attribute, ast.Load)) for n in ast.walk(node)):
        return None
    try:
        return eval(compile(ast.Expression(node), "<call site>", "eval"), namespace)
    except (NameError, AttributeError):
        return None


def static_api_calls() -> set[Rule]:
    """Rules for the call sites `...api.<method>(<api_version>, <kind>, ...)` whose kind is a constant."""
    rules: set[Rule] = set()
    for path in sorted(OPERATOR.rglob("*.py")):
        calls = [
            node
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in METHOD_VERBS
            and isinstance(node.func.value, (ast.Attribute, ast.Name))
            and getattr(node.func.value, "attr", getattr(node.func.value, "id", None)) == "api"
            and len(node.args) >= 2
        ]
        if not calls:
            continue
        module = ".".join(path.relative_to(ROOT / "operator").with_suffix("").parts)
        namespace = vars(importlib.import_module(module))
        for call in calls:
            api_version, kind = (_static(arg, namespace) for arg in call.args[:2])
            if not (isinstance(api_version, str) and isinstance(kind, str)):
                continue  # the kind is a variable: covered by the child and reconciled-kind rules
            group, plural = _plural(api_version, kind)
            resource = f"{plural}/status" if call.func.attr == "patch_status" else plural  # type: ignore[attr-defined]
            rules |= {(group, resource, verb) for verb in METHOD_VERBS[call.func.attr]}  # type: ignore[attr-defined]
    return rules


def _kopf_rules() -> set[Rule]:
    """What kopf does with the resources the operator's handlers are registered for."""
    # Imported here, not at collection: the module reads its settings from the environment once, and the
    # integration tier sets them (a short resync) when its conftest loads.
    from tandem.platform.kubernetes import handlers  # noqa: F401  (registers the handlers)

    registry = kopf.get_default_registry()
    rules: set[Rule] = set()
    # Change-handlers and timers keep their state in annotations and finalizers (patch); event handlers
    # only watch. kopf lists and watches every one of them.
    for registry_part, verbs in (
        (registry._changing, {"list", "watch", "patch"}),
        (registry._spawning, {"list", "watch", "patch"}),
        (registry._watching, {"list", "watch"}),
        (registry._indexing, {"list", "watch"}),
    ):
        for selector in registry_part.get_all_selectors():
            plural = selector.plural or selector.any_name
            assert isinstance(plural, str), f"kopf selector {selector} names no resource plural"
            rules |= {(selector.group or "", plural, verb) for verb in verbs}
    assert not registry._webhooks.get_all_selectors(), "webhooks need their own RBAC and a Service"
    # Framework: Events about the handled resources; discovery of CRDs (resource observer).
    rules.add(("", "events", "create"))
    rules |= {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
    return rules


def expected_rules(*, namespaced: bool, peering: bool = True) -> set[Rule]:
    """(apiGroup, resource, verb) the operator needs, derived from its code."""
    public = {n for n, f in inspect.getmembers(KubeApi, inspect.iscoroutinefunction) if not n.startswith("_")}
    assert public - {"connect", "close"} == set(METHOD_VERBS), (
        "KubeApi has a new request method: say which verbs it needs in METHOD_VERBS"
    )
    rules = _kopf_rules() | static_api_calls()
    children = {c for kinds in CHILD_KINDS.values() for c in kinds}
    for api_version, kind in children:
        group, plural = _plural(api_version, kind)
        rules |= {(group, plural, verb) for method in CHILD_METHODS for verb in METHOD_VERBS[method]}
    for k in RECONCILED_KINDS:
        rules.add((k.group, k.plural, "get"))  # re-read before reconciling; references resolved
        rules.add((k.group, f"{k.plural}/status", "patch"))  # Reconciler._write_status
    owner_reference = Owner("tandem.dev/v1alpha1", "KnowledgeBase", "ns", "n", "uid").reference()
    if owner_reference.get("blockOwnerDeletion"):
        # OwnerReferencesPermissionEnforcement: blockOwnerDeletion needs update on the owner's finalizers.
        for kind_name in CHILD_KINDS:
            k = next(k for k in ALL_KINDS if k.kind == kind_name)
            rules.add((k.group, f"{k.plural}/finalizers", "update"))
    # api.create(vllm_key_secret(...)): the one Secret call (test_the_operator_only_ever_creates_secrets).
    rules.add(("", "secrets", "create"))
    for api_version, kind in RESOURCES:
        group, plural = _plural(api_version, kind)
        assert any(r[:2] == (group, plural) for r in rules), (
            f"api.RESOURCES has {kind} but no call site shows how the operator uses it: call KubeApi with a "
            "constant (api_version, kind), or make it a child kind"
        )
    if peering:
        plural = "kopfpeerings" if namespaced else "clusterkopfpeerings"
        rules |= {("kopf.dev", plural, verb) for verb in ("list", "watch", "patch")}
    if namespaced:
        rules |= {("", "namespaces", verb) for verb in ("list", "watch")}  # kopf's namespace observer
    return rules


def test_static_call_sites_are_found() -> None:
    """The scan sees the reconciler's cross-namespace grant lookup (guards the scan itself)."""
    assert ("tandem.dev", "referencegrants", "list") in static_api_calls()


def granted(*roles: dict[str, Any]) -> set[Rule]:
    out: set[Rule] = set()
    for role in roles:
        for rule in role["rules"]:
            assert not rule.get("resourceNames"), "rules are per resource type"
            out |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return out


@RENDERINGS
def test_rbac_has_no_wildcards_secrets_or_pods(values: tuple[str, ...]) -> None:
    docs = render(*values)
    rules = granted(*objects(docs, "ClusterRole"), *objects(docs, "Role"))
    assert rules
    for group, resource, verb in rules:
        assert "*" not in (group, resource, verb)
        assert resource not in ("pods/exec", "pods/attach", "pods/portforward"), resource
        assert resource != "serviceaccounts/token" and not resource.startswith("secrets/"), resource
        if resource == "secrets":
            # An endpoint's vLLM key is created and never read: any reading verb (get, list, watch; patch
            # and update answer with the object) would open every Secret the operator can name.
            assert verb == "create", f"secrets: {verb}"
        if resource == "pods":
            assert verb in ("get", "list", "watch"), "the operator may read pods, never change them"
        assert verb not in ("escalate", "bind", "impersonate"), verb


def test_cluster_role_grants_exactly_what_the_code_uses() -> None:
    docs = operator_rbac(render())
    assert not objects(docs, "Role")
    assert granted(the(docs, "ClusterRole")) == expected_rules(namespaced=False)


def test_without_peering_no_peering_rule_and_no_peering_object() -> None:
    docs = operator_rbac(render("--set", "peering.enabled=false"))
    assert granted(the(docs, "ClusterRole")) == expected_rules(namespaced=False, peering=False)
    assert not [d for d in docs if d["apiVersion"].startswith("kopf.dev/")]
    (container,) = the(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert flags(container)["peering"] == ""  # the entrypoint's standalone mode


def test_namespaced_roles_grant_exactly_what_the_code_uses() -> None:
    docs = operator_rbac(render(*FULL))
    watched = ["team-a", "team-b"]
    roles = objects(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == watched
    (discovery,) = objects(docs, "ClusterRole")
    cluster_level = {("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces")}
    assert {(g, r) for g, r, _ in granted(discovery)} == cluster_level
    for role in roles:
        assert granted(role, discovery) == expected_rules(namespaced=True), role["metadata"]["namespace"]
    service_account = the(docs, "ServiceAccount")["metadata"]
    for binding in [*objects(docs, "RoleBinding"), *objects(docs, "ClusterRoleBinding")]:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": service_account["name"], "namespace": NAMESPACE}
        ]
    role_names = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in roles}
    assert {
        (b["metadata"]["namespace"], b["roleRef"]["name"]) for b in objects(docs, "RoleBinding")
    } == role_names


def test_cluster_binding_binds_the_operators_service_account() -> None:
    docs = operator_rbac(render())
    binding, role = the(docs, "ClusterRoleBinding"), the(docs, "ClusterRole")
    pod = the(docs, "Deployment")["spec"]["template"]["spec"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": NAMESPACE}
    ]
    assert the(docs, "ServiceAccount")["metadata"]["name"] == pod["serviceAccountName"]


# -- peering -----------------------------------------------------------------------------------------------


def test_peering_objects_match_the_operators_peering_name() -> None:
    (container,) = the(render(), "Deployment")["spec"]["template"]["spec"]["containers"]
    peering = the(render(), "ClusterKopfPeering")
    assert peering["metadata"]["name"] == flags(container)["peering"]
    assert "namespace" not in peering["metadata"]
    namespaced = objects(render(*FULL), "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in namespaced) == ["team-a", "team-b"]
    assert {p["metadata"]["name"] for p in namespaced} == {"tandem-prod"}


# -- CRDs --------------------------------------------------------------------------------------------------


def test_chart_crds_are_byte_identical_to_crds() -> None:
    chart_crds = CHART / "crds"
    for kind in ALL_KINDS:
        committed = (ROOT / "crds" / file_name(kind)).read_bytes()
        assert (chart_crds / file_name(kind)).read_bytes() == committed, (
            f"run `make crds` ({file_name(kind)})"
        )
    tandem_files = sorted(p.name for p in chart_crds.glob("tandem.dev_*"))
    assert tandem_files == sorted(file_name(k) for k in ALL_KINDS), "stale CRD in the chart"
    others = sorted(p.name for p in chart_crds.iterdir() if not p.name.startswith("tandem.dev_"))
    assert others == ["kopf.dev_clusterkopfpeerings.yaml", "kopf.dev_kopfpeerings.yaml"]


@pytest.mark.parametrize("name,scope", [("clusterkopfpeerings", "Cluster"), ("kopfpeerings", "Namespaced")])
def test_kopf_peering_crds(name: str, scope: str) -> None:
    crd = yaml.safe_load((CHART / "crds" / f"kopf.dev_{name}.yaml").read_text())
    kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)
    assert crd["metadata"]["name"] == f"{name}.kopf.dev"
    assert crd["spec"]["scope"] == scope
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1"
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert "subresources" not in version  # kopf patches peering status through the main resource


# -- values: the schema, the README ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,named",
    [
        (["--set", "replicaCount=two"], "/replicaCount"),
        (["--set-string", "metrics.port=9090"], "/metrics/port"),
        (["--set", "workloads.vllmImage=vllm/vllm-openai:latest"], "/workloads/vllmImage"),
        (["--set", "logLevel=trace"], "/logLevel"),
        (["--set", "watchNamespaces={Team_A}"], "/watchNamespaces/0"),
        (["--set", "replicaCount=2", "--set", "peering.enabled=false"], "/replicaCount"),
        (["--set", "replicas=2"], "'replicas'"),
        (["--set", "metrics.serviceMonitor.intervall=10s"], "'intervall'"),
        (["--set", "networkPolicy.egress[0].to=x"], "'egress'"),
    ],
    ids=[
        "wrong-type",
        "string-for-port",
        "string-for-image-object",
        "not-in-enum",
        "bad-namespace-name",
        "replicas-without-peering",
        "unknown-key",
        "unknown-nested-key",
        "unknown-list-key",
    ],
)
def test_a_bad_value_fails_template_naming_it(args: list[str], named: str) -> None:
    done = helm("template", "tandem", str(CHART), *args)
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr
    assert named in done.stderr, done.stderr


@pytest.mark.parametrize(
    "args,named", [(["--set", "healthPort=http"], "/healthPort"), (["--set", "unknownKey=1"], "'unknownKey'")]
)
def test_a_bad_value_fails_install_naming_it(args: list[str], named: str) -> None:
    done = helm("install", "tandem", str(CHART), "--dry-run=client", "--namespace", NAMESPACE, *args)
    assert done.returncode != 0
    assert named in done.stderr, done.stderr


def _leaves(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Value paths a user sets: down into the chart's own (closed) objects, not into Kubernetes types."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        node = schema.get("properties", {}).get(key, {})
        if "$ref" in node:
            node = SCHEMA["definitions"][node["$ref"].rpartition("/")[2]]
        if isinstance(value, dict) and node.get("additionalProperties") is False:
            yield from _leaves(value, node, f"{path}.")
        else:
            yield path


SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())


def test_schema_closes_the_charts_own_objects() -> None:
    assert SCHEMA["additionalProperties"] is False
    for key, value in VALUES.items():
        node = SCHEMA["properties"][key]
        if isinstance(value, dict) and key not in ("podSecurityContext", "securityContext", "affinity"):
            node = SCHEMA["definitions"].get(node.get("$ref", "").rpartition("/")[2], node)
            closed = node.get("additionalProperties") is False or isinstance(
                node.get("additionalProperties"), dict
            )
            assert closed, f"{key}: an open object lets typos through"


def test_readme_lists_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    missing = [path for path in _leaves(VALUES, SCHEMA) if f"| `{path}` |" not in readme]
    assert not missing, f"charts/tandem/README.md does not describe {missing}"


def test_full_values_set_every_value() -> None:
    full = yaml.safe_load(FULL_VALUES.read_text())
    assert not set(_leaves(VALUES, SCHEMA)) - set(_leaves(full, SCHEMA)) - {"nameOverride"}


def test_readme_carries_the_argocd_health_check_for_each_kind() -> None:
    readme = (CHART / "README.md").read_text()
    lua = (ROOT / "docs" / "argocd" / "health.lua").read_text()
    indented = "".join(f"    {line}" if line.strip() else line for line in lua.splitlines(keepends=True))
    for kind in RECONCILED_KINDS:
        assert f"  resource.customizations.health.tandem.dev_{kind.kind}: |\n{indented}" in readme, kind.kind


def test_the_operator_only_ever_creates_secrets() -> None:
    """The one call site that touches Secrets passes a Secret to api.create and nothing else: the reason
    the chart may grant `create` on secrets and no other verb."""
    calls = []
    for path in sorted(OPERATOR.rglob("*.py")):
        text = path.read_text()
        if '"Secret"' in text and "api." in text and path.name != "api.py":  # api.py: the resource table
            calls.append(path.relative_to(OPERATOR).as_posix())
    assert calls == ["vllm_key.py"]
    source = (OPERATOR / "vllm_key.py").read_text()
    used = {
        n.func.attr
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and getattr(n.func.value, "id", "") == "api"
    }
    assert used == {"create"}
