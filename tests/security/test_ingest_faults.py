"""Issue 15, item 9: a document that could not be read keeps its chunks, on every source.

A re-index deletes the documents a source no longer has. A document that is still there but could not
be read this time (an S3 503, an HTTP 503, an I/O error, a folder that cannot be listed) must not count as
gone: it is reported as failed and what was indexed of it stays searchable. The bug this holds: with an S3
prefix, a failed read was recorded under the object's full key while documents are named without the
prefix, so one transient error deleted the document's chunks.
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tandem.api.v1alpha1 import KnowledgeBaseSpec
from tandem.workloads.knowledge.indexer import Indexer, IngestResult
from tandem.workloads.knowledge.sources import read_source
from tests.security.knowledge_fakes import FakeEmbedder, FakeStore

TRAVEL = b"# Travel\n\nBook trains for trips under four hours. Flights need a manager's approval."
CAFE = b"# Cafe\n\nThe cafe opens at eight and closes at three. Coffee is free on Fridays."


def ingest(
    store: FakeStore, sources: list[dict[str, Any]], locations: dict[str, str] | None = None
) -> IngestResult:
    spec = KnowledgeBaseSpec.model_validate({"sources": sources, "chunking": {"size": 16, "overlap": 2}})
    reads = [read_source(s, (locations or {}).get(s.name)) for s in spec.sources]
    return Indexer(spec, store, FakeEmbedder()).run(reads)


def assert_kept(store: FakeStore, result: IngestResult, doc_id: str, chunks_before: int) -> None:
    """The unreadable document is reported and nothing of it is deleted."""
    failed = [f"{f.source}/{f.document}" for f in result.failed_documents]
    assert result.removed == 0, f"removed {result.removed} document(s); failures recorded as {failed}"
    left = len(store.chunks_of(doc_id))
    assert left == chunks_before > 0, f"{doc_id}: {left} chunks left of {chunks_before}; failures: {failed}"
    assert result.failed_documents, "the unreadable document is not reported"


# -- S3 ------------------------------------------------------------------------------------------------


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


@pytest.fixture()
def bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[set[str]], None]]:
    """A moto bucket with two objects under the prefix `wiki/`; calling the fixture's value makes
    GetObject of the given keys answer 503 SlowDown (S3's "try later") from then on."""
    from botocore.awsrequest import AWSResponse
    from moto import mock_aws

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "test")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # botocore retries 503s: once is enough for a test
    failing: set[str] = set()
    original = boto3.client

    def client(*args: Any, **kwargs: Any) -> Any:
        made = original(*args, **kwargs)

        def slow_down(request: Any, **_: Any) -> AWSResponse | None:
            path = request.url.split("?")[0]
            if request.method == "GET" and any(path.endswith(f"/{key}") for key in failing):
                body = (
                    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                )
                return AWSResponse(request.url, 503, {}, _Raw(body))
            return None

        made.meta.events.register_first("before-send.s3.GetObject", slow_down)
        return made

    with mock_aws():
        s3 = original("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="handbook")
        s3.put_object(Bucket="handbook", Key="wiki/travel.md", Body=TRAVEL)
        s3.put_object(Bucket="handbook", Key="wiki/cafe.md", Body=CAFE)
        monkeypatch.setattr(boto3, "client", client)
        yield failing.update


def test_a_transient_s3_error_under_a_prefix_keeps_the_documents_chunks(
    bucket: Callable[[set[str]], None],
) -> None:
    store = FakeStore()
    source = {"name": "docs", "s3": {"bucket": "handbook", "prefix": "wiki/", "region": "us-east-1"}}
    first = ingest(store, [source])
    assert (first.added, first.failed_documents) == (2, [])
    before = len(store.chunks_of("docs/travel.md"))

    bucket({"wiki/travel.md"})  # S3 answers 503 SlowDown for this object on the next run
    second = ingest(store, [source])
    assert_kept(store, second, "docs/travel.md", before)
    [failure] = second.failed_documents
    assert failure.document == "travel.md" and "SlowDown" in failure.reason
    assert second.unchanged == 1  # the other object was read and found unchanged


# -- HTTP ----------------------------------------------------------------------------------------------

_unavailable: set[str] = set()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = {"/travel.md": TRAVEL, "/cafe.md": CAFE}.get(self.path)
        if body is None or self.path in _unavailable:
            self.send_response(404 if body is None else 503)
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
    _unavailable.clear()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_an_http_503_keeps_the_documents_chunks(web: str) -> None:
    store = FakeStore()
    source = {
        "name": "web",
        "http": {"urls": [f"{web}/travel.md", f"{web}/cafe.md"], "allowPrivateNetworks": True},
    }
    assert ingest(store, [source]).added == 2
    doc_id = f"web/{web}/travel.md"
    before = len(store.chunks_of(doc_id))
    _unavailable.add("/travel.md")
    assert_kept(store, ingest(store, [source]), doc_id, before)


# -- directory and ConfigMap ---------------------------------------------------------------------------


@contextlib.contextmanager
def io_error_on(monkeypatch: pytest.MonkeyPatch, name: str) -> Iterator[None]:
    """Opening a file called `name` fails with EIO, as a flaky disk or network filesystem does."""
    real_open = os.open

    def flaky(path: Any, *args: Any, **kwargs: Any) -> int:
        if os.fspath(path).endswith(f"/{name}"):
            raise OSError(errno.EIO, "Input/output error", os.fspath(path))
        return real_open(path, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(os, "open", flaky)
        yield


@contextlib.contextmanager
def unlistable(monkeypatch: pytest.MonkeyPatch, folder: Path) -> Iterator[None]:
    """Listing `folder` fails (os.scandir and os.listdir), as an unreadable or vanishing mount does."""
    real_scandir, real_listdir = os.scandir, os.listdir

    def check(path: Any) -> None:
        if Path(os.fspath(path)) == folder:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))

    def scandir(path: Any = ".") -> Any:
        check(path)
        return real_scandir(path)

    def listdir(path: Any = ".") -> list[str]:
        check(path)
        return real_listdir(path)

    with monkeypatch.context() as m:
        m.setattr(os, "scandir", scandir)
        m.setattr(os, "listdir", listdir)
        yield


def handbook(root: Path) -> Path:
    (root / "policies").mkdir(parents=True)
    (root / "policies" / "travel.md").write_bytes(TRAVEL)
    (root / "cafe.md").write_bytes(CAFE)
    return root


def test_a_directory_file_that_cannot_be_read_keeps_its_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FakeStore()
    source = {"name": "wiki", "directory": {"path": str(handbook(tmp_path / "docs"))}}
    assert ingest(store, [source]).added == 2
    before = len(store.chunks_of("wiki/policies/travel.md"))
    with io_error_on(monkeypatch, "travel.md"):
        result = ingest(store, [source])
    assert_kept(store, result, "wiki/policies/travel.md", before)


def test_a_directory_folder_that_cannot_be_listed_keeps_its_documents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """os.walk skips a folder it cannot list unless asked to report it: its files then looked deleted."""
    store = FakeStore()
    docs = handbook(tmp_path / "docs")
    source = {"name": "wiki", "directory": {"path": str(docs)}}
    assert ingest(store, [source]).added == 2
    before = len(store.chunks_of("wiki/policies/travel.md"))
    with unlistable(monkeypatch, docs / "policies"):
        result = ingest(store, [source])
    assert_kept(store, result, "wiki/policies/travel.md", before)
    assert any("policies" in f.reason for f in result.failed_documents), result.failed_documents


def config_map(root: Path) -> Path:
    """A mounted ConfigMap as the kubelet lays it out: keys are links into `..data`."""
    data = root / "..2026_01_01_00_00_00.000"
    data.mkdir(parents=True)
    (root / "..data").symlink_to(data.name)
    for key, body in (("travel.md", TRAVEL), ("cafe.md", CAFE)):
        (data / key).write_bytes(body)
        (root / key).symlink_to(f"..data/{key}")
    return root


@pytest.mark.parametrize("keys", [None, ["travel.md", "cafe.md"]], ids=["all-keys", "named-keys"])
def test_a_config_map_key_that_cannot_be_read_keeps_its_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: list[str] | None
) -> None:
    store = FakeStore()
    mount = config_map(tmp_path / "cm")
    source = {"name": "faq", "configMap": {"name": "faq", **({"keys": keys} if keys else {})}}
    assert ingest(store, [source], {"faq": str(mount)}).added == 2
    before = len(store.chunks_of("faq/travel.md"))
    with io_error_on(monkeypatch, "travel.md"):
        result = ingest(store, [source], {"faq": str(mount)})
    assert_kept(store, result, "faq/travel.md", before)


def test_a_config_map_that_cannot_be_listed_keeps_its_documents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FakeStore()
    mount = config_map(tmp_path / "cm")
    source = {"name": "faq", "configMap": {"name": "faq"}}
    assert ingest(store, [source], {"faq": str(mount)}).added == 2
    before = len(store.chunks_of("faq/travel.md"))
    with unlistable(monkeypatch, mount):
        result = ingest(store, [source], {"faq": str(mount)})
    assert_kept(store, result, "faq/travel.md", before)
