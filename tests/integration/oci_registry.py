"""A real OCI registry for tests: Debian's `docker-registry` (CNCF Distribution 2.8), on a free
127.0.0.1 port with filesystem storage in the test's tmp_path; `registry_auth` adds htpasswd basic
auth (a bcrypt line from `htpasswd -B`, apache2-utils, or the `bcrypt` module).

Without the binary the tests skip (`apt-get install docker-registry`), unless TANDEM_REQUIRE_REGISTRY=1
(CI sets it and installs the package): then they fail. It starts in well under a second and is stopped
by its PID.

    from tests.integration.oci_registry import registry_auth_fixture, registry_fixture  # noqa: F401

and ask for `registry` or `registry_auth` (a Registry: .host, .url, .blob_file(digest), .stop()).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

BINARY = "docker-registry"
STARTUP_TIMEOUT = 30.0
USERNAME, PASSWORD = "tandem", "s3cret-for-tests"


def _missing(what: str) -> None:
    message = f"{what} is not installed (apt-get install -y docker-registry apache2-utils)"
    if os.environ.get("TANDEM_REQUIRE_REGISTRY") == "1":
        pytest.fail(message + "; TANDEM_REQUIRE_REGISTRY=1 requires it")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def htpasswd_line(username: str, password: str) -> str | None:
    """A bcrypt htpasswd line (the only kind Distribution accepts), or None when nothing here makes one."""
    tool = shutil.which("htpasswd")
    if tool:
        out = subprocess.run([tool, "-Bbn", username, password], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    try:
        import bcrypt  # type: ignore[import-not-found]
    except ImportError:
        return None
    hashed: bytes = bcrypt.hashpw(password.encode(), bcrypt.gensalt())
    return f"{username}:{hashed.decode()}"


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    root: Path  # the storage's root directory
    process: subprocess.Popen[bytes]
    log: Path
    credentials: tuple[str, str] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def blob_file(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes (to tamper with them)."""
        hex_digest = digest.removeprefix("sha256:")
        return self.root / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start_registry(workdir: Path, *, htpasswd: str | None = None, token_auth: str = "") -> Registry:
    binary = shutil.which(BINARY)
    if binary is None:
        _missing(BINARY)
    assert binary is not None
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "storage"
    port = free_port()
    auth = ""
    if htpasswd is not None:
        (workdir / "htpasswd").write_text(htpasswd + "\n")
        auth = f"auth:\n  htpasswd:\n    realm: tandem-tests\n    path: {workdir / 'htpasswd'}\n"
    auth = auth or token_auth
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n"
        "  maintenance:\n    uploadpurging:\n      enabled: false\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: {secrets.token_hex(16)}\n" + auth
    )
    log = workdir / "registry.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    registry = Registry(f"127.0.0.1:{port}", root, process, log)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with httpx.Client(trust_env=False, timeout=2) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"docker-registry exited with {process.returncode}: {log.read_text()[-2000:]}"
                )
            try:
                if client.get(f"{registry.url}/v2/").status_code in (200, 401):
                    return registry
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                registry.stop()
                raise RuntimeError(
                    f"docker-registry did not answer /v2/ in {STARTUP_TIMEOUT} s: {log.read_text()}"
                )
            time.sleep(0.05)


@pytest.fixture(name="registry")
def registry_fixture(tmp_path: Path) -> Iterator[Registry]:
    """A registry without authentication, on plain HTTP at 127.0.0.1."""
    started = start_registry(tmp_path / "registry")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(name="registry_auth")
def registry_auth_fixture(tmp_path: Path) -> Iterator[Registry]:
    """A registry that wants basic auth as USERNAME/PASSWORD."""
    if shutil.which(BINARY) is None:
        _missing(BINARY)
    line = htpasswd_line(USERNAME, PASSWORD)
    if line is None:
        if os.environ.get("TANDEM_REQUIRE_REGISTRY") == "1":
            pytest.fail(
                "neither htpasswd (apache2-utils) nor the bcrypt module is here to make an htpasswd file"
            )
        pytest.skip("neither htpasswd (apache2-utils) nor the bcrypt module is here to make an htpasswd file")
    started = start_registry(tmp_path / "registry-auth", htpasswd=line)
    started.credentials = (USERNAME, PASSWORD)
    try:
        yield started
    finally:
        started.stop()


class TokenServer:
    """The bearer-token half of registry auth (what Docker Hub, GHCR, Harbor... use): a token endpoint on
    127.0.0.1 that checks basic credentials and issues ES256 JWTs signed by a self-signed certificate the
    registry trusts (`auth.token.rootcertbundle`), granting whatever the scope asks for."""

    SERVICE, ISSUER = "tandem-test-registry", "tandem-test-issuer"

    def __init__(self, workdir: Path, username: str, password: str) -> None:
        import base64
        import datetime
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tandem test token issuer")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = workdir / "token-issuer.pem"
        workdir.mkdir(parents=True, exist_ok=True)
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.issued: list[str] = []  # the scopes tokens were issued for
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                from urllib.parse import parse_qs, urlsplit

                query = parse_qs(urlsplit(self.path).query)
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                scopes = query.get("scope", [])
                server.issued.extend(scopes)
                body = json.dumps({"token": server.token(scopes)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def token(self, scopes: list[str]) -> str:
        import base64
        import time as clock

        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        def b64url(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(clock.time())
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
        claims = {
            "iss": self.ISSUER,
            "sub": USERNAME,
            "aud": self.SERVICE,
            "exp": now + 300,
            "nbf": now - 60,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def config(self) -> str:
        return (
            f"auth:\n  token:\n    realm: {self.realm}\n    service: {self.SERVICE}\n"
            f"    issuer: {self.ISSUER}\n    rootcertbundle: {self.bundle}\n"
        )

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(name="registry_token")
def registry_token_fixture(tmp_path: Path) -> Iterator[tuple[Registry, TokenServer]]:
    """A registry that wants bearer tokens from TokenServer (which wants USERNAME/PASSWORD)."""
    if shutil.which(BINARY) is None:
        _missing(BINARY)
    pytest.importorskip("cryptography")  # moto's dependency, so the test extra's
    tokens = TokenServer(tmp_path / "token", USERNAME, PASSWORD)
    try:
        started = start_registry(tmp_path / "registry-token", token_auth=tokens.config())
        started.credentials = (USERNAME, PASSWORD)
        try:
            yield started, tokens
        finally:
            started.stop()
    finally:
        tokens.stop()
