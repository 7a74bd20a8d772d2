"""
Built-in resource types served by default, and kopf's peering CRDs.

Built-in kinds get the generic metadata handling, status subresources where the real apiserver has them,
and generation bumps on spec changes; the ones the operator creates are validated by
``builtin_validation`` (upstream schemas and the API server's own rules).
"""

from __future__ import annotations

from typing import Any

from tests.emulator.resources import ResourceType

_ALL = ("all",)

BUILTIN_TYPES: tuple[ResourceType, ...] = (
    # core/v1
    ResourceType(
        "",
        "v1",
        "namespaces",
        "Namespace",
        "namespace",
        namespaced=False,
        short_names=("ns",),
        status_subresource=True,
        verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
    ),
    ResourceType("", "v1", "configmaps", "ConfigMap", "configmap", short_names=("cm",)),
    ResourceType("", "v1", "secrets", "Secret", "secret"),
    ResourceType(
        "",
        "v1",
        "services",
        "Service",
        "service",
        short_names=("svc",),
        categories=_ALL,
        status_subresource=True,
        verbs=("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"),
    ),
    ResourceType(
        "", "v1", "pods", "Pod", "pod", short_names=("po",), categories=_ALL, status_subresource=True
    ),
    ResourceType("", "v1", "events", "Event", "event", short_names=("ev",)),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", "serviceaccount", short_names=("sa",)),
    ResourceType(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        "persistentvolumeclaim",
        short_names=("pvc",),
        status_subresource=True,
    ),
    ResourceType(
        "", "v1", "nodes", "Node", "node", namespaced=False, short_names=("no",), status_subresource=True
    ),
    ResourceType(
        "",
        "v1",
        "endpoints",
        "Endpoints",
        "endpoints",
        short_names=("ep",),
        list_kind_override="EndpointsList",
    ),
    # apps/v1
    ResourceType(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        "deployment",
        short_names=("deploy",),
        categories=_ALL,
        status_subresource=True,
        scale_subresource={"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"},
    ),
    ResourceType(
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        "statefulset",
        short_names=("sts",),
        categories=_ALL,
        status_subresource=True,
        scale_subresource={"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"},
    ),
    ResourceType(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        "replicaset",
        short_names=("rs",),
        categories=_ALL,
        status_subresource=True,
    ),
    # batch/v1
    ResourceType("batch", "v1", "jobs", "Job", "job", categories=_ALL, status_subresource=True),
    ResourceType(
        "batch",
        "v1",
        "cronjobs",
        "CronJob",
        "cronjob",
        short_names=("cj",),
        categories=_ALL,
        status_subresource=True,
    ),
    # autoscaling/v2
    ResourceType(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscaler",
        short_names=("hpa",),
        categories=_ALL,
        status_subresource=True,
    ),
    # networking.k8s.io/v1
    ResourceType(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        "networkpolicy",
        short_names=("netpol",),
    ),
    ResourceType(
        "networking.k8s.io",
        "v1",
        "ingresses",
        "Ingress",
        "ingress",
        short_names=("ing",),
        status_subresource=True,
    ),
    # policy/v1
    ResourceType(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        "poddisruptionbudget",
        short_names=("pdb",),
        status_subresource=True,
    ),
    # coordination.k8s.io/v1
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", "lease"),
    # events.k8s.io/v1
    ResourceType("events.k8s.io", "v1", "events", "Event", "event", short_names=("ev",)),
    # apiextensions.k8s.io/v1
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        "customresourcedefinition",
        namespaced=False,
        short_names=("crd", "crds"),
        categories=("api-extensions",),
        status_subresource=True,
    ),
)

CRD_TYPE = BUILTIN_TYPES[-1]
NAMESPACE_TYPE = BUILTIN_TYPES[0]


def _peering_crd(plural: str, kind: str, scope: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.kopf.dev"},
        "spec": {
            "scope": scope,
            "group": "kopf.dev",
            "names": {"kind": kind, "plural": plural, "singular": plural[:-1]},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            },
                        }
                    },
                }
            ],
        },
    }


# The same CRDs as kopf's docs/peering.yaml (cluster-scoped and namespaced peering).
KOPF_PEERING_CRDS: tuple[dict[str, Any], ...] = (
    _peering_crd("clusterkopfpeerings", "ClusterKopfPeering", "Cluster"),
    _peering_crd("kopfpeerings", "KopfPeering", "Namespaced"),
)

# Namespaces that exist in a fresh cluster.
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")

# Kinds whose top-level fields other than these are "spec-like" and bump the generation.
# (For simplicity, any top-level field other than metadata/status/apiVersion/kind bumps it.)
NON_SPEC_FIELDS = frozenset({"metadata", "status", "apiVersion", "kind"})
