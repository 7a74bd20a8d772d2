"""The adapter sync fetches published adapters from a real OCI registry (Debian's docker-registry on
127.0.0.1, tests/integration/oci_registry.py) into its cache and hands vLLM the cached folder, only once
its files have the digest the endpoint declares (issue 16, item 2). vLLM is a stand-in here (an
httpx.MockTransport answering as vLLM 0.32 does); a real vLLM end to end comes separately.

Hostile: an artifact that is another adapter than the declared digest, and a blob changed in the
registry's storage after publishing, are never loaded, and nothing of them stays in the cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tandem.api.v1alpha1 import AdapterTrainingSpec
from tandem.workloads import train
from tandem.workloads.adapter_sync import ConfiguredAdapter, Fetcher, run
from tandem.workloads.artifacts import publish
from tandem.workloads.jobs import TrainingJob
from tandem.workloads.model_common import adapter_digest
from tests.integration.oci_registry import (  # noqa: F401  (the fixtures `registry`, `registry_auth`)
    Registry,
    registry_auth_fixture,
    registry_fixture,
)
from tests.integration.test_adapter_artifacts import make_adapter
from tests.manifests import example
from tests.unit.test_adapter_sync import URL, FakeVllm

pytestmark = pytest.mark.integration


def write_config(path: Path, adapters: list[ConfiguredAdapter]) -> Path:
    """The gateway configuration's adapters, as the operator writes them (AdapterConfig's fields)."""
    entries = [
        {"name": a.name, "path": a.path, "version": a.version, "digest": a.digest, "uri": a.uri}
        for a in adapters
    ]
    path.write_text(json.dumps({"endpoint": {"namespace": "team", "name": "assistant"}, "adapters": entries}))
    return path


def sync(config: Path, fake: FakeVllm, fetcher: Fetcher, events: list[dict[str, Any]]) -> bool:
    """One round of the sidecar's loop (--once, no retry: timeout 0)."""
    return run(
        config,
        URL,
        once=True,
        timeout=0,
        report=events.append,
        sleep=lambda _: None,
        transport=httpx.MockTransport(fake.handle),
        fetcher=fetcher,
    )


def secret_folder(root: Path, registry: Registry) -> Path:
    """The registry's credentials as a mounted Secret: one file per key."""
    assert registry.credentials is not None
    root.mkdir()
    (root / "username").write_text(registry.credentials[0])
    (root / "password").write_text(registry.credentials[1] + "\n")  # as `kubectl create secret` may
    return root


def test_a_published_training_is_fetched_with_credentials_and_loaded_from_the_cache(
    registry_auth: Registry, tmp_path: Path
) -> None:
    folder = make_adapter(tmp_path / "store" / "house-v1")
    digest = adapter_digest(folder)
    credentials = secret_folder(tmp_path / "secret", registry_auth)
    raw = example("AdapterTraining")["spec"]
    raw["output"]["publish"] = {
        "uri": f"oci://{registry_auth.host}/team/house",
        "credentialsSecretRef": {"name": "registry"},
    }
    job = TrainingJob(
        namespace="team",
        name="house",
        version="v1",
        base_model="/models/base",
        output=str(folder),
        spec=AdapterTrainingSpec.model_validate(raw),
    )
    # What the training reports after writing the adapter (its result line, then status.artifact).
    outcome = train.published(job, {"adapterDigest": digest, "skipped": False}, credentials)
    artifact = outcome["artifact"]
    assert artifact["uri"] == f"oci://{registry_auth.host}/team/house@{artifact['manifestDigest']}"
    tags = httpx.get(f"{registry_auth.url}/v2/team/house/tags/list", auth=registry_auth.credentials).json()
    assert tags["tags"] == ["v1"]  # a repository without a tag gets the version

    cache = tmp_path / "cache"
    config = write_config(
        tmp_path / "gateway.json",
        [ConfiguredAdapter("house", str(cache / digest), "v1", digest, artifact["uri"])],
    )
    fake, events = FakeVllm(), []
    # without the credentials the registry refuses: nothing is loaded
    (credentials / "password").rename(tmp_path / "password")
    fetcher = Fetcher(cache, credentials)
    assert not sync(config, fake, fetcher, events)
    assert fake.adapters == {} and "ArtifactAccessDenied" in events[0]["error"]

    # the Secret fixed (the kubelet rewrites the mounted files): the next round fetches and loads
    (tmp_path / "password").rename(credentials / "password")
    events.clear()
    assert sync(config, fake, fetcher, events)
    assert fake.adapters == {"house": str(cache / digest)}  # vLLM got the cached folder
    assert adapter_digest(cache / digest) == digest
    assert [e["event"] for e in events] == ["adapter-loaded"]

    # the next round sends nothing to the registry: the folder is what vLLM loaded, and stays
    registry_auth.stop()
    events.clear()
    assert sync(config, fake, Fetcher(cache, credentials), events) and events == []


def test_an_artifact_that_is_not_the_declared_adapter_is_never_loaded(
    registry: Registry, tmp_path: Path
) -> None:
    """The endpoint declares adapter A's digest; the URI names another adapter B (a tag moved, a wrong
    pin, a malicious publisher). B is refused and deleted; A, configured beside it, still loads."""
    good = make_adapter(tmp_path / "good", seed="good")
    other = make_adapter(tmp_path / "other", seed="other")
    good_digest = adapter_digest(good)
    good_uri = publish(good, f"oci://{registry.host}/team/house:v1").uri_with_digest
    other_uri = publish(other, f"oci://{registry.host}/team/house:v2").uri_with_digest

    cache = tmp_path / "cache"
    config = write_config(
        tmp_path / "gateway.json",
        [
            ConfiguredAdapter("style", str(cache / good_digest), "v1", good_digest, good_uri),
            # B's artifact, declared as A: it would land in A's cache folder if it were not checked
            ConfiguredAdapter("house", str(cache / good_digest), "v2", good_digest, other_uri),
        ],
    )
    fake, events = FakeVllm(), []
    fetcher = Fetcher(cache)
    assert not sync(config, fake, fetcher, events)
    assert fake.adapters == {"style": str(cache / good_digest)}
    failed = {e["adapter"]: e["error"] for e in events if e["event"] == "adapter-load-failed"}
    assert list(failed) == ["house"] and "ArtifactDigestMismatch" in failed["house"]
    assert sorted(p.name for p in cache.iterdir()) == [good_digest]  # nothing of B kept
    assert adapter_digest(cache / good_digest) == good_digest
    # a refused artifact pinned by digest is not downloaded again on the next rounds
    assert (other_uri, good_digest) in fetcher.refused


def test_a_blob_changed_in_the_registry_is_never_loaded(registry: Registry, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "adapter")
    digest = adapter_digest(adapter)
    published = publish(adapter, f"oci://{registry.host}/team/house:v1")
    manifest = httpx.get(
        f"{registry.url}/v2/team/house/manifests/{published.manifest_digest}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    ).json()
    blob = registry.blob_file(manifest["layers"][0]["digest"])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one bit flipped in the stored tar+gzip
    blob.write_bytes(bytes(data))

    cache = tmp_path / "cache"
    config = write_config(
        tmp_path / "gateway.json",
        [ConfiguredAdapter("house", str(cache / digest), "v1", digest, published.uri_with_digest)],
    )
    fake, events = FakeVllm(), []
    assert not sync(config, fake, Fetcher(cache), events)
    assert fake.adapters == {} and fake.posts() == []  # vLLM was never asked to load anything
    assert "ArtifactDigestMismatch" in events[0]["error"] or "ArtifactInvalid" in events[0]["error"]
    assert not cache.exists() or list(cache.iterdir()) == []


def test_a_store_that_does_not_answer_is_retried_not_refused(registry: Registry, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "adapter")
    digest = adapter_digest(adapter)
    uri = publish(adapter, f"oci://{registry.host}/team/house:v1").uri_with_digest
    registry.stop()
    cache = tmp_path / "cache"
    config = write_config(
        tmp_path / "gateway.json", [ConfiguredAdapter("house", str(cache / digest), "v1", digest, uri)]
    )
    fake, events = FakeVllm(), []
    fetcher = Fetcher(cache)
    assert not sync(config, fake, fetcher, events)
    assert "ArtifactUnavailable" in events[0]["error"] and fetcher.refused == {}
    assert fake.adapters == {}


def test_a_pool_pod_fetches_with_the_store_the_operator_chose_for_each_adapter_only(
    registry_auth: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ServingPool's sidecar has no credentials of its own: each adapter entry of its placement file
    names the store folder the operator granted to that adapter's namespace (planners/servingpool.py
    writes it), or none. Against a registry that refuses anonymous pulls, team-a's adapter (its namespace
    listed under the store) loads; team-b's, published to the same registry but under no store granted to
    team-b, is fetched anonymously and refused, even though the pod holds the store's Secret; a store
    whose Secret is not there yet (an optional volume: an empty folder) says so rather than pulling
    anonymously."""
    from tandem.api.v1alpha1.servingpool import AdapterStore
    from tandem.core.pools import PooledAdapter, store_for
    from tandem.platform.kubernetes.planners import servingpool
    from tandem.workloads.gateway.config import AdapterConfig

    stores_dir = tmp_path / "adapter-stores"
    monkeypatch.setattr(servingpool, "STORES_DIR", str(stores_dir))
    stores_dir.mkdir()
    secret_folder(stores_dir / "team-a", registry_auth)
    (stores_dir / "later").mkdir()
    store = AdapterStore.model_validate(
        {
            "name": "team-a",
            "prefix": f"oci://{registry_auth.host}/team-a",
            "credentialsSecretRef": {"name": "registry"},
            "namespaces": ["team-a"],
        }
    )
    later = store.model_copy(update={"name": "later", "prefix": f"oci://{registry_auth.host}/team-c"})
    cache = tmp_path / "cache"
    entries = []
    for namespace, seed in (("team-a", "a"), ("team-b", "b"), ("team-c", "c")):
        folder = make_adapter(tmp_path / f"src-{namespace}", seed=seed)
        digest = adapter_digest(folder)
        uri = publish(
            folder,
            f"oci://{registry_auth.host}/{namespace}/house:v1",
            registry_credentials(registry_auth),
        ).uri_with_digest
        stores = [store, later.model_copy(update={"namespaces": ["team-c"]})]
        chosen = store_for(namespace, uri, namespace, stores)
        config = AdapterConfig(name=f"{namespace}/ep/house", path=str(cache / digest), digest=digest, uri=uri)
        entries.append(servingpool._sync_entry(PooledAdapter(f"{namespace}/ep", "house", config, 8, chosen)))
    assert [e.get("credentials") for e in entries] == [
        str(stores_dir / "team-a"),
        None,
        str(stores_dir / "later"),
    ]

    path = tmp_path / "pod-0.json"
    path.write_text(json.dumps({"endpoint": {"namespace": "pools", "name": "smollm"}, "adapters": entries}))
    fake, events = FakeVllm(), []
    assert not sync(path, fake, Fetcher(cache), events)  # as the pool's sidecar runs: no --credentials
    assert set(fake.adapters) == {"team-a/ep/house"}
    errors = {e["adapter"]: e.get("error", "") for e in events if "adapter" in e}
    assert "ArtifactAccessDenied" in errors["team-b/ep/house"]
    assert "holds none of the store keys" in errors["team-c/ep/house"]
    assert sorted(p.name for p in cache.iterdir()) == [entries[0]["digest"]]


def registry_credentials(registry: Registry) -> Any:
    from tandem.workloads.artifacts import Credentials

    assert registry.credentials is not None
    return Credentials(username=registry.credentials[0], password=registry.credentials[1])
