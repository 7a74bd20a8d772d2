"""The chart's objects for people and for availability (issue 14, the chart): ClusterRoles aggregated into
Kubernetes' view/edit/admin, the PodDisruptionBudget (only with more than one replica) and topology spread.

Rendered by the real helm, validated against the Kubernetes schemas (kubernetes-validate, strict). What
this does not show: that a real API server's ClusterRole aggregation controller picks the roles up (it
selects by the labels checked here; there is no aggregation controller in the emulator).
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tandem.api.kinds import ALL_KINDS, RECONCILED_KINDS

from .test_chart import AGGREGATE, FULL, HELM, KUBE_VERSION, objects, render, the

pytestmark = pytest.mark.skipif(HELM is None, reason="helm is not installed: run `make tools`")

READ = {"get", "list", "watch"}
WRITE = {"create", "update", "patch", "delete", "deletecollection"}


def aggregated(docs: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    """The user-facing ClusterRoles by the default role they are meant for (their name's last part)."""
    roles = [
        r
        for r in objects(docs, "ClusterRole")
        if any(k.startswith(AGGREGATE) for k in r["metadata"]["labels"])
    ]
    return {r["metadata"]["name"].rpartition("-")[2]: r for r in roles}


def grants(role: dict[str, Any]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for rule in role["rules"]:
        assert rule["apiGroups"] == ["tandem.dev"], rule
        for resource in rule["resources"]:
            out.setdefault(resource, set()).update(rule["verbs"])
    return out


def into(role: dict[str, Any]) -> set[str]:
    labels = role["metadata"]["labels"]
    return {k.removeprefix(AGGREGATE) for k, v in labels.items() if k.startswith(AGGREGATE) and v == "true"}


def test_every_rendered_object_is_valid_kubernetes() -> None:
    for values in ((), FULL, ("--set", "replicaCount=3")):
        for doc in render(*values):
            if not doc["apiVersion"].startswith(("kopf.dev/", "monitoring.coreos.com/")):
                kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_view_edit_and_admin_roles_are_aggregated_with_their_labels() -> None:
    roles = aggregated(render())
    assert set(roles) == {"view", "edit", "admin"}
    assert into(roles["view"]) == {"view", "edit", "admin"}
    assert into(roles["edit"]) == {"edit", "admin"}
    assert into(roles["admin"]) == {"admin"}
    for role in roles.values():
        assert "aggregationRule" not in role  # they are aggregated into the defaults, not aggregators


def test_view_reads_every_kind_and_its_status_and_writes_nothing() -> None:
    view = grants(aggregated(render())["view"])
    kinds = {k.plural for k in ALL_KINDS}
    statuses = {f"{k.plural}/status" for k in RECONCILED_KINDS}
    assert kinds | statuses <= set(view)
    assert set(view) - kinds - statuses == {"hybridendpoints/scale"}
    assert all(verbs == READ for verbs in view.values()), view


def test_edit_writes_the_workload_kinds_never_status_nor_grants() -> None:
    edit = grants(aggregated(render())["edit"])
    for kind in RECONCILED_KINDS:
        assert edit[kind.plural] == WRITE, kind.plural
    assert edit["hybridendpoints/scale"] == {"update", "patch"}
    assert not [r for r in edit if r.endswith("/status")], "status is the operator's"
    assert "referencegrants" not in edit


def test_admin_alone_writes_reference_grants() -> None:
    roles = aggregated(render())
    assert grants(roles["admin"]) == {"referencegrants": WRITE}
    for name in ("view", "edit"):
        assert not grants(roles[name]).get("referencegrants", set()) - READ, name


def test_aggregated_roles_can_be_switched_off() -> None:
    assert not aggregated(render("--set", "rbac.aggregateToDefaultRoles=false"))
    # They are users' roles, not the operator's: switching off the operator's RBAC keeps them.
    assert set(aggregated(render("--set", "rbac.create=false"))) == {"view", "edit", "admin"}


# -- availability ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("replicas", [0, 1])
def test_no_disruption_budget_and_no_spread_with_one_replica(replicas: int) -> None:
    docs = render("--set", f"replicaCount={replicas}")
    assert not objects(docs, "PodDisruptionBudget")
    assert "topologySpreadConstraints" not in the(docs, "Deployment")["spec"]["template"]["spec"]


@pytest.mark.parametrize("replicas", [2, 3])
def test_disruption_budget_and_soft_spread_with_more_replicas(replicas: int) -> None:
    docs = render("--set", f"replicaCount={replicas}")
    budget = the(docs, "PodDisruptionBudget")
    deployment = the(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    (spread,) = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"  # soft: one node still runs every replica
    assert spread["labelSelector"]["matchLabels"].items() <= pod_labels.items()


def test_disruption_budget_can_be_switched_off() -> None:
    assert not objects(
        render("--set", "replicaCount=2", "--set", "podDisruptionBudget.enabled=false"), "PodDisruptionBudget"
    )


def test_given_spread_constraints_replace_the_default() -> None:
    pod = the(render(*FULL), "Deployment")["spec"]["template"]["spec"]
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
