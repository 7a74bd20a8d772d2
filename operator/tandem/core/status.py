"""What a workload's result means for its resource's status, the same in both platforms.

The figures use the API's status field names (`KnowledgeBaseStatus`, `AdapterTrainingStatus`), so
`tandem status` and `kubectl get` show the same fields for the same work. How the result is read (a
termination message in a cluster, the last JSON line locally) is the platform's business.
"""

from __future__ import annotations

from typing import Any

from tandem.api.v1alpha1 import AdapterTrainingStatus, KnowledgeBaseStatus

# Failed documents named in a status message; status.failedDocuments lists them all (as far as the
# workload's report holds them).
NAMED_FAILURES = 5


def _checked(model: type[KnowledgeBaseStatus] | type[AdapterTrainingStatus], figures: dict[str, Any]) -> None:
    """A figure that is not a field of the kind's status (or not of its type) is a bug here, not data."""
    parsed = model.model_validate(figures).model_dump(by_alias=True, exclude_unset=True, mode="json")
    unknown = set(figures) - set(parsed)
    if unknown:
        raise ValueError(f"not {model.__name__} fields: {sorted(unknown)}")


def indexed(report: dict[str, Any], revision: str, collection: str) -> tuple[str, dict[str, Any]]:
    """The Indexed message and the KnowledgeBase status figures of a finished ingest."""
    figures: dict[str, Any] = {"collection": collection, "indexedRevision": revision}
    message = f"collection {collection} holds revision {revision}"
    if "chunks" in report:
        failed = report.get("failed_documents") or []
        figures.update(
            documents=report["documents"],
            chunks=report["chunks"],
            bytes=report["bytes"],
            embeddingDimension=report["embedding_dimension"],
            failedDocuments=failed,
        )
        message = f"{report['documents']} documents, {report['chunks']} chunks at revision {revision}"
        failed_count = report.get("failed_document_count", len(failed))
        if failed_count:
            names = ", ".join(
                f"{f['source']}/{f['document']} ({f['reason']})" for f in failed[:NAMED_FAILURES]
            )
            message += f"; {failed_count} could not be indexed: {names}"
    _checked(KnowledgeBaseStatus, figures)
    return message, figures


def trained(report: dict[str, Any]) -> dict[str, Any]:
    """The final figures of a training run from its result (a run that found its adapter already trained,
    `skipped`, has no metrics of its own; its digest still names the adapter)."""
    figures: dict[str, Any] = {}
    if isinstance(report.get("adapterDigest"), str):
        figures["adapterDigest"] = report["adapterDigest"]
    # Where the run published the adapter (spec.output.publish). A platform clears an artifact an earlier
    # run published when this one has none: a status names only what this run made.
    artifact = report.get("artifact")
    if (
        isinstance(artifact, dict)
        and isinstance(artifact.get("uri"), str)
        and isinstance(artifact.get("manifestDigest"), str)
    ):
        figures["artifact"] = {"uri": artifact["uri"], "manifestDigest": artifact["manifestDigest"]}
    metrics = report.get("metrics")
    if isinstance(metrics, dict) and not report.get("skipped"):
        named = {
            "step": metrics.get("steps"),
            "totalSteps": metrics.get("total_steps"),
            "loss": metrics.get("loss"),
            "evalLoss": metrics.get("eval_loss"),
            "tokensPerSecond": metrics.get("tokens_per_second"),
        }
        figures.update({k: v for k, v in named.items() if v is not None})
        figures["etaSeconds"] = 0
    _checked(AdapterTrainingStatus, figures)
    return figures
