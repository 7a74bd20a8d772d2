"""A Secret the pods need and cannot find is read from what the kubelet reports (issue 14, around the CRDs):
the operator may not read Secrets. The messages are the kubelet's (pkg/kubelet: an env var's secretKeyRef
in the container's CreateContainerConfigError, a secret volume's in a FailedMount Event)."""

from __future__ import annotations

from typing import Any

from tandem.platform.kubernetes.observe import MissingSecret, missing_secrets, secret_not_found


def pod(
    name: str, waiting: dict[str, str] | None = None, volumes: list[dict[str, Any]] = ()
) -> dict[str, Any]:  # type: ignore[assignment]
    statuses = [{"name": "gateway", "state": {"waiting": waiting} if waiting else {"running": {}}}]
    return {
        "metadata": {"name": name},
        "spec": {"volumes": list(volumes)},
        "status": {"containerStatuses": statuses},
    }


def event(pod_name: str, message: str, reason: str = "FailedMount") -> dict[str, Any]:
    return {"involvedObject": {"kind": "Pod", "name": pod_name}, "reason": reason, "message": message}


def test_a_containers_config_error_names_the_secret_or_key() -> None:
    pods = [
        pod("gw-1", {"reason": "CreateContainerConfigError", "message": 'secret "acme-keys" not found'}),
        pod("gw-2", {"reason": "CreateContainerConfigError", "message": 'secret "acme-keys" not found'}),
        pod(
            "gw-3",
            {
                "reason": "CreateContainerConfigError",
                "message": "couldn't find key staff in Secret team/keys",
            },
        ),
        pod("gw-4", {"reason": "ContainerCreating"}),
        pod("gw-5", {"reason": "CreateContainerConfigError", "message": 'configmap "x" not found'}),
        pod("gw-6"),
    ]
    found = missing_secrets(pods)
    assert [(m.name, m.key, m.pod) for m in found] == [("acme-keys", None, "gw-1"), ("keys", "staff", "gw-3")]


def test_a_failed_secret_mount_is_read_from_the_pods_events() -> None:
    volumes = [
        {
            "name": "key-staff",
            "secret": {"secretName": "keys", "items": [{"key": "staff", "path": "api-key"}]},
        },
        {"name": "key-acme", "secret": {"secretName": "acme-keys"}},
        {"name": "spec", "configMap": {"name": "x"}},
    ]
    pods = [pod("gw-1", {"reason": "ContainerCreating"}, volumes)]  # no message in the pod's status
    events = [
        event("gw-1", 'MountVolume.SetUp failed for volume "key-acme" : secret "acme-keys" not found'),
        event(
            "gw-1",
            'MountVolume.SetUp failed for volume "key-staff" : references non-existent secret key: staff',
        ),
        event("gw-1", 'MountVolume.SetUp failed for volume "spec" : configmap "x" not found'),
        event("other", 'MountVolume.SetUp failed for volume "key-acme" : secret "acme-keys" not found'),
        event("gw-1", "Successfully assigned team/gw-1", reason="Scheduled"),
    ]
    found = missing_secrets(pods, events)
    assert [(m.name, m.key) for m in found] == [("acme-keys", None), ("keys", "staff")]
    assert missing_secrets(pods) == []  # the pod's status alone says nothing


def test_secret_not_found_names_the_secret_and_who_needs_it() -> None:
    missing = [MissingSecret("keys", "staff", "gw-1", ""), MissingSecret("acme-keys", None, "gw-1", "")]
    uses = {
        ("keys", "staff"): "the API key of tenant staff",
        ("keys", None): "the API key of tenant staff, the API key of tenant guests",
        ("acme-keys", None): "the API key of tenant acme",
    }
    outcome = secret_not_found(missing, "team", uses)
    assert (outcome.state, outcome.reason) == ("Stalled", "SecretNotFound")
    assert outcome.message == (
        "key staff of Secret keys (the API key of tenant staff) is missing: pod gw-1 cannot start; "
        "Secret acme-keys (the API key of tenant acme) is missing: pod gw-1 cannot start; "
        "create it in namespace team, the pods then start"
    )
