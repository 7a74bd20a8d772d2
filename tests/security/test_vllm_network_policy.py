"""Who the vLLM NetworkPolicy admits (issue 15, item 1): this endpoint's gateway pods to vLLM's port, and
the operator's pods in the operator's namespace to the adapter sync's status port only (which adapters
are loaded); not a pod in another namespace that labels itself as the operator
(`app.kubernetes.io/name: tandem` anywhere got in before), and not the operator to vLLM itself.

The policy's peers are evaluated here by the NetworkPolicy rules for `from` peers (a podSelector alone:
pods of the policy's namespace; with a namespaceSelector: pods of the matching namespaces); matchLabels
only, which is all the planner writes. Not covered: a network plugin enforcing it (the vLLM key is
the second barrier, tests/security/test_vllm_peers.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tandem.platform.kubernetes.ownership import Owner
from tandem.platform.kubernetes.settings import OperatorSettings
from tests.unit.test_planners import he_plan

OPERATOR_NS = OperatorSettings().operator_namespace
GATEWAY = Owner("tandem.dev/v1alpha1", "HybridEndpoint", "team", "assistant", "u").labels("gateway")


@dataclass(frozen=True)
class Peer:
    namespace: str
    labels: dict[str, str]


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels is evaluated here: {selector}"
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


OPERATOR = Peer(OPERATOR_NS, {"app.kubernetes.io/name": "tandem", "app.kubernetes.io/instance": "tandem"})
SETTINGS = OperatorSettings()
VLLM_PORT = SETTINGS.vllm_port
STATUS_PORT = SETTINGS.adapter_status_port


def admitted(policy: dict[str, Any], peer: Peer, port: int) -> bool:
    namespace_labels = {"kubernetes.io/metadata.name": peer.namespace}
    for rule in policy["spec"]["ingress"]:
        assert rule["ports"], "a rule without ports admits every port"
        if not any(p["port"] == port and p["protocol"] == "TCP" for p in rule["ports"]):
            continue
        for source in rule["from"]:
            assert set(source) <= {"podSelector", "namespaceSelector"}, source
            if "namespaceSelector" in source:
                in_namespace = _matches(source["namespaceSelector"], namespace_labels)
            else:
                in_namespace = peer.namespace == policy["metadata"]["namespace"]
            if in_namespace and _matches(source.get("podSelector") or {}, peer.labels):
                return True
    return False


def vllm_policy() -> dict[str, Any]:
    plan = he_plan()
    [policy] = [c for c in plan.children if c["kind"] == "NetworkPolicy"]
    assert policy["metadata"]["namespace"] == "team"
    return policy


def test_the_gateway_reaches_vllm_and_the_operator_only_the_adapter_status() -> None:
    policy = vllm_policy()
    assert admitted(policy, Peer("team", GATEWAY), VLLM_PORT)
    assert admitted(policy, OPERATOR, STATUS_PORT)
    # The operator holds no vLLM key and needs none of vLLM's routes; the gateway needs no adapter status.
    assert not admitted(policy, OPERATOR, VLLM_PORT)
    assert not admitted(policy, Peer("team", GATEWAY), STATUS_PORT)


@pytest.mark.parametrize(
    "peer",
    [
        Peer("attacker", {"app.kubernetes.io/name": "tandem"}),  # the operator's label, another namespace
        Peer("attacker", GATEWAY),  # the gateway's labels, another namespace
        Peer("team", {"app.kubernetes.io/name": "tandem"}),  # the operator's label in the tenant's namespace
        Peer("team", {**GATEWAY, "tandem.dev/name": "other-endpoint"}),  # another endpoint's gateway
        Peer(OPERATOR_NS, {"app.kubernetes.io/name": "other"}),
    ],
    ids=[
        "operator-label-elsewhere",
        "gateway-labels-elsewhere",
        "operator-label-in-team",
        "other-gateway",
        "other-pod",
    ],
)
def test_a_pod_labelled_like_a_peer_elsewhere_does_not(peer: Peer) -> None:
    for port in (VLLM_PORT, STATUS_PORT):
        assert not admitted(vllm_policy(), peer, port)
