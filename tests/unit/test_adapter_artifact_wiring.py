"""Adapters that travel by digest, wired end to end (issue 16, item 2): a training publishes its adapter
and reports the artifact, its status carries it, an endpoint of any namespace resolves the training to
the artifact, the vLLM pod fetches it into an emptyDir cache (the adapter sync) and loads the cached
folder only once verified."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast

import pytest

from tandem.api.v1alpha1 import AdapterTrainingSpec, HybridEndpointSpec
from tandem.api.v1alpha1.adaptertraining import Publish
from tandem.core import status as core_status
from tandem.core.errors import PlanError
from tandem.core.references import ResolvedAdapter, trained_adapter, trained_location, uri_adapter
from tandem.platform.kubernetes.api import KubeApi
from tandem.platform.kubernetes.ownership import Owner
from tandem.platform.kubernetes.planners.adaptertraining import (
    PUBLISH_CREDENTIALS_DIR,
    plan_adapter_training,
)
from tandem.platform.kubernetes.planners.hybridendpoint import (
    ADAPTER_CACHE_DIR,
    ADAPTER_CREDENTIALS_DIR,
    plan_hybrid_endpoint,
)
from tandem.platform.kubernetes.resolution import Resolver
from tandem.platform.kubernetes.settings import OperatorSettings
from tandem.workloads import train
from tandem.workloads.adapter_sync import (
    ConfiguredAdapter,
    Fetcher,
    StoreUnavailable,
    SyncError,
    parse_adapters,
    sync_once,
)
from tandem.workloads.jobs import TrainingJob
from tandem.workloads.training.publish import PublishError, artifact_uri
from tests.manifests import example
from tests.unit.test_adapter_sync import URL, FakeVllm, adapter_folder

SETTINGS = OperatorSettings()
OWNER = Owner("tandem.dev/v1alpha1", "HybridEndpoint", "team", "assistant", "u")
DIGEST = "ab" * 32
ARTIFACT = "oci://registry.shared:5000/adapters/house@sha256:" + "cd" * 32


def endpoint(*adapters: dict[str, Any]) -> HybridEndpointSpec:
    raw = example("HybridEndpoint")["spec"]
    raw["adapters"] = list(adapters)
    raw["routes"] = [{"name": a["name"], "adapter": a["name"]} for a in adapters]
    return HybridEndpointSpec.model_validate(raw)


def pod(plan: Any) -> dict[str, Any]:
    deployment = next(
        c for c in plan.children if c["kind"] == "Deployment" and c["metadata"]["name"].endswith("vllm")
    )
    return cast(dict[str, Any], deployment["spec"]["template"]["spec"])


def containers(plan: Any) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod(plan)["containers"]}


def gateway_config(plan: Any) -> dict[str, Any]:
    config_map = next(c for c in plan.children if c["kind"] == "ConfigMap")
    return cast(dict[str, Any], json.loads(config_map["data"]["gateway.json"]))


# --- serving: the vLLM pod's cache, the adapter's path, the refusals --------------------------------------


def test_a_fetched_adapter_is_loaded_from_the_pods_cache_by_digest() -> None:
    spec = endpoint(
        {"name": "style", "uri": ARTIFACT, "digest": DIGEST, "credentialsSecretRef": {"name": "registry"}}
    )
    plan = plan_hybrid_endpoint(OWNER, spec, SETTINGS, [uri_adapter(spec.adapters[0])], [])
    served = plan.facts.adapters[0]
    assert served.path == f"{ADAPTER_CACHE_DIR}/{DIGEST}" and served.uri == ARTIFACT
    assert served.digest == DIGEST
    # the sidecar reads the same entry from the gateway configuration
    [entry] = gateway_config(plan)["adapters"]
    assert parse_adapters([entry]) == [ConfiguredAdapter("style", served.path, None, DIGEST, ARTIFACT)]

    volumes = {v["name"]: v for v in pod(plan)["volumes"]}
    assert volumes["adapter-cache"] == {"name": "adapter-cache", "emptyDir": {}}
    assert volumes["adapter-store"]["secret"]["secretName"] == "registry"
    vllm, sync = containers(plan)["vllm"], containers(plan)["adapter-sync"]
    vllm_mounts = {m["name"]: m for m in vllm["volumeMounts"]}
    sync_mounts = {m["name"]: m for m in sync["volumeMounts"]}
    assert vllm_mounts["adapter-cache"] == {
        "name": "adapter-cache",
        "mountPath": ADAPTER_CACHE_DIR,
        "readOnly": True,
    }
    assert sync_mounts["adapter-cache"] == {"name": "adapter-cache", "mountPath": ADAPTER_CACHE_DIR}
    assert "adapter-store" in sync_mounts and "adapter-store" not in vllm_mounts  # vLLM never sees them
    assert f"--cache-dir={ADAPTER_CACHE_DIR}" in sync["command"]
    assert f"--credentials={ADAPTER_CREDENTIALS_DIR}" in sync["command"]
    assert "--insecure" not in sync["command"]


def test_without_fetched_adapters_the_pod_has_no_cache() -> None:
    spec = endpoint({"name": "style", "uri": "pvc://adapters/style"})
    plan = plan_hybrid_endpoint(OWNER, spec, SETTINGS, [uri_adapter(spec.adapters[0])], [])
    assert "adapter-cache" not in {v["name"] for v in pod(plan)["volumes"]}
    assert not any(a.startswith("--cache-dir") for a in containers(plan)["adapter-sync"]["command"])
    assert plan.facts.adapters[0].uri is None


@pytest.mark.parametrize("uri", [ARTIFACT, "s3://adapters/house"])
def test_a_remote_adapter_without_a_digest_is_refused(uri: str) -> None:
    """The schema requires the digest; an adapter that reaches the planner without one (a training whose
    status lost it, an old object) is refused, never fetched unverified."""
    spec = endpoint({"name": "style", "uri": "pvc://adapters/style"})
    adapter = ResolvedAdapter("style", uri, 8, None)
    with pytest.raises(PlanError) as refused:
        plan_hybrid_endpoint(OWNER, spec, SETTINGS, [adapter], [])
    assert refused.value.reason == "AdapterDigestMissing"
    assert "spec.adapters[style]" in str(refused.value) and "digest" in str(refused.value)


def test_another_namespaces_training_is_servable_through_its_artifact() -> None:
    spec = endpoint({"name": "style", "adapterTrainingRef": {"name": "house", "namespace": "other"}})
    on_claim = trained_adapter(
        spec.adapters[0], "pvc://adapters/house-v1", 8, "v1", digest=DIGEST, namespace="other"
    )
    with pytest.raises(PlanError, match="cannot mount"):
        plan_hybrid_endpoint(OWNER, spec, SETTINGS, [on_claim], [])
    published = trained_adapter(spec.adapters[0], ARTIFACT, 8, "v1", digest=DIGEST, namespace="other")
    plan = plan_hybrid_endpoint(OWNER, spec, SETTINGS, [published], [])
    served = plan.facts.adapters[0]
    assert (served.path, served.uri, served.version) == (f"{ADAPTER_CACHE_DIR}/{DIGEST}", ARTIFACT, "v1")
    # nothing of the other namespace is mounted: the only claim is the base model's
    claims = [
        v["persistentVolumeClaim"]["claimName"] for v in pod(plan)["volumes"] if "persistentVolumeClaim" in v
    ]
    assert "adapters" not in claims


def test_adapters_fetched_with_different_store_settings_are_refused() -> None:
    spec = endpoint(
        {"name": "a", "uri": ARTIFACT, "digest": DIGEST, "credentialsSecretRef": {"name": "one"}},
        {"name": "b", "uri": "s3://adapters/b", "digest": DIGEST, "insecure": True},
    )
    with pytest.raises(PlanError) as refused:
        plan_hybrid_endpoint(OWNER, spec, SETTINGS, [uri_adapter(a) for a in spec.adapters], [])
    assert refused.value.reason == "AdapterStoresConflict"
    same = endpoint(
        {"name": "a", "uri": ARTIFACT, "digest": DIGEST, "insecure": True},
        {"name": "b", "uri": "s3://adapters/b", "digest": "ef" * 32, "insecure": True},
    )
    plan = plan_hybrid_endpoint(OWNER, same, SETTINGS, [uri_adapter(a) for a in same.adapters], [])
    assert "--insecure" in containers(plan)["adapter-sync"]["command"]


# --- resolution ----------------------------------------------------------------------------------------


class FakeApi:
    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects = {(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects}

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, namespace, name))

    async def list(self, api_version: str, kind: str, namespace: str, **_: Any) -> list[dict[str, Any]]:
        return [o for (k, ns, _n), o in self.objects.items() if k == kind and ns == namespace]


def training(namespace: str, status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "tandem.dev/v1alpha1",
        "kind": "AdapterTraining",
        "metadata": {"name": "house", "namespace": namespace},
        "spec": example("AdapterTraining")["spec"],
        "status": status,
    }


GRANT = {
    "apiVersion": "tandem.dev/v1alpha1",
    "kind": "ReferenceGrant",
    "metadata": {"name": "endpoints-may-serve", "namespace": "other"},
    "spec": {
        "from": [{"kind": "HybridEndpoint", "namespace": "team"}],
        "to": [{"kind": "AdapterTraining", "name": "house"}],
    },
}


def test_a_published_training_resolves_to_its_artifact_and_digest() -> None:
    status = {
        "adapterUri": "pvc://adapters/house-v1",
        "adapterDigest": DIGEST,
        "adapterVersion": "v1",
        "artifact": {"uri": ARTIFACT, "manifestDigest": "sha256:" + "cd" * 32},
    }
    spec = endpoint({"name": "style", "adapterTrainingRef": {"name": "house", "namespace": "other"}})
    resolver = Resolver(cast(KubeApi, FakeApi(training("other", status), GRANT)), "http://milvus:19530")
    [adapter], waiting = asyncio.run(resolver.adapters(OWNER, spec))
    assert not waiting
    assert (adapter.uri, adapter.digest, adapter.namespace, adapter.remote) == (
        ARTIFACT,
        DIGEST,
        "other",
        True,
    )
    plan_hybrid_endpoint(OWNER, spec, SETTINGS, [adapter], [])  # servable across namespaces

    unpublished = {k: v for k, v in status.items() if k != "artifact"}
    resolver = Resolver(cast(KubeApi, FakeApi(training("other", unpublished), GRANT)), "http://milvus:19530")
    [adapter], _ = asyncio.run(resolver.adapters(OWNER, spec))
    assert adapter.uri == "pvc://adapters/house-v1" and not adapter.remote


def test_an_artifact_without_the_adapters_digest_is_not_what_resolves() -> None:
    """A status with an artifact but no adapterDigest (nothing to verify it against): the folder."""
    figures = {"adapterUri": "pvc://a/house-v1", "artifact": {"uri": ARTIFACT, "manifestDigest": "sha256:x"}}
    assert trained_location(figures) == "pvc://a/house-v1"
    assert trained_location({}) is None


# --- training: publish, report, status --------------------------------------------------------------------


def test_an_oci_repository_without_a_tag_is_tagged_with_the_version() -> None:
    assert artifact_uri("oci://registry:5000/adapters/house", "v1") == "oci://registry:5000/adapters/house:v1"
    assert artifact_uri("oci://registry:5000/adapters/house:stable", "v1").endswith("house:stable")
    assert artifact_uri("s3://bucket/adapters/house", "v1") == "s3://bucket/adapters/house"


def job(tmp_path: Path, publish: dict[str, Any] | None) -> TrainingJob:
    spec = example("AdapterTraining")["spec"]
    if publish is not None:
        spec["output"]["publish"] = publish
    return TrainingJob(
        namespace="team",
        name="house",
        version="v1",
        base_model="/models/base",
        dataset=None,
        output=adapter_folder(tmp_path, "house-v1"),
        spec=AdapterTrainingSpec.model_validate(spec),
    )


def test_the_training_report_carries_the_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tandem.workloads.model_common import adapter_digest

    calls: list[tuple[Path, Publish, str, Path | None]] = []

    def publish_adapter(
        folder: Path, spec: Publish, version: str, credentials: Path | None
    ) -> dict[str, Any]:
        calls.append((folder, spec, version, credentials))
        return {"uri": ARTIFACT, "manifestDigest": "sha256:" + "cd" * 32, "adapterDigest": DIGEST}

    monkeypatch.setattr(train, "publish_adapter", publish_adapter)
    unpublished = job(tmp_path, None)
    assert train.published(unpublished, {"adapterDigest": "x"}, None) == {"adapterDigest": "x"}
    assert not calls

    with_store = job(tmp_path, {"uri": "oci://registry:5000/adapters/house"})
    recorded = adapter_digest(Path(with_store.output))
    outcome = train.published(with_store, {"adapterDigest": recorded, "skipped": True}, tmp_path / "creds")
    assert outcome["artifact"] == {"uri": ARTIFACT, "manifestDigest": "sha256:" + "cd" * 32}
    assert calls[0][2:] == ("v1", tmp_path / "creds")
    figures = core_status.trained(outcome)
    assert figures["artifact"] == {"uri": ARTIFACT, "manifestDigest": "sha256:" + "cd" * 32}

    # an adapter folder changed since training recorded its digest is not published
    with pytest.raises(PublishError) as refused:
        train.published(with_store, {"adapterDigest": "0" * 64}, None)
    assert refused.value.reason == "AdapterChanged" and len(calls) == 1


def test_a_store_that_does_not_answer_fails_the_attempt_for_a_retry(tmp_path: Path) -> None:
    """The training's result says why and exits 1 (retried); the adapter stays written."""
    from tandem.workloads.reporting import EXIT_RETRY

    spec = job(tmp_path, {"uri": "oci://127.0.0.1:1/adapters/house"})  # nothing listens on port 1
    with pytest.raises(PublishError) as failed:
        train.published(spec, {}, None)
    assert failed.value.reason == "ArtifactUnavailable" and failed.value.transient
    assert EXIT_RETRY == 1


def test_the_rayjob_mounts_the_publish_credentials_and_a_store_means_a_new_run() -> None:
    raw = example("AdapterTraining")["spec"]
    owner = Owner("tandem.dev/v1alpha1", "AdapterTraining", "team", "house-style", "u")
    before = plan_adapter_training(owner, AdapterTrainingSpec.model_validate(raw), SETTINGS)
    raw["output"]["publish"] = {
        "uri": "oci://registry:5000/adapters/house",
        "credentialsSecretRef": {"name": "reg"},
    }
    plan = plan_adapter_training(owner, AdapterTrainingSpec.model_validate(raw), SETTINGS)
    assert plan.facts.revision != before.facts.revision  # found trained, then published
    rayjob = plan.work
    assert rayjob is not None
    assert f"--publish-credentials={PUBLISH_CREDENTIALS_DIR}" in rayjob["spec"]["entrypoint"]
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert {"name": "publish-credentials", "secret": {"secretName": "reg", "defaultMode": 0o440}} in head[
        "volumes"
    ]
    assert any(
        m["mountPath"] == PUBLISH_CREDENTIALS_DIR for c in head["containers"] for m in c["volumeMounts"]
    )


def test_a_run_without_a_store_clears_the_last_runs_artifact() -> None:
    from tandem.platform.kubernetes.status import adapter_training_status
    from tests.unit.test_status import TRAINING, at_plan, live, rayjob

    work = rayjob(TRAINING, jobStatus="SUCCEEDED")
    old = {"rayJob": TRAINING, "artifact": {"uri": ARTIFACT, "manifestDigest": "sha256:x"}}
    _, figures = adapter_training_status(at_plan(), live(work), old, {"adapterDigest": DIGEST})
    assert figures["artifact"] is None
    report = {"adapterDigest": DIGEST, "artifact": {"uri": ARTIFACT, "manifestDigest": "sha256:y"}}
    _, figures = adapter_training_status(at_plan(), live(work), old, report)
    assert figures["artifact"] == {"uri": ARTIFACT, "manifestDigest": "sha256:y"}


# --- the adapter sync ---------------------------------------------------------------------------------------


class StubFetcher(Fetcher):
    """Fetches by copying a prepared folder into the cache, or fails as told."""

    def __init__(self, cache: Path, sources: dict[str, Path], failing: dict[str, SyncError]) -> None:
        super().__init__(cache)
        self.sources, self.failing = sources, failing
        self.asked: list[str] = []
        self.stores: list[tuple[Path | None, bool]] = []

    def fetch(
        self, uri: str, digest: str, credentials: Path | None = None, *, insecure: bool = False
    ) -> Path:
        import shutil

        self.asked.append(uri)
        self.stores.append((credentials, insecure))
        if uri in self.failing:
            raise self.failing[uri]
        target = self.cache_dir / digest
        if not target.exists():
            shutil.copytree(self.sources[uri], target)
        return target


def test_the_sync_fetches_before_loading_and_one_failing_store_does_not_stop_the_others(
    tmp_path: Path,
) -> None:
    from tandem.workloads.model_common import adapter_digest

    source = Path(adapter_folder(tmp_path / "store", "good"))
    good = adapter_digest(source)
    cache = tmp_path / "cache"
    fetcher = StubFetcher(
        cache,
        {"oci://r/good": source},
        {"oci://r/down": StoreUnavailable("oci://r/down: ArtifactUnavailable")},
    )
    adapters = [
        ConfiguredAdapter("good", str(cache / good), "v1", good, "oci://r/good"),
        ConfiguredAdapter("down", str(cache / DIGEST), "v1", DIGEST, "oci://r/down"),
        ConfiguredAdapter("bare", str(cache / DIGEST), None, None, "oci://r/bare"),  # no digest: not fetched
    ]
    fake, events = FakeVllm(), []
    with fake.admin() as admin, pytest.raises(SyncError, match="2 adapter"):
        sync_once(URL, adapters, admin=admin, fetcher=fetcher, report=events.append)
    assert fake.adapters == {"good": str(cache / good)}
    assert fetcher.asked == ["oci://r/down", "oci://r/good"]  # never the one without a digest
    failed = {e["adapter"]: e["error"] for e in events if e["event"] == "adapter-load-failed"}
    assert "ArtifactUnavailable" in failed["down"] and "no digest" in failed["bare"]

    # without a cache (a sidecar started without --cache-dir) nothing is fetched
    fresh = FakeVllm()
    with fresh.admin() as admin, pytest.raises(SyncError, match="no adapter cache"):
        sync_once(URL, adapters[:1], admin=admin)
    assert fresh.adapters == {}


# --- local mode ---------------------------------------------------------------------------------------------


def test_tandem_up_fetches_remote_adapters_with_the_secret_among_the_manifests(tmp_path: Path) -> None:
    from tandem.platform.local.manifests import Manifests, Resource
    from tandem.platform.local.references import fetcher_for
    from tandem.platform.local.runner import WorkFailed

    spec = endpoint(
        {"name": "a", "uri": ARTIFACT, "digest": DIGEST, "credentialsSecretRef": {"name": "registry"}},
        {"name": "b", "uri": "pvc://adapters/b"},
    )
    he = Resource("HybridEndpoint", "team", "assistant", spec, tmp_path / "he.yaml")
    manifests = Manifests(secrets={("team", "registry"): {"username": "u", "password": "p"}})
    adapters = [uri_adapter(a) for a in spec.adapters]
    fetcher = fetcher_for(tmp_path, manifests, he, adapters)
    assert fetcher is not None and fetcher.credentials is not None
    assert (fetcher.credentials / "password").read_text() == "p"
    assert oct((fetcher.credentials / "password").stat().st_mode & 0o777) == "0o600"
    assert fetcher_for(tmp_path, manifests, he, adapters[1:]) is None  # nothing fetched, no cache

    with pytest.raises(WorkFailed) as missing:
        fetcher_for(tmp_path, Manifests(), he, adapters)
    assert missing.value.reason == "SecretNotFound"
    with pytest.raises(WorkFailed) as undigested:
        fetcher_for(tmp_path, manifests, he, [ResolvedAdapter("a", ARTIFACT, 8, None)])
    assert undigested.value.reason == "AdapterDigestMissing"


def test_the_cache_keeps_only_the_configured_versions_once_they_serve(tmp_path: Path) -> None:
    from tandem.workloads.model_common import adapter_digest

    v1 = Path(adapter_folder(tmp_path / "store", "v1"))
    v2 = Path(adapter_folder(tmp_path / "store", "v2"))
    (v2 / "adapter_model.safetensors").write_bytes(b"newer weights")
    d1, d2 = adapter_digest(v1), adapter_digest(v2)
    cache = tmp_path / "cache"
    fetcher = StubFetcher(cache, {"oci://r/h@v1": v1, "oci://r/h@v2": v2}, {})
    fake, events = FakeVllm(), []
    with fake.admin() as admin:
        sync_once(
            URL,
            [ConfiguredAdapter("h", str(cache / d1), "v1", d1, "oci://r/h@v1")],
            admin=admin,
            fetcher=fetcher,
        )
        # v2 fails to come in: v1 keeps serving and keeps its folder
        fetcher.failing["oci://r/h@v2"] = StoreUnavailable("down")
        v2_config = [ConfiguredAdapter("h", str(cache / d2), "v2", d2, "oci://r/h@v2")]
        with pytest.raises(SyncError):
            sync_once(URL, v2_config, admin=admin, fetcher=fetcher)
        assert fake.adapters == {"h": str(cache / d1)} and (cache / d1).is_dir()
        del fetcher.failing["oci://r/h@v2"]
        sync_once(URL, v2_config, admin=admin, fetcher=fetcher, report=events.append)
    assert fake.adapters == {"h": str(cache / d2)}
    assert sorted(p.name for p in cache.iterdir()) == [d2]
    assert {"component": "adapter-sync", "event": "cache-pruned", "digest": d1} in events
