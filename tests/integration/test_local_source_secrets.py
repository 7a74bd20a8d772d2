"""`tandem up` gives an http source the headers its Secret holds, as the cluster's Secret volume does:
a wiki behind a bearer token is indexed, the Secret's files are readable by the user only, and a
rotated token re-reads the source."""

from __future__ import annotations

import http.server
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tandem.platform.local.manifests import load
from tandem.platform.local.platform import LocalPlatform

pytestmark = pytest.mark.integration

TOKEN = {"value": "Bearer first"}  # what the wiki accepts; the test rotates it
SERVED: list[str | None] = []  # the Authorization header of every request the wiki answered


class _Wiki(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        SERVED.append(self.headers.get("Authorization"))
        if self.headers.get("Authorization") != TOKEN["value"]:
            self.send_response(401)
            self.end_headers()
            return
        body = b"# Parking\nVisitors park on level minus two, bay code P-2291."
        self.send_response(200)
        self.send_header("Content-Type", "text/markdown")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def wiki() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Wiki)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/parking.md"
    httpd.shutdown()


def write_manifests(directory: Path, url: str, token: str) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wiki-token"}}
    secret["stringData"] = {"Authorization": token}
    kb = {
        "apiVersion": "tandem.dev/v1alpha1",
        "kind": "KnowledgeBase",
        "metadata": {"name": "facilities"},
        "spec": {
            "sources": [
                {
                    "name": "wiki",
                    "http": {
                        "urls": [url],
                        "allowPrivateNetworks": True,  # the test's wiki listens on 127.0.0.1
                        "headersSecretRef": {"name": "wiki-token"},
                    },
                }
            ],
            "chunking": {"size": 64, "overlap": 8},
        },
    }
    (directory / "kb.yaml").write_text(yaml.safe_dump_all([secret, kb]))


def test_http_source_behind_a_token(wiki: str, tmp_path: Path) -> None:
    manifests_dir, state_dir = tmp_path / "manifests", tmp_path / ".tandem"
    manifests_dir.mkdir()
    write_manifests(manifests_dir, wiki, "Bearer first")
    platform = LocalPlatform(state_dir)
    try:
        assert platform.reconcile(load(manifests_dir, state_dir))
        status = platform.state.resource("KnowledgeBase", "default", "facilities")
        assert status.figures["documents"] == 1 and status.figures["failedDocuments"] == [], status.message
        assert SERVED == ["Bearer first"]
        [secret_dir] = (state_dir / "secrets").iterdir()
        assert stat.S_IMODE(secret_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((secret_dir / "Authorization").stat().st_mode) == 0o600

        # The wiki's token is rotated; until the Secret follows, the page fails by name, and what was
        # indexed stays.
        TOKEN["value"] = "Bearer second"
        SERVED.clear()
        write_manifests(manifests_dir, wiki, "Bearer first ")  # a changed Secret: the source is re-read
        platform.reconcile(load(manifests_dir, state_dir))
        status = platform.state.resource("KnowledgeBase", "default", "facilities")
        assert SERVED == ["Bearer first"]  # the value is sent trimmed, as a mounted file's newline is
        assert len(status.figures["failedDocuments"]) == 1 and "HTTP 401" in status.message
        assert status.figures["documents"] == 1  # the page indexed before is still there

        write_manifests(manifests_dir, wiki, "Bearer second")
        assert platform.reconcile(load(manifests_dir, state_dir))
        status = platform.state.resource("KnowledgeBase", "default", "facilities")
        assert status.figures["failedDocuments"] == [] and status.figures["documents"] == 1
    finally:
        platform.down()
