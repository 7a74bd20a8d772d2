"""Reading sources: local files, ConfigMaps, S3 (moto), HTTP with SSRF protection and bounds."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tandem.api.v1alpha1.knowledgebase import Source
from tandem.workloads.knowledge import safe_http
from tandem.workloads.knowledge.safe_http import FetchError, fetch
from tandem.workloads.knowledge.sources import read_source

requests_seen: list[tuple[str, str | None]] = []  # (path, Authorization header) per request


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        requests_seen.append((self.path, self.headers.get("Authorization")))
        if self.path == "/private.md":
            if self.headers.get("Authorization") != "Bearer s3cret":
                self.send_response(401)
                self.end_headers()
                return
            body = b"# Private\nthe vault code is 7731"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.startswith("/redirect-to/"):  # /redirect-to/<port>/<path>: another origin
            port, _, rest = self.path.removeprefix("/redirect-to/").partition("/")
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{port}/{rest}")
            self.end_headers()
        elif self.path == "/doc.md":
            body = b"# Title\nhello"
            self.send_response(200)
            self.send_header("Content-Type", "text/markdown")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/big":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"x" * 5000)
        elif self.path.startswith("/loop"):
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _serving() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with _serving() as url:
        yield url


def test_loopback_is_refused_unless_allowed(server: str) -> None:
    with pytest.raises(FetchError, match=r"127\.0\.0\.1.*allowPrivateNetworks"):
        fetch(f"{server}/doc.md", allow_private=False, max_bytes=1000, timeout=5, max_redirects=3)
    got = fetch(f"{server}/doc.md", allow_private=True, max_bytes=1000, timeout=5, max_redirects=3)
    assert got.data == b"# Title\nhello" and got.content_type == "text/markdown"


def test_size_and_redirect_limits(server: str) -> None:
    with pytest.raises(FetchError, match="maxBytes"):
        fetch(f"{server}/big", allow_private=True, max_bytes=1000, timeout=5, max_redirects=3)
    with pytest.raises(FetchError, match="more than 3 redirects"):
        fetch(f"{server}/loop", allow_private=True, max_bytes=1000, timeout=5, max_redirects=3)
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(f"{server}/missing", allow_private=True, max_bytes=1000, timeout=5, max_redirects=3)


@pytest.mark.parametrize(
    "address",
    ["10.1.2.3", "192.168.0.7", "169.254.169.254", "127.0.0.53", "::1", "::ffff:127.0.0.1", "fd00::1"],
)
def test_private_and_metadata_addresses_are_refused(address: str, monkeypatch: pytest.MonkeyPatch) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET

    def fake(host: str, port: int, **_: Any) -> list[Any]:
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(FetchError, match="private, loopback or link-local"):
        safe_http.resolve("innocent.example.com", 443, allow_private=False)
    import ipaddress

    allowed = safe_http.resolve("innocent.example.com", 443, allow_private=True)
    assert ipaddress.ip_address(allowed) == ipaddress.ip_address(address)


def test_public_address_passes_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port, **_: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))],
    )
    assert safe_http.resolve("example.com", 443, allow_private=False) == "93.184.216.34"


def test_other_schemes_are_refused() -> None:
    with pytest.raises(FetchError, match="only http and https"):
        fetch("file:///etc/passwd", allow_private=True, max_bytes=10, timeout=1, max_redirects=0)


def test_http_source_reports_each_failing_url(server: str) -> None:
    source = Source.model_validate(
        {
            "name": "web",
            "http": {"urls": [f"{server}/doc.md", f"{server}/missing"], "allowPrivateNetworks": True},
        }
    )
    read = read_source(source)
    assert [d.doc_id for d in read.documents] == [f"web/{server}/doc.md"]
    assert read.documents[0].format == "markdown"
    assert [f.document for f in read.failures] == [f"{server}/missing"] and read.complete


@pytest.fixture(scope="module")
def other_server() -> Iterator[str]:
    """A second origin (another port): where a redirect must not carry the first origin's credentials."""
    with _serving() as url:
        yield url


def headers_dir(tmp_path: Path, **keys: str) -> Path:
    """A Secret volume as the kubelet lays it out: `..data` holds the files, keys are symlinks to it."""
    data = tmp_path / "..2026_11_29_00_00_00.000"
    data.mkdir(parents=True)
    (tmp_path / "..data").symlink_to(data.name)
    for key, value in keys.items():
        (data / key).write_text(value + "\n")
        (tmp_path / key).symlink_to(f"..data/{key}")
    return tmp_path


def test_http_source_sends_the_secrets_headers(server: str, tmp_path: Path) -> None:
    spec = {"urls": [f"{server}/private.md"], "allowPrivateNetworks": True}
    without = read_source(Source.model_validate({"name": "vault", "http": spec}))
    [failure] = without.failures
    assert "HTTP 401" in failure.reason and "headersSecretRef" in failure.reason

    source = Source.model_validate(
        {"name": "vault", "http": {**spec, "headersSecretRef": {"name": "vault-token"}}}
    )
    read = read_source(source, str(headers_dir(tmp_path, Authorization="Bearer s3cret")))
    assert not read.failures
    assert b"7731" in read.documents[0].data


def test_credentials_do_not_follow_a_redirect_to_another_origin(
    server: str, other_server: str, tmp_path: Path
) -> None:
    port = other_server.rsplit(":", 1)[1]
    source = Source.model_validate(
        {
            "name": "vault",
            "http": {
                "urls": [f"{server}/redirect-to/{port}/private.md"],
                "allowPrivateNetworks": True,
                "headersSecretRef": {"name": "vault-token"},
            },
        }
    )
    requests_seen.clear()
    read = read_source(source, str(headers_dir(tmp_path, Authorization="Bearer s3cret")))
    assert requests_seen == [
        (f"/redirect-to/{port}/private.md", "Bearer s3cret"),  # the origin the Secret was meant for
        ("/private.md", None),  # the other origin got no credentials, so it refused
    ]
    [failure] = read.failures
    assert "HTTP 401" in failure.reason


@pytest.mark.parametrize(
    ("keys", "complaint"),
    [({"Host": "evil.example"}, "not a header"), ({"Bad Name": "x"}, "not a header"), ({}, "holds no keys")],
)
def test_a_headers_secret_that_cannot_be_sent_fails_the_source(
    server: str, tmp_path: Path, keys: dict[str, str], complaint: str
) -> None:
    source = Source.model_validate(
        {
            "name": "vault",
            "http": {
                "urls": [f"{server}/private.md"],
                "allowPrivateNetworks": True,
                "headersSecretRef": {"name": "vault-token"},
            },
        }
    )
    read = read_source(source, str(headers_dir(tmp_path, **keys)))
    assert not read.complete  # nothing of the source is deleted on a run that could not read it
    assert complaint in read.failures[0].reason and "vault-token" in read.failures[0].reason
    unmounted = read_source(source, None)
    assert not unmounted.complete and "not mounted" in unmounted.failures[0].reason


def test_directory_source_globs_and_labels(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.html").write_text("<p>b</p>")
    (tmp_path / "skip.bin").write_bytes(b"\0")
    source = Source.model_validate(
        {
            "name": "wiki",
            "directory": {"path": str(tmp_path), "include": ["**/*.md", "**/*.html"]},
            "accessLabels": ["staff"],
            "metadata": {"team": "ops"},
        }
    )
    read = read_source(source)
    assert [(d.doc_id, d.format) for d in read.documents] == [
        ("wiki/a.md", "markdown"),
        ("wiki/sub/b.html", "html"),
    ]
    assert read.documents[0].access_labels == ("staff",) and read.documents[0].metadata == {"team": "ops"}


def test_missing_directory_marks_the_source_incomplete(tmp_path: Path) -> None:
    source = Source.model_validate({"name": "wiki", "directory": {"path": str(tmp_path / "nope")}})
    read = read_source(source)
    assert not read.complete and read.failures[0].document == "*"


def test_config_map_source_reads_mounted_keys(tmp_path: Path) -> None:
    (tmp_path / "faq.md").write_text("# FAQ")
    (tmp_path / "..data").mkdir()  # the kubelet's bookkeeping in a mounted ConfigMap
    source = Source.model_validate(
        {"name": "cm", "configMap": {"name": "faq", "keys": ["faq.md", "gone.md"]}}
    )
    read = read_source(source, str(tmp_path))
    assert [d.doc_id for d in read.documents] == ["cm/faq.md"]
    assert [f.document for f in read.failures] == ["gone.md"]


def test_s3_source_with_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("TANDEM_S3_DOCS_AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("TANDEM_S3_DOCS_AWS_SECRET_ACCESS_KEY", "test")
    with mock_aws():
        s3 = boto3.client(
            "s3", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
        )
        s3.create_bucket(Bucket="handbook")
        s3.put_object(Bucket="handbook", Key="wiki/travel.md", Body=b"# Travel")
        s3.put_object(Bucket="handbook", Key="wiki/logo.png", Body=b"\x89PNG")
        s3.put_object(Bucket="handbook", Key="other/x.md", Body=b"# X")
        source = Source.model_validate(
            {
                "name": "docs",
                "s3": {
                    "bucket": "handbook",
                    "prefix": "wiki/",
                    "region": "us-east-1",
                    "include": ["*.md"],
                    "credentialsSecretRef": {"name": "s3-creds"},
                },
            }
        )
        read = read_source(source)
        missing = read_source(
            Source.model_validate({"name": "docs", "s3": {"bucket": "nope", "region": "us-east-1"}})
        )
    assert [(d.doc_id, d.uri) for d in read.documents] == [("docs/travel.md", "s3://handbook/wiki/travel.md")]
    assert not missing.complete and "nope" in missing.failures[0].reason


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("*.md", ["a.md"], ["finance/budget.md", "a.mdx"]),
        ("**/*.md", ["a.md", "x/a.md", "x/y/a.md"], ["a.txt"]),
        ("docs/**", ["docs/a", "docs/x/y"], ["other/a"]),
        ("?.pdf", ["a.pdf"], ["ab.pdf", "x/a.pdf"]),
        ("[!f]*/*.md", ["handbook/a.md"], ["finance/a.md"]),
        ("**/*", ["a", "x/y"], []),
    ],
)
def test_include_globs_keep_star_within_a_folder(
    pattern: str, matching: list[str], not_matching: list[str]
) -> None:
    """`*` must not cross `/`: else a top-level pattern takes files of a separately labelled folder."""
    from tandem.workloads.knowledge.sources import _matches

    assert all(_matches(p, pattern) for p in matching)
    assert not any(_matches(p, pattern) for p in not_matching)


def test_document_ids_fit_the_schema_and_stay_the_same() -> None:
    from tandem.workloads.knowledge.documents import FailedDocument, document_id
    from tandem.workloads.knowledge.store import MAX_DOC_ID

    assert document_id("wiki", "a/b.md") == "wiki/a/b.md"
    long_name = "é" * 600 + "/notes.md"  # 1,209 bytes
    shortened = document_id("wiki", long_name)
    assert len(shortened.encode()) <= MAX_DOC_ID and shortened == document_id("wiki", long_name)
    assert shortened != document_id("wiki", "é" * 600 + "/other.md")  # the digest keeps them apart
    assert FailedDocument("wiki", long_name, "EIO").doc_id == shortened  # a failure names the same one


def test_a_stream_reads_nothing_until_iterated(tmp_path: Path) -> None:
    from tandem.workloads.knowledge.sources import stream_source

    source = Source.model_validate({"name": "wiki", "directory": {"path": str(tmp_path / "later")}})
    stream = stream_source(source)  # the folder does not exist yet: nothing is looked at
    (tmp_path / "later").mkdir()
    (tmp_path / "later" / "a.md").write_text("# A")
    assert [d.doc_id for d in stream.documents] == ["wiki/a.md"]
    assert stream.complete and stream.failures == []


def test_a_file_name_that_is_not_utf8_is_stored_under_an_id_that_encodes(tmp_path: Path) -> None:
    import os

    with open(os.path.join(os.fsencode(tmp_path), b"caf\xe9.md"), "wb") as f:  # Latin-1, not UTF-8
        f.write(b"# Cafe")
    read = read_source(Source.model_validate({"name": "wiki", "directory": {"path": str(tmp_path)}}))
    [doc] = read.documents
    assert doc.doc_id == "wiki/caf\\xe9.md"  # the byte escaped: pymilvus could not encode the name itself


def test_an_s3_body_longer_than_declared_is_cut_while_reading() -> None:
    from tandem.workloads.knowledge import sources

    class Body:
        def __init__(self) -> None:
            self.read_bytes, self.closed = 0, False

        def read(self, amount: int) -> bytes:
            self.read_bytes += amount
            return b"x" * amount  # never ends

        def close(self) -> None:
            self.closed = True

    body = Body()

    class Client:
        def get_object(self, **_: Any) -> dict[str, Any]:
            return {"Body": body, "ContentLength": 10}  # a lie

    with pytest.raises(sources._Refused, match="more than the 3000000 bytes"):
        sources._s3_object(Client(), "b", "k", 3_000_000)
    assert body.closed and body.read_bytes <= 3_000_000 + (1 << 20)
