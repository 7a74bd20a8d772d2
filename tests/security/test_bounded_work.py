"""Issue 15, item 10: bounded work. One hostile peer or document costs a bounded time and memory, and
fails alone.

- A URL gets `timeoutSeconds` in all, not per network read: a server that drips a byte at a time (in the
  body or in the headers) is cut at the deadline.
- Every Job and RayJob has `activeDeadlineSeconds`.
- A document larger than the cap is refused from its declared size (HTTP Content-Length, S3 object size,
  file size) before its body is read, and while reading when the declaration lies.
- Documents stream through the pipeline: a batch is written before the sources' later documents are read.
- A document id too long for the collection's schema gets a stable shortened form, and a document that
  cannot be stored (a label or metadata too large) fails alone instead of failing its write batch.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import socketserver
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tandem.api.v1alpha1 import KnowledgeBaseSpec
from tandem.api.v1alpha1.knowledgebase import Source
from tandem.workloads import ingest as ingest_workload
from tandem.workloads.jobs import IngestJob
from tandem.workloads.knowledge import sources as sources_module
from tandem.workloads.knowledge import store as store_module
from tandem.workloads.knowledge.indexer import Indexer, IngestResult
from tandem.workloads.knowledge.safe_http import FetchError, fetch
from tandem.workloads.knowledge.sources import read_source
from tests.security.knowledge_fakes import FakeEmbedder, FakeStore

# -- a total deadline per URL ----------------------------------------------------------------------------

DRIP_FOR = 10.0  # seconds a dripping connection lasts at most (so a test that fails still ends)


class _Drip(socketserver.BaseRequestHandler):
    """GET /body: headers at once, then the body a byte every 50 ms. GET /headers: the headers the same
    way, never finished. Either keeps every single read well inside any per-read timeout."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        request = sock.recv(65536)
        end = time.monotonic() + DRIP_FOR
        try:
            if request.startswith(b"GET /headers"):
                sock.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            else:
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n")
            while time.monotonic() < end:
                sock.sendall(b"a")
                time.sleep(0.05)
        except OSError:
            pass  # the client gave up: what a deadline is for


@pytest.fixture(scope="module")
def drip() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Drip)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_slow_drip_server_is_cut_at_the_per_url_deadline(drip: str, where: str) -> None:
    outcome: list[BaseException | str] = []

    def get() -> None:
        try:
            fetch(f"{drip}/{where}", allow_private=True, max_bytes=10_000_000, timeout=1, max_redirects=0)
            outcome.append("fetched")
        except Exception as e:  # what it raised is checked below
            outcome.append(e)

    started = time.monotonic()
    worker = threading.Thread(target=get, daemon=True)
    worker.start()
    worker.join(timeout=4)
    assert not worker.is_alive(), f"fetch with timeout=1 still reading a dripping {where} after 4 s"
    elapsed = time.monotonic() - started
    [error] = outcome
    assert isinstance(error, FetchError) and "timeoutSeconds" in str(error), error
    assert elapsed < 2.5, f"cut after {elapsed:.1f} s, the deadline is 1 s"


def test_an_http_source_gives_each_url_its_timeout_in_all(drip: str) -> None:
    source = Source.model_validate(
        {
            "name": "web",
            "http": {
                "urls": [f"{drip}/body", f"{drip}/headers"],
                "allowPrivateNetworks": True,
                "timeoutSeconds": 1,
            },
        }
    )
    started = time.monotonic()
    read = read_source(source)
    elapsed = time.monotonic() - started
    assert elapsed < 5, f"two URLs with timeoutSeconds 1 took {elapsed:.1f} s"
    assert [f.document for f in read.failures] == [f"{drip}/body", f"{drip}/headers"]
    assert all("timeoutSeconds 1" in f.reason for f in read.failures), read.failures
    assert read.complete and read.documents == []


# -- a deadline per Job ----------------------------------------------------------------------------------


def _work_items() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every Job, CronJob and RayJob the planners render, named."""
    from tandem.api.kinds import ADAPTER_TRAINING, KNOWLEDGE_BASE
    from tandem.platform.kubernetes.planners.cleanup import plan_cleanup
    from tests.manifests import example
    from tests.unit.test_planner_evaluation import plan as evaluation_plan
    from tests.unit.test_planners import SETTINGS, at_plan, kb_plan, owner

    kb = example("KnowledgeBase")["spec"]
    ray_kb = {**kb, "scale": {"engine": "RayJob", "workers": 2}}
    at = example("AdapterTraining")["spec"]
    plans = {
        "KnowledgeBase": kb_plan(kb),
        "KnowledgeBase on Ray": kb_plan(ray_kb),
        "AdapterTraining": at_plan(at),
        "Evaluation": evaluation_plan(),
    }
    for name, plan in plans.items():
        for child in plan.children:
            if child["kind"] in ("Job", "CronJob", "RayJob"):
                yield f"{name}: {child['kind']} {child['metadata']['name']}", child
    deleted_at = {**at, "output": {**at["output"], "retainOnDelete": False}}
    for kind, spec, who in (
        (KNOWLEDGE_BASE, kb, "KnowledgeBase"),
        (ADAPTER_TRAINING, deleted_at, "AdapterTraining"),
    ):
        cleanup = plan_cleanup(kind, owner(who, "x"), spec, SETTINGS)
        assert cleanup is not None, who
        yield f"{who} cleanup: Job {cleanup['metadata']['name']}", cleanup


def test_every_job_has_an_active_deadline() -> None:
    deadlines = {}
    for name, child in _work_items():
        spec = child["spec"]
        if child["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        deadlines[name] = spec.get("activeDeadlineSeconds")
    assert len(deadlines) >= 7, deadlines
    missing = sorted(name for name, value in deadlines.items() if not (isinstance(value, int) and value > 0))
    assert not missing, f"no activeDeadlineSeconds: {missing}"


# -- a size cap checked before reading -------------------------------------------------------------------

CAP = 1_000_000


@pytest.fixture()
def small_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Documents may have at most CAP bytes (the default is 100 MB: too much to fill in a test)."""
    monkeypatch.setattr(sources_module, "MAX_DOCUMENT_BYTES", CAP, raising=False)


def test_an_oversized_s3_object_is_refused_before_its_body_is_read(
    monkeypatch: pytest.MonkeyPatch, small_cap: None
) -> None:
    from moto import mock_aws

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "test")
    gets: list[str] = []
    original = boto3.client

    def client(*args: Any, **kwargs: Any) -> Any:
        made = original(*args, **kwargs)
        made.meta.events.register_first(
            "before-send.s3.GetObject", lambda request, **_: gets.append(request.url.split("?")[0])
        )
        return made

    with mock_aws():
        s3 = original("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="handbook")
        s3.put_object(Bucket="handbook", Key="wiki/huge.txt", Body=b"x" * (CAP + 1))
        s3.put_object(Bucket="handbook", Key="wiki/small.md", Body=b"# Small\nfits")
        monkeypatch.setattr(boto3, "client", client)
        read = read_source(
            Source.model_validate(
                {"name": "docs", "s3": {"bucket": "handbook", "prefix": "wiki/", "region": "us-east-1"}}
            )
        )
    assert [d.doc_id for d in read.documents] == ["docs/small.md"]
    [failure] = read.failures
    assert failure.document == "huge.txt" and f"{CAP + 1} bytes" in failure.reason, failure
    assert not any(url.endswith("/huge.txt") for url in gets), f"the oversized object was fetched: {gets}"


def test_an_oversized_file_is_refused_before_it_is_read(tmp_path: Path, small_cap: None) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "small.md").write_text("# Small\nfits")
    with open(docs / "huge.txt", "wb") as f:  # sparse: takes no disk, reads as 50 MB of zeros
        f.truncate(50 * CAP)
    source = Source.model_validate({"name": "wiki", "directory": {"path": str(docs)}})
    tracemalloc.start()
    try:
        read = read_source(source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [d.doc_id for d in read.documents] == ["wiki/small.md"]
    [failure] = read.failures
    assert failure.document == "huge.txt" and f"{50 * CAP} bytes" in failure.reason, failure
    assert peak < 5 * CAP, f"reading the source took {peak / 1e6:.0f} MB: the oversized file was read"


class _Declares(socketserver.BaseRequestHandler):
    """Declares a body of 5 GB, then sends nothing: only its Content-Length can be checked."""

    def handle(self) -> None:
        self.request.recv(65536)
        with contextlib.suppress(OSError):
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5000000000\r\n\r\n")
            time.sleep(3)


def test_an_http_body_declared_too_large_is_refused_unread() -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Declares)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    started = time.monotonic()
    try:
        with pytest.raises(FetchError, match="5000000000 bytes exceeds maxBytes"):
            fetch(
                f"http://127.0.0.1:{server.server_address[1]}/x",
                allow_private=True,
                max_bytes=10_000,
                timeout=5,
                max_redirects=0,
            )
    finally:
        server.shutdown()
        server.server_close()
    assert time.monotonic() - started < 2


# -- documents stream through the pipeline ---------------------------------------------------------------


def test_documents_stream_through_read_parse_embed_and_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tandem.workloads.ingest` writes a batch before it reads the next documents: memory holds a batch,
    not every source."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for n in range(4):
        (docs / f"doc{n}.md").write_text(f"# Document {n}\n\nThe answer to question {n} is {n * 7}.")
    store = FakeStore()
    real_open = os.open

    def spying_open(path: Any, *args: Any, **kwargs: Any) -> int:
        if os.fspath(path).endswith(".md"):
            store.log.append(("read", Path(os.fspath(path)).name))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spying_open)
    monkeypatch.setattr(ingest_workload, "open_store", lambda target: store)
    monkeypatch.setattr(ingest_workload, "Embedder", lambda *a, **k: FakeEmbedder(store.log))
    spec = KnowledgeBaseSpec.model_validate({"sources": [{"name": "wiki", "directory": {"path": str(docs)}}]})
    job = IngestJob(namespace="team", name="kb", collection=store.collection, milvus_uri="fake", spec=spec)
    result = ingest_workload.run(job, write_batch=1)
    assert result["added"] == 4
    steps = [what for what, _ in store.log]
    first_write = next(i for i, what in enumerate(steps) if what in ("insert", "upsert"))
    last_read = max(i for i, what in enumerate(steps) if what == "read")
    assert first_write < last_read, f"every document was read before the first write: {store.log}"


# -- ids that fit the schema; one bad document fails alone -------------------------------------------------


def index(store: FakeStore, raw_sources: list[dict[str, Any]]) -> IngestResult:
    spec = KnowledgeBaseSpec.model_validate({"sources": raw_sources, "chunking": {"size": 16, "overlap": 2}})
    return Indexer(spec, store, FakeEmbedder()).run([read_source(s) for s in spec.sources])


def long_path(root: Path) -> Path:
    """A file whose path within its source is 1,200 characters long (5 folders of 230)."""
    folder = root
    for n in range(5):
        folder = folder / (str(n) * 230)
    folder.mkdir(parents=True)
    return folder / "notes.md"


def test_an_over_long_document_id_is_stored_under_a_stable_short_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = tmp_path / "docs"
    deep = long_path(docs)
    deep.write_text("# Deep notes\n\nThe deepest folder holds the archive key 5521.")
    (docs / "short.md").write_text("# Short\n\nThe short note says the door code is 1234.")
    store = FakeStore()
    source = {"name": "wiki", "directory": {"path": str(docs)}}

    first = index(store, [source])  # both documents in one write batch
    assert (first.added, first.failed_documents) == (2, []), first
    ids = store.doc_ids()
    assert "wiki/short.md" in ids
    [long_id] = ids - {"wiki/short.md"}
    assert len(long_id.encode()) <= store_module.MAX_DOC_ID and long_id.startswith("wiki/00000")

    again = index(store, [source])  # the same id on every run: nothing re-embedded, nothing removed
    assert (again.unchanged, again.removed, store.doc_ids()) == (2, 0, ids)

    real_open = os.open

    def flaky(path: Any, *args: Any, **kwargs: Any) -> int:
        if os.fspath(path).endswith("/notes.md"):
            raise OSError(errno.EIO, "Input/output error")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", flaky)
    unreadable = index(store, [source])  # its failure names the same (shortened) document: kept
    assert unreadable.removed == 0 and store.chunks_of(long_id), unreadable


@pytest.mark.parametrize(
    ("bad", "complaint"),
    [
        ({"accessLabels": ["x" * 300]}, "label"),
        ({"metadata": {"notes": "x" * 70_000}}, "metadata"),
    ],
    ids=["label-too-long", "metadata-too-large"],
)
def test_a_document_that_cannot_be_stored_fails_alone(bad: dict[str, Any], complaint: str) -> None:
    store = FakeStore()
    good = {"name": "good", "inline": {"documents": [{"id": "a", "text": "The door code is 1234."}]}}
    broken = {
        "name": "broken",
        "inline": {"documents": [{"id": "b", "text": "The safe code is 9876."}]},
        **bad,
    }
    result = index(store, [good, broken])  # one write batch for both
    assert store.doc_ids() == {"good/a"}
    [failure] = result.failed_documents
    assert (failure.source, failure.document) == ("broken", "b") and complaint in failure.reason, failure


class _Refusing(FakeStore):
    """Refuses any write holding a chunk of `bad` (a limit no check knows of); `down`: Milvus is gone."""

    def __init__(self, bad: str) -> None:
        super().__init__()
        self.bad, self.down, self.gone = bad, False, False

    def exists(self) -> bool:
        if self.gone:
            raise ConnectionError("Milvus is not answering")
        return super().exists()

    def _write(self, what: str, rows: Any) -> None:
        if self.down:
            self.gone = True  # the write failed because Milvus went away: it answers nothing now
        if self.down or any(r["doc_id"] == self.bad for r in rows):
            raise RuntimeError(f"the server refused the {what}")
        super()._write(what, rows)


def test_a_write_milvus_refuses_fails_that_document_alone_unless_milvus_is_down() -> None:
    docs = [{"id": n, "text": f"Note {n} says the code is {n}."} for n in ("a", "b", "c")]
    source = {"name": "notes", "inline": {"documents": docs}}
    store = _Refusing(bad="notes/b")
    result = index(store, [source])  # one batch: refused, then written one document at a time
    assert store.doc_ids() == {"notes/a", "notes/c"} and result.added == 2
    [failure] = result.failed_documents
    assert failure.document == "b" and "refused" in failure.reason

    down = _Refusing(bad="")
    index(down, [source])
    down.down = True  # every write fails and Milvus answers nothing: the run fails (and is retried)
    docs[0]["text"] = "Note a now says the code is 7."
    with pytest.raises(RuntimeError, match="refused"):
        index(down, [source])
