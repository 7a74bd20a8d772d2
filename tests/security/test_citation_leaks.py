"""Issue 15, item 14 (the citation part): a citation shows where a passage came from without showing the
machine's file system or the credentials of a URL.

Citations are built from what ingest stores per chunk (`uri`, `doc_id`, `source`): a hostile or merely
careless source must not put into them a directory source's absolute path (a home folder, a mount
point), a URL's user-info (https://user:password@host/) or its query and fragment (?token=,
X-Amz-Signature=, sig=...). Each document is ingested here (the real source readers and indexer, a stand-in
store), turned into a passage as the store's search turns a hit into one, and into the citation the
gateway returns; the secret must appear nowhere in it. Document ids stay what they were wherever they hold
no secret, so re-indexing after the change re-writes, never duplicates.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tandem.api.v1alpha1 import KnowledgeBaseSpec
from tandem.workloads.gateway.prompt import Cited, citation
from tandem.workloads.knowledge import sources
from tandem.workloads.knowledge.indexer import Indexer, IngestResult
from tandem.workloads.knowledge.sources import read_source
from tandem.workloads.knowledge.store import _passage
from tests.security.knowledge_fakes import FakeEmbedder, FakeStore

TRAVEL = b"# Travel\n\nBook trains for trips under four hours. Flights need a manager's approval."
CAFE = b"# Cafe\n\nThe cafe opens at eight and closes at three. Coffee is free on Fridays."
PAGES = {"/travel.md": TRAVEL, "/cafe.md": CAFE, "/report": b"Quarterly report: revenue grew."}
SECRETS = ("alice", "hunter2", "s3cr3t-t0ken", "SIGNATURE0123", "frag-token")


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = PAGES.get(self.path.split("?")[0])
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def web() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def ingest(store: FakeStore, raw_sources: list[dict[str, Any]], locations: dict[str, str]) -> IngestResult:
    spec = KnowledgeBaseSpec.model_validate({"sources": raw_sources, "chunking": {"size": 16, "overlap": 2}})
    reads = [read_source(s, locations.get(s.name)) for s in spec.sources]
    return Indexer(spec, store, FakeEmbedder()).run(reads)


def citations(store: FakeStore) -> list[dict[str, Any]]:
    """What the gateway returns for each stored chunk, built as a search hit becomes a citation."""
    return [
        citation(Cited(1, "handbook", _passage({"id": row["id"], "entity": row})), {1})
        for row in store.rows.values()
    ]


@pytest.fixture()
def handbook(tmp_path: Path) -> Path:
    # A directory source in local mode names an absolute path: here one that says whose machine it is.
    root = tmp_path / "home" / "alice-private" / "handbook"
    (root / "policies").mkdir(parents=True)
    (root / "policies" / "travel.md").write_bytes(TRAVEL)
    (root / "cafe.md").write_bytes(CAFE)
    return root


def hostile_sources(web: str, handbook: Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    urls = [
        f"http://alice:hunter2@{web}/travel.md",
        f"http://{web}/cafe.md?token=s3cr3t-t0ken&X-Amz-Signature=SIGNATURE0123#frag-token",
        f"http://{web}/report?sig=SIGNATURE0123",
    ]
    return (
        [
            {"name": "wiki", "directory": {"path": str(handbook)}},
            {"name": "web", "http": {"urls": urls, "allowPrivateNetworks": True}},
        ],
        {"wiki": str(handbook)},
    )


def test_citations_show_no_local_path_and_no_url_credentials(web: str, handbook: Path) -> None:
    store = FakeStore()
    raw, locations = hostile_sources(web, handbook)
    result = ingest(store, raw, locations)
    assert result.added == 5 and not result.failed_documents, result
    shown = citations(store)
    assert len(shown) == len(store.rows) > 0
    for cited in shown:
        text = json.dumps(cited)
        assert str(handbook.parent) not in text and "alice-private" not in text, text
        assert "file://" not in text, text
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} in {text}"
    uris = {c["uri"] for c in shown}
    # What a citation still says: the source, the path within it, the host and path of the URL.
    assert {"directory://wiki/policies/travel.md", "directory://wiki/cafe.md"} <= uris
    assert {f"http://{web}/travel.md", f"http://{web}/cafe.md", f"http://{web}/report"} <= uris


def test_ids_without_secrets_stay_as_they_were(web: str, handbook: Path) -> None:
    """Ids are what incremental re-indexing matches stored documents by: only ids that held a secret
    change (a directory document is still its relative path, a plain URL still itself)."""
    store = FakeStore()
    plain = f"http://{web}/cafe.md"
    raw = [
        {"name": "wiki", "directory": {"path": str(handbook)}},
        {"name": "web", "http": {"urls": [plain], "allowPrivateNetworks": True}},
    ]
    ingest(store, raw, {"wiki": str(handbook)})
    assert store.doc_ids() == {"wiki/policies/travel.md", "wiki/cafe.md", f"web/{plain}"}
    again = ingest(store, raw, {"wiki": str(handbook)})
    assert again.unchanged == 3 and again.added == again.updated == again.removed == 0


def test_urls_differing_only_in_secrets_stay_distinct_documents(web: str) -> None:
    store = FakeStore()
    urls = [
        f"http://{web}/report",
        f"http://{web}/report?sig=SIGNATURE0123",
        f"http://{web}/report?page=2&token=s3cr3t-t0ken",
    ]
    first = ingest(store, [{"name": "web", "http": {"urls": urls, "allowPrivateNetworks": True}}], {})
    assert first.added == 3
    base = f"web/http://{web}/report"
    assert store.doc_ids() == {base, f"{base}#1", f"{base}#2"}
    again = ingest(store, [{"name": "web", "http": {"urls": urls, "allowPrivateNetworks": True}}], {})
    assert again.unchanged == 3


def test_reindexing_documents_stored_under_old_ids_does_not_duplicate(
    web: str, handbook: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collection indexed before the change holds URL ids with their secrets and absolute file:// uris.
    The next run stores each document once: new ids replace the old (which the source no longer lists,
    so they are removed), changed uris re-write the document under its unchanged id."""
    raw, locations = hostile_sources(web, handbook)
    store = FakeStore()
    with monkeypatch.context() as old:
        old.setattr(sources, "_http_ids", lambda urls: {u: u for u in urls})
        old.setattr(sources, "shown_url", lambda url: url)
        old.setattr(sources, "_directory_uri", lambda source, rel, path: path.resolve().as_uri())
        ingest(store, raw, locations)
    assert any("hunter2" in d for d in store.doc_ids())  # the old behaviour, recorded
    result = ingest(store, raw, locations)
    # The three URL ids held secrets: removed, and their documents added under the new ids; the two
    # directory documents keep their ids and are re-written for their new uri.
    assert (result.added, result.updated, result.removed) == (3, 2, 3), result
    ids = [r["doc_id"] for r in store.rows.values()]
    assert len(set(ids)) == 5
    assert not [i for i in ids if any(s in i for s in SECRETS)]
    for doc_id in set(ids):
        chunks = store.chunks_of(doc_id)
        assert len({c["doc_hash"] for c in chunks}) == 1, f"{doc_id} stored twice"
        assert len(chunks) == chunks[0]["chunk_count"], f"{doc_id}: {len(chunks)} chunks"
    for cited in citations(store):
        assert "alice" not in json.dumps(cited)
