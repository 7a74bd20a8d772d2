"""Fetch a URL named in a manifest without letting the manifest reach internal services (SSRF).

Every hop (the URL and each redirect) is resolved once, every resolved address is checked, and the
connection goes to the checked address (the host name is kept for the Host header and TLS SNI), so
a DNS answer that changes between the check and the connection cannot smuggle a private address in.
Responses are bounded in size and time; redirects are followed by hand, at most `max_redirects`.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx


class FetchError(Exception):
    """A URL could not be fetched; the message says why in terms a manifest author can act on."""


@dataclass(frozen=True)
class Fetched:
    url: str  # the final URL, after redirects
    content_type: str | None
    data: bytes


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


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
                raise FetchError(
                    f"{host} resolves to {address}, a private, loopback or link-local address; "
                    "set allowPrivateNetworks: true on the source if this is intended"
                )
    return str(addresses[0])


def fetch(url: str, *, allow_private: bool, max_bytes: int, timeout: float, max_redirects: int) -> Fetched:
    current = url
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _ in range(max_redirects + 1):
            parts = urlsplit(current)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise FetchError(f"{current}: only http and https URLs are fetched")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            address = resolve(parts.hostname, port, allow_private)
            pinned_host = f"[{address}]" if ":" in address else address
            pinned = urlunsplit((parts.scheme, f"{pinned_host}:{port}", parts.path or "/", parts.query, ""))
            host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
            request = client.build_request(
                "GET",
                pinned,
                headers={"Host": host_header, "User-Agent": "tandem-ingest/0.1"},
                extensions={
                    "sni_hostname": parts.hostname,
                    "timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout},
                },
            )
            try:
                response = client.send(request, stream=True)
            except httpx.HTTPError as e:
                raise FetchError(f"{current}: {type(e).__name__}: {e}") from None
            try:
                if response.is_redirect:
                    location = response.headers.get("location")
                    if not location:
                        raise FetchError(f"{current}: redirect without a Location header")
                    current = urljoin(current, location)
                    continue
                if response.status_code >= 400:
                    raise FetchError(f"{current}: HTTP {response.status_code}")
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise FetchError(f"{current}: {declared} bytes exceeds maxBytes {max_bytes}")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise FetchError(f"{current}: more than maxBytes {max_bytes} bytes")
                return Fetched(current, response.headers.get("content-type"), bytes(body))
            except httpx.HTTPError as e:
                raise FetchError(f"{current}: {type(e).__name__}: {e}") from None
            finally:
                response.close()
    raise FetchError(f"{url}: more than {max_redirects} redirects")
