"""Fetch a URL named in a manifest without letting the manifest reach internal services (SSRF).

Every hop (the URL and each redirect) is resolved once, every resolved address is checked (only
globally routable addresses pass, judged by address class: see `globally_routable`), and the
connection goes to the checked address (the host name is kept for the Host header and TLS SNI), so
a DNS answer that changes between the check and the connection cannot smuggle a private address in.
Responses are bounded in size and time; redirects are followed by hand, at most `max_redirects`.
`fetch` gets `timeout` seconds in all for a URL (resolution, connections, redirects, headers and body):
every network operation waits at most what is left of it, so a peer that drips a byte at a time, in the
headers or in the body, is cut at the deadline rather than kept alive by each byte resetting a per-read
timer. (Name resolution goes through the system resolver, which bounds itself: the deadline is checked
before and after it.)
Credentials (`headers`) go only to the origin (scheme, host, port) of the URL asked for: a redirect to
another origin gets the request without them, as browsers and curl do.
`fetch` reads a body into memory; `stream` hands the response over unread, for bodies (model weights)
that must go straight to disk.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpcore
import httpx


class FetchError(Exception):
    """A URL could not be fetched; the message says why in terms a manifest author can act on."""


class AddressRefused(FetchError):
    """The URL, or a redirect, resolves to an address the manifest did not allow (a configuration error)."""

    def __init__(self, message: str, host: str, address: str) -> None:
        super().__init__(message)
        self.host, self.address = host, address


class StatusError(FetchError):
    """The server answered with an HTTP error; `status` lets callers tell "not there" from "try later"."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Fetched:
    url: str  # the final URL, after redirects
    content_type: str | None
    data: bytes


Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Special-purpose blocks that are not globally reachable (IANA's IPv4 and IPv6 Special-Purpose Address
# Registries) but that `is_global` of some Python releases still calls global: the answer must not
# depend on the interpreter's patch level.
_NOT_GLOBAL = tuple(
    ipaddress.ip_network(block)
    for block in (
        "100.64.0.0/10",  # shared address space (carrier-grade NAT); a cloud's metadata address is here
        "192.0.0.0/24",  # IETF protocol assignments
        "198.18.0.0/15",  # benchmarking
        "64:ff9b:1::/48",  # local-use IPv4/IPv6 translation (RFC 8215)
        "2001::/23",  # IETF protocol assignments (Teredo included)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # segment routing (RFC 9602)
        "fc00::/7",  # unique local
        "fec0::/10",  # site-local (deprecated, still routed inside some sites)
    )
)
# IPv6 prefixes whose last 32 bits are the IPv4 address the traffic is translated to (RFC 6052).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and leads to: IPv4-mapped, 6to4 or NAT64."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def globally_routable(address: Address) -> bool:
    """Whether `address` is a public Internet address, judged by its class rather than a list of flags:
    `is_global`, outside every special-purpose block, not multicast; an address that carries an IPv4
    address (IPv4-mapped, 6to4, NAT64) is judged by that IPv4 address, which is where it leads."""
    embedded = embedded_ipv4(address)
    if embedded is not None:
        return globally_routable(embedded)
    return (
        address.is_global
        and not address.is_multicast
        and not address.is_reserved
        and not any(address in block for block in _NOT_GLOBAL if block.version == address.version)
    )


def _forbidden(address: Address) -> bool:
    """The one decision `resolve` asks, per address (tests stand in for it)."""
    return not globally_routable(address)


def resolve(host: str, port: int, allow_private: bool) -> str:
    """One address of `host` that may be contacted, or FetchError naming the refused address."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise FetchError(f"cannot resolve {host}: {e.strerror}") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not allow_private:
        for address in addresses:
            if _forbidden(address):
                embedded = embedded_ipv4(address)
                carried = f" (which leads to {embedded})" if embedded is not None else ""
                raise AddressRefused(
                    f"{host} resolves to {address}{carried}, not a globally routable address (a private, "
                    "loopback or link-local address, or another special-purpose range); "
                    "set allowPrivateNetworks: true on the source if this is intended",
                    host,
                    str(address),
                )
    return str(addresses[0])


class _Deadline:
    """A point in time a whole exchange must end by (None: no deadline, per-operation timeouts only)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.at = None if seconds is None else time.monotonic() + seconds

    @property
    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def left(self, timeout: float | None, expired: type[Exception]) -> float | None:
        """The time one network operation may take: its own `timeout`, at most what is left."""
        if self.at is None:
            return timeout
        remaining = self.at - time.monotonic()
        if remaining <= 0:
            raise expired(f"the time limit of {self.seconds:g} s is spent")
        return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._inner, self._deadline = inner, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._deadline.left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._deadline.left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        left = self._deadline.left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, left), self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sockets, each operation bounded by what is left of the deadline."""

    def __init__(self, deadline: _Deadline) -> None:
        self._inner, self._deadline = httpcore.SyncBackend(), deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        left = self._deadline.left(timeout, httpcore.ConnectTimeout)
        inner = self._inner.connect_tcp(host, port, left, local_address, socket_options)
        return _DeadlineStream(inner, self._deadline)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("only TCP connections are made")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _transport(deadline: _Deadline) -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport(trust_env=False)
    if deadline.at is not None:
        # httpx takes no network backend; its transport's connection pool is swapped for one with ours.
        if not isinstance(getattr(transport, "_pool", None), httpcore.ConnectionPool):
            raise RuntimeError("httpx.HTTPTransport has no connection pool to bound: check the httpx version")
        transport._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=_DeadlineBackend(deadline),
        )
    return transport


@dataclass(frozen=True)
class Streamed:
    url: str  # the final URL, after redirects
    response: httpx.Response  # status < 400, body not read yet: iterate `response.iter_bytes()`


@contextlib.contextmanager
def stream(
    url: str,
    *,
    allow_private: bool,
    timeout: float,
    max_redirects: int,
    user_agent: str = "tandem-ingest/0.1",
    headers: Mapping[str, str] | None = None,
    deadline: float | None = None,
) -> Iterator[Streamed]:
    """The response to GET `url`, its body unread, after every hop passed the address check.

    For bodies too large to hold in memory (model weights): the caller streams the body where it wants
    and bounds it itself. `timeout` applies to each network operation; `deadline`, when given, is the
    time in seconds the whole exchange may take (every hop, and the caller reading the body), after
    which it fails. Transport errors while the caller reads the body come out as FetchError too.
    """
    current = url
    limit = _Deadline(deadline)

    def failed(e: httpx.HTTPError) -> FetchError:
        if isinstance(e, httpx.TimeoutException) and limit.passed:
            return FetchError(
                f"{current}: no complete answer within timeoutSeconds {deadline:g} "
                "(the time limit per URL, redirects and body included)"
            )
        return FetchError(f"{current}: {type(e).__name__}: {e}")

    with httpx.Client(
        timeout=timeout, follow_redirects=False, trust_env=False, transport=_transport(limit)
    ) as client:
        for _ in range(max_redirects + 1):
            same_origin = _origin(current) == _origin(url)
            request = _pinned_request(
                client, current, allow_private, timeout, user_agent, headers if same_origin else None
            )
            if limit.passed:
                raise failed(httpx.TimeoutException("resolving the host took the time there was"))
            try:
                response = client.send(request, stream=True)
            except httpx.HTTPError as e:
                raise failed(e) from None
            try:
                if response.is_redirect:
                    location = response.headers.get("location")
                    if not location:
                        raise FetchError(f"{current}: redirect without a Location header")
                    current = urljoin(current, location)
                    continue
                if response.status_code >= 400:
                    hint = ""
                    if response.status_code in (401, 403) and not headers:
                        hint = " (a source behind authentication needs http.headersSecretRef)"
                    raise StatusError(f"{current}: HTTP {response.status_code}{hint}", response.status_code)
                try:
                    yield Streamed(current, response)
                except httpx.HTTPError as e:
                    raise failed(e) from None
                return
            finally:
                response.close()
    raise FetchError(f"{url}: more than {max_redirects} redirects")


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    return (
        parts.scheme,
        (parts.hostname or "").lower(),
        parts.port or (443 if parts.scheme == "https" else 80),
    )


def _pinned_request(
    client: httpx.Client,
    url: str,
    allow_private: bool,
    timeout: float,
    user_agent: str,
    headers: Mapping[str, str] | None,
) -> httpx.Request:
    """A GET to the checked address of `url`'s host, keeping the host name for Host and TLS SNI."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"{url}: only http and https URLs are fetched")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = resolve(parts.hostname, port, allow_private)
    pinned_host = f"[{address}]" if ":" in address else address
    pinned = urlunsplit((parts.scheme, f"{pinned_host}:{port}", parts.path or "/", parts.query, ""))
    host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    return client.build_request(
        "GET",
        pinned,
        headers={**(headers or {}), "Host": host_header, "User-Agent": user_agent},
        extensions={
            "sni_hostname": parts.hostname,
            "timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout},
        },
    )


def fetch(
    url: str,
    *,
    allow_private: bool,
    max_bytes: int,
    timeout: float,
    max_redirects: int,
    headers: Mapping[str, str] | None = None,
) -> Fetched:
    """The whole body of `url` in memory, at most `max_bytes` of it, within `timeout` seconds in all."""
    with stream(
        url,
        allow_private=allow_private,
        timeout=timeout,
        max_redirects=max_redirects,
        headers=headers,
        deadline=timeout,
    ) as got:
        declared = got.response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise FetchError(f"{got.url}: {declared} bytes exceeds maxBytes {max_bytes}")
        body = bytearray()
        for chunk in got.response.iter_bytes():
            body += chunk
            if len(body) > max_bytes:
                raise FetchError(f"{got.url}: more than maxBytes {max_bytes} bytes")
        return Fetched(got.url, got.response.headers.get("content-type"), bytes(body))
