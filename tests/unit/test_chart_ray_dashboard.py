"""The operator's NetworkPolicy lets it reach the Ray dashboard of a training's cluster, where it reads
the job's log for step, loss and ETA (tandem.platform.kubernetes.ray_progress), and nothing more."""

from __future__ import annotations

from tests.unit.test_chart import FULL, render, the
from tests.unit.test_chart import pytestmark as needs_helm
from tests.unit.test_planners import at_plan

RAY_DASHBOARD_PORT = 8265  # Ray's default, which KubeRay's head Service exposes as `dashboard`


def test_the_planned_ray_head_keeps_the_default_dashboard_port() -> None:
    [rayjob] = [c for c in at_plan().children if c["kind"] == "RayJob"]
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert "dashboard-port" not in head["rayStartParams"]


@needs_helm
def test_egress_reaches_ray_head_pods_on_the_dashboard_port_only() -> None:
    policy = the(render(*FULL), "NetworkPolicy")
    to_ray = [
        rule
        for rule in policy["spec"]["egress"]
        if any(p["port"] == RAY_DASHBOARD_PORT for p in rule.get("ports", []))
    ]
    assert to_ray == [
        {
            "ports": [{"port": RAY_DASHBOARD_PORT, "protocol": "TCP"}],
            "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"ray.io/node-type": "head"}}}],
        }
    ]
