"""Results that reach status through a termination message: fitted to 4 KiB, relayed from a Ray job."""

from __future__ import annotations

import json

import pytest

from tandem.workloads.knowledge.documents import FailedDocument
from tandem.workloads.knowledge.indexer import IngestResult
from tandem.workloads.ray_submit import ResultLines, outcome_of
from tandem.workloads.reporting import RESULT_BYTES, TERMINATION_BYTES


def test_many_failed_documents_are_cut_to_fit_and_still_counted() -> None:
    result = IngestResult("c", "r", documents=3, chunks=9)
    result.failed_documents = [
        FailedDocument("wiki", f"page-{i:04}.pdf", "not a PDF" * 5) for i in range(300)
    ]
    text = result.to_json(limit=RESULT_BYTES)
    line = json.dumps({"result": json.loads(text)})
    assert len(line.encode()) <= TERMINATION_BYTES
    data = json.loads(text)
    assert data["failed_document_count"] == 300
    assert data["failedDocumentsTruncated"] is True
    assert 0 < len(data["failed_documents"]) < 300
    assert data["chunks"] == 9


def test_a_short_result_is_not_cut() -> None:
    result = IngestResult("c", "r", documents=1, chunks=2)
    result.failed_documents = [FailedDocument("wiki", "a.pdf", "broken")]
    data = json.loads(result.to_json(limit=RESULT_BYTES))
    assert data["failed_document_count"] == 1 and len(data["failed_documents"]) == 1
    assert "failedDocumentsTruncated" not in data


def test_result_lines_found_across_pieces_newest_wins() -> None:
    lines = ResultLines()
    log = (
        '{"stage": "read", "documents": 2}\n'
        "(RayTrainWorker pid=7) noise {not json}\n"
        '{"result": {"chunks": 1}}\n'
        "Traceback (most recent call last):\n"
        '{"result": {"chunks": 5, "documents": 2}}\n'
    )
    for start in range(0, len(log), 7):  # the log stream arrives in arbitrary pieces
        lines.feed(log[start : start + 7])
    lines.close()
    assert lines.result == {"chunks": 5, "documents": 2}


def test_a_last_line_without_newline_counts_only_when_complete() -> None:
    lines = ResultLines()
    lines.feed('{"result": {"chunks": 3}}\n{"result": {"chun')
    lines.close()
    assert lines.result == {"chunks": 3}  # the cut line is not JSON: the complete one stays


@pytest.mark.parametrize(
    ("status", "message", "result", "expected"),
    [
        ("SUCCEEDED", "", {"chunks": 4}, {"chunks": 4}),
        ("FAILED", "exit 2", {"error": "EmbeddingModelUnavailable", "message": "m"}, None),
        ("SUCCEEDED", "", None, "NoResult"),
        ("FAILED", "Job entrypoint command failed with exit code 1", None, "RayJobFailed"),
        ("STOPPED", "", None, "RayJobStopped"),
    ],
)
def test_outcome_prefers_the_workloads_own_result(
    status: str, message: str, result: dict[str, object] | None, expected: object
) -> None:
    outcome = outcome_of(status, message, result)
    if result is not None:
        assert outcome == result
    else:
        assert outcome["error"] == expected
        assert outcome["message"]
        if message:
            assert message in outcome["message"]
