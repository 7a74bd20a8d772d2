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


def start_registry(workdir: Path, *, htpasswd: str | None = None) -> Registry:
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
