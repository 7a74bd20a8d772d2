"""The decisions both platforms take from tandem.core: made once, so local mode and the operator agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from tandem.api.v1alpha1 import AdapterTrainingStatus, HybridEndpointSpec, KnowledgeBaseStatus
from tandem.core import status
from tandem.core.references import DEFAULT_URI_ADAPTER_RANK, uri_adapter
from tandem.platform.kubernetes.ownership import Owner
from tandem.platform.kubernetes.planners.hybridendpoint import plan_hybrid_endpoint
from tandem.platform.kubernetes.settings import OperatorSettings
from tandem.platform.local.manifests import Resource
from tandem.platform.local.platform import LocalPlatform
from tests.manifests import example


def endpoint_with_uri_adapter() -> HybridEndpointSpec:
    raw = example("HybridEndpoint")["spec"]
    raw["adapters"] = [{"name": "style", "uri": "pvc://adapters/style-v3"}]  # no rank given
    return HybridEndpointSpec.model_validate(raw)


def test_an_adapter_served_from_a_uri_gets_the_same_rank_in_both_platforms(tmp_path: Path) -> None:
    """It was 16 in the cluster and 8 locally: a rank-16 adapter from a URI could not load in `tandem up`."""
    spec = endpoint_with_uri_adapter()
    local = LocalPlatform(tmp_path)
    [resolved] = local.resolve_adapters(Resource("HybridEndpoint", "team", "he", spec, tmp_path / "he.yaml"))
    assert resolved.rank == DEFAULT_URI_ADAPTER_RANK == 16
    in_cluster = uri_adapter(spec.adapters[0])  # as the operator's resolution takes it
    assert in_cluster.rank == resolved.rank
    owner = Owner("tandem.dev/v1alpha1", "HybridEndpoint", "team", "he", "u")
    plan = plan_hybrid_endpoint(owner, spec, OperatorSettings(), [in_cluster], [])
    vllm = next(c for c in plan.children if c["metadata"]["name"] == "he-vllm" and c["kind"] == "Deployment")
    assert "--max-lora-rank=16" in vllm["spec"]["template"]["spec"]["containers"][0]["command"]


def test_an_ingest_result_means_the_same_status_in_both_platforms() -> None:
    """failedDocuments was a list in the cluster and a count locally; now both take the core's figures."""
    report = {
        "documents": 3,
        "chunks": 9,
        "bytes": 1200,
        "embedding_dimension": 384,
        "failed_documents": [{"source": "wiki", "document": "a.md", "reason": "HTTP 404"}],
        "failed_document_count": 1,
    }
    message, figures = status.indexed(report, "r1", "tandem_team__kb")
    parsed = KnowledgeBaseStatus.model_validate(figures)
    assert parsed.failed_documents[0].document == "a.md" and parsed.indexed_revision == "r1"
    assert message == "3 documents, 9 chunks at revision r1; 1 could not be indexed: wiki/a.md (HTTP 404)"


def test_status_figures_are_fields_of_the_kinds_status() -> None:
    trained = status.trained({"adapterDigest": "sha256:x", "metrics": {"steps": 4, "loss": 1.5}})
    assert AdapterTrainingStatus.model_validate(trained).step == 4 and trained["etaSeconds"] == 0
    assert status.trained({"metrics": {"steps": 4}, "skipped": True}) == {}
    with pytest.raises(ValueError, match="not KnowledgeBaseStatus fields"):
        status._checked(KnowledgeBaseStatus, {"collection": "c", "milvusUri": "http://m"})
