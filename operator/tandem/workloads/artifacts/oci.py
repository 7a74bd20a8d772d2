"""An OCI registry as the adapter store: the distribution API's few calls, over httpx.

Why not the `oras` Python SDK (0.2.x): its `do_request` retries every failed call (a refused connection
included) five times with sleeps growing to 83 s, so an unreachable registry takes minutes to report;
`pull` and `download_blob` write blobs without checking their sha256, and `push` builds its own manifest
from files under the working directory. What is needed here is five requests (HEAD/POST/PUT a blob, PUT a
manifest, GET either by digest), with every blob hashed while it streams; httpx (a dependency already)
does that in a page.

    oci://HOST[:PORT]/REPO[:TAG]         publish tags; fetch resolves the tag (default `latest`)
    oci://HOST[:PORT]/REPO@sha256:HEX    fetch exactly that manifest (its bytes are hashed and compared)

Plain HTTP only to a loopback host or with `Credentials.insecure`; HTTPS otherwise. Basic auth and the
bearer-token dance (`WWW-Authenticate: Bearer realm=...`) answer a registry's 401.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import httpx

from .archive import copy_verified
from .credentials import Credentials, is_loopback
from .errors import (
    ArtifactAccessDenied,
    ArtifactDigestMismatch,
    ArtifactError,
    ArtifactNotFound,
    ArtifactTooLarge,
    ArtifactUnavailable,
)
from .manifest import (
    EMPTY_CONFIG,
    EMPTY_CONFIG_DIGEST,
    MANIFEST_MEDIA_TYPE,
    MAX_MANIFEST_BYTES,
    sha256_digest,
)

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    r"oci://(?P<host>(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?)"
    rf"/(?P<repository>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)
TIMEOUT = httpx.Timeout(60.0, connect=10.0)


@dataclass(frozen=True)
class OciReference:
    host: str  # HOST[:PORT]
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, uri: str) -> OciReference:
        match = _REFERENCE.fullmatch(uri)
        if not match:
            raise ValueError(
                f"{uri!r}: not an OCI reference (oci://HOST[:PORT]/REPO[:TAG] or oci://HOST/REPO@sha256:HEX)"
            )
        return cls(match["host"], match["repository"], match["tag"], match["digest"])

    @property
    def hostname(self) -> str:
        host = self.host
        if host.startswith("["):
            return host[1 : host.index("]")]
        return host.rsplit(":", 1)[0] if ":" in host else host

    def pinned(self, digest: str) -> str:
        return f"oci://{self.host}/{self.repository}@{digest}"


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}
    return scheme.lower(), params


class _RegistryAuth(httpx.Auth):
    """Answers a 401 with basic credentials or a bearer token, then sends that header on every request
    (the blob PUT streams its body, so it must not be the request that meets the first 401)."""

    def __init__(self, username: str | None, password: str | None, *, insecure: bool = False) -> None:
        self.insecure = insecure
        self.basic = (
            "Basic " + base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            if username
            else None
        )
        self.header: str | None = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.header:
            request.headers["Authorization"] = self.header
        response = yield request
        if response.status_code != 401:
            return
        scheme, params = _challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic" and self.basic:
            header = self.basic
        elif scheme == "bearer" and params.get("realm"):
            query: dict[str, str] = {k: params[k] for k in ("service", "scope") if k in params}
            token_request = httpx.Request("GET", params["realm"], params=query)
            realm = token_request.url
            if self.basic and (realm.scheme == "https" or is_loopback(realm.host) or self.insecure):
                token_request.headers["Authorization"] = self.basic  # never in clear text to elsewhere
            token_response = yield token_request
            token_response.read()
            if token_response.status_code != 200:
                return  # the token service's answer (401: credentials refused) is what the caller sees
            try:
                body: Any = token_response.json()
            except ValueError:
                return
            token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
            if not isinstance(token, str):
                return
            header = f"Bearer {token}"
        else:
            return
        self.header = header
        request.headers["Authorization"] = header
        yield request


class OciStore:
    def __init__(self, uri: str, credentials: Credentials | None) -> None:
        self.uri = uri
        self.ref = OciReference.parse(uri)
        credentials = credentials or Credentials()
        loopback = is_loopback(self.ref.hostname)
        scheme = "http" if loopback or credentials.insecure else "https"
        self.base = f"{scheme}://{self.ref.host}/v2/{self.ref.repository}"
        self.client = httpx.Client(
            auth=_RegistryAuth(credentials.username, credentials.password, insecure=credentials.insecure),
            follow_redirects=True,
            timeout=TIMEOUT,
            trust_env=not loopback,  # no proxy between this process and a registry on loopback
        )

    def __enter__(self) -> OciStore:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.client.close()

    # Requests, with the registry's answers turned into the artifact errors.

    def _send(self, method: str, url: str, *, stream: bool = False, **kwargs: Any) -> httpx.Response:
        try:
            request = self.client.build_request(method, url, **kwargs)
            response = self.client.send(request, stream=stream)
        except httpx.TransportError as e:
            raise ArtifactUnavailable(
                f"{self.uri}: cannot reach the registry ({type(e).__name__}: {e})"
            ) from None
        except httpx.StreamConsumed:
            raise ArtifactAccessDenied(f"{self.uri}: the registry asked for credentials mid-upload") from None
        return response

    def _check(self, response: httpx.Response, what: str, ok: tuple[int, ...]) -> None:
        if response.status_code in ok:
            return
        response.read()
        detail = f"{what}: {response.request.method} answered {response.status_code} ({response.text[:300]})"
        response.close()
        code = response.status_code
        if code in (401, 403):
            raise ArtifactAccessDenied(detail + "; check the credentials (username/password)")
        if code == 404:
            raise ArtifactNotFound(detail)
        if code == 429 or code >= 500:
            raise ArtifactUnavailable(detail)
        raise ArtifactError(detail)

    # Publishing.

    def _blob_exists(self, digest: str) -> bool:
        response = self._send("HEAD", f"{self.base}/blobs/{digest}")
        if response.status_code == 404:
            return False
        self._check(response, f"{self.uri}: blob {digest}", (200,))
        return True

    def _push_blob(self, digest: str, size: int, content: bytes | BinaryIO) -> None:
        if self._blob_exists(digest):
            return
        what = f"{self.uri}: blob {digest}"
        # Monolithic upload: POST opens an upload session, one PUT with ?digest= closes it.
        started = self._send("POST", f"{self.base}/blobs/uploads/", headers={"Content-Length": "0"})
        self._check(started, what, (202,))
        location = started.headers.get("Location")
        if not location:
            raise ArtifactError(f"{what}: the registry's upload answer has no Location")
        url = httpx.URL(self.base).join(location).copy_merge_params({"digest": digest})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        self._check(self._send("PUT", str(url), content=content, headers=headers), what, (201,))

    def push(self, blob: Path, blob_digest: str, size: int, manifest_bytes: bytes) -> str:
        self._push_blob(EMPTY_CONFIG_DIGEST, len(EMPTY_CONFIG), EMPTY_CONFIG)
        with blob.open("rb") as f:
            self._push_blob(blob_digest, size, f)
        digest = sha256_digest(manifest_bytes)
        if self.ref.digest and self.ref.digest != digest:
            raise ArtifactDigestMismatch(f"{self.uri}: the manifest to publish", self.ref.digest, digest)
        reference = self.ref.tag or digest
        response = self._send(
            "PUT",
            f"{self.base}/manifests/{reference}",
            content=manifest_bytes,
            headers={"Content-Type": MANIFEST_MEDIA_TYPE},
        )
        self._check(response, f"{self.uri}: manifest", (201,))
        stored = response.headers.get("Docker-Content-Digest")
        if stored and stored != digest:
            raise ArtifactDigestMismatch(f"{self.uri}: the manifest the registry stored", digest, stored)
        return self.ref.pinned(digest)

    # Fetching.

    def manifest(self) -> tuple[bytes, str]:
        """The manifest's bytes and digest; by digest when the URI pins one (and then checked)."""
        reference = self.ref.digest or self.ref.tag or "latest"
        what = f"{self.uri}: manifest"
        response = self._send(
            "GET",
            f"{self.base}/manifests/{reference}",
            stream=True,
            headers={"Accept": MANIFEST_MEDIA_TYPE},
        )
        try:
            self._check(response, what, (200,))
            data = bytearray()
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) > MAX_MANIFEST_BYTES:
                    raise ArtifactTooLarge(what, MAX_MANIFEST_BYTES, len(data))
        finally:
            response.close()
        digest = sha256_digest(bytes(data))
        expected = self.ref.digest or response.headers.get("Docker-Content-Digest")
        if expected and expected != digest:
            raise ArtifactDigestMismatch(what, expected, digest)
        return bytes(data), digest

    def download_blob(self, digest: str, out: BinaryIO, *, limit: int) -> int:
        what = f"{self.uri}: blob {digest}"
        response = self._send("GET", f"{self.base}/blobs/{digest}", stream=True)
        try:
            self._check(response, what, (200,))
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > limit:
                raise ArtifactTooLarge(what, limit, 0)
            try:
                return copy_verified(response.iter_bytes(1 << 20), out, what=what, digest=digest, limit=limit)
            except httpx.TransportError as e:
                raise ArtifactUnavailable(f"{what}: the download broke off ({e})") from None
        finally:
            response.close()
