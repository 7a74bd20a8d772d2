"""Adapters that cannot be served as declared are refused, and vLLM loads only the adapter its training
wrote (issue 15, item 12)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tandem.api.v1alpha1 import HybridEndpointSpec
from tandem.core.errors import PlanError
from tandem.core.references import trained_adapter, uri_adapter
from tandem.platform.kubernetes.ownership import Owner
from tandem.platform.kubernetes.planners.hybridendpoint import plan_hybrid_endpoint
from tandem.platform.kubernetes.settings import OperatorSettings
from tandem.workloads.adapter_sync import ConfiguredAdapter, SyncError, sync_once
from tandem.workloads.model_common import adapter_digest
from tests.manifests import example
from tests.unit.test_adapter_sync import URL, FakeVllm, adapter_folder

OWNER = Owner("tandem.dev/v1alpha1", "HybridEndpoint", "team", "assistant", "u")


def endpoint(adapter: dict[str, Any]) -> HybridEndpointSpec:
    raw = example("HybridEndpoint")["spec"]
    raw["adapters"] = [adapter]
    return HybridEndpointSpec.model_validate(raw)


# s3:// and oci:// adapters are fetched by digest (tests/unit/test_adapter_artifact_wiring.py).
@pytest.mark.parametrize("uri", ["https://example.com/style.tar", "hf://someone/style"])
def test_an_adapter_uri_nothing_fetches_is_refused_with_the_fix(uri: str) -> None:
    """Before: these passed the schema and reached vLLM as --lora paths it cannot read (Deploying forever)."""
    spec = endpoint({"name": "style", "uri": uri, "rank": 8})
    with pytest.raises(PlanError) as refused:
        plan_hybrid_endpoint(OWNER, spec, OperatorSettings(), [uri_adapter(spec.adapters[0])], [])
    assert refused.value.reason == "AdapterSourceNotSupported"
    assert "spec.adapters[style]" in str(refused.value) and "pvc://" in str(refused.value)


def test_a_trained_adapter_on_another_namespaces_claim_is_refused() -> None:
    """Before: mounted as a claim of the endpoint's namespace: another team's data, or a Pending pod."""
    spec = endpoint({"name": "style", "adapterTrainingRef": {"name": "house", "namespace": "other"}})
    other = trained_adapter(
        spec.adapters[0], "pvc://adapters/house-v1", 8, "v1", digest="d", namespace="other"
    )
    with pytest.raises(PlanError) as refused:
        plan_hybrid_endpoint(OWNER, spec, OperatorSettings(), [other], [])
    assert refused.value.reason == "AdapterInAnotherNamespace"
    same = trained_adapter(spec.adapters[0], "pvc://adapters/house-v1", 8, "v1", digest="d", namespace="team")
    plan = plan_hybrid_endpoint(OWNER, spec, OperatorSettings(), [same], [])
    assert plan.facts.adapters[0].digest == "d"  # the sidecar is told what to check


def test_the_endpoints_registry_secret_is_not_sent_where_another_namespace_says() -> None:
    """A granted AdapterTraining of another namespace names its store in its status: before, the endpoint's
    credentialsSecretRef went to the sidecar and so to whatever host that namespace wrote there."""
    digest = "e" * 64
    ref = {"name": "house", "namespace": "other"}
    spec = endpoint({"name": "style", "adapterTrainingRef": ref, "credentialsSecretRef": {"name": "regcred"}})
    artifact = "oci://collector.attacker.example/loot@sha256:" + "f" * 64
    hostile = trained_adapter(spec.adapters[0], artifact, 8, "v1", digest=digest, namespace="other")
    assert hostile.credentials == "regcred"
    with pytest.raises(PlanError) as refused:
        plan_hybrid_endpoint(OWNER, spec, OperatorSettings(), [hostile], [])
    assert refused.value.reason == "AdapterCredentialsNotSent" and "spec.adapters[style]" in str(
        refused.value
    )
    # The same training in the endpoint's own namespace: one trust domain, the Secret is used.
    same = trained_adapter(spec.adapters[0], artifact, 8, "v1", digest=digest, namespace="team")
    vllm = next(
        c
        for c in plan_hybrid_endpoint(OWNER, spec, OperatorSettings(), [same], []).children
        if c["kind"] == "Deployment" and c["metadata"]["name"].endswith("-vllm")
    )
    sync = vllm["spec"]["template"]["spec"]["containers"][1]
    assert any(a.startswith("--credentials=") for a in sync["command"])


def test_an_adapter_folder_that_is_not_what_training_wrote_is_not_loaded(tmp_path: Path) -> None:
    """Before: nothing checked an adapter's digest; a folder rewritten on the claim was served."""
    folder = Path(adapter_folder(tmp_path, "style-v1"))
    (folder / "adapter_model.safetensors").write_bytes(b"trained weights")
    recorded = adapter_digest(folder)
    (folder / "tandem-manifest.json").write_text("{}")  # written after the digest: not part of it
    assert adapter_digest(folder) == recorded
    fake = FakeVllm()
    with fake.admin() as admin:
        sync_once(URL, [ConfiguredAdapter("style", str(folder), "v1", recorded)], admin=admin)
        assert fake.adapters == {"style": str(folder)}

    (folder / "adapter_model.safetensors").write_bytes(b"tampered weights")
    fresh = FakeVllm()
    events: list[dict[str, Any]] = []
    with fresh.admin() as admin, pytest.raises(SyncError, match="not the adapter its training wrote"):
        sync_once(
            URL, [ConfiguredAdapter("style", str(folder), "v1", recorded)], admin=admin, report=events.append
        )
    assert fresh.adapters == {} and events[0]["event"] == "adapter-load-failed"
