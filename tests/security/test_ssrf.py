"""Issue 15, item 3: a manifest's URL reaches only globally routable addresses (SSRF by address class).

The guard decides by what an address *is* (`ipaddress.is_global` and the special-purpose registries),
not by a list of flags, and looks through addresses that carry an IPv4 address inside an IPv6 one
(IPv4-mapped, 6to4, NAT64): the IPv4 address is where the connection ends up.
"""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tandem.workloads.knowledge import safe_http
from tandem.workloads.knowledge.safe_http import AddressRefused, fetch

# Reached from a pod, each of these is somebody's internal service, never the public web.
HOSTILE = [
    "100.100.100.200",  # a cloud's metadata service, in carrier-grade NAT space (100.64.0.0/10)
    "100.64.0.1",  # carrier-grade NAT: some clusters put pods and services here
    "100.127.255.254",
    "192.0.0.8",  # IETF protocol assignments (192.0.0.0/24), not globally reachable
    "198.18.0.1",  # benchmarking
    "224.0.0.251",  # multicast (is_global says True for it on Python 3.11)
    "255.255.255.255",
    "0.0.0.0",
    "2002:a9fe:a9fe::1",  # 6to4 carrying 169.254.169.254 (metadata)
    "2002:7f00:1::1",  # 6to4 carrying 127.0.0.1
    "2002:a00:1::",  # 6to4 carrying 10.0.0.1
    "2002:6464:64c8::1",  # 6to4 carrying 100.100.100.200
    "::ffff:100.100.100.200",  # IPv4-mapped carrier-grade NAT
    "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe",  # NAT64 (well-known prefix) to 169.254.169.254
    "64:ff9b::6464:64c8",  # NAT64 to 100.100.100.200
    "64:ff9b:1::a00:1",  # local-use NAT64 (RFC 8215)
    "fec0::1",  # deprecated site-local
    "fd00:ec2::254",  # a cloud's IPv6 metadata address (unique local)
    "ff02::1",  # multicast
    "3fff::1",  # documentation (RFC 9637)
    "2001:db8::1",
    "::",
]

PUBLIC = [
    "93.184.216.34",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "::ffff:93.184.216.34",  # IPv4-mapped public address: the IPv4 address is what is reached
    "2002:5db8:d822::1",  # 6to4 carrying 93.184.216.34
    "64:ff9b::5db8:d822",  # NAT64 to 93.184.216.34 (what DNS64 answers in an IPv6-only cluster)
]


def _same(a: str, b: str) -> bool:
    return ipaddress.ip_address(a) == ipaddress.ip_address(b)


def _resolving_to(address: str) -> Any:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET

    def fake(host: str, port: int, **_: Any) -> list[Any]:
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]

    return fake


@pytest.mark.parametrize("address", HOSTILE)
def test_addresses_that_are_not_globally_routable_are_refused(
    address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _resolving_to(address))
    with pytest.raises(AddressRefused, match="allowPrivateNetworks") as refused:
        safe_http.resolve("innocent.example.com", 443, allow_private=False)
    assert _same(refused.value.address, address)
    # allowPrivateNetworks: the manifest author says so, and the checked address is the one used.
    assert _same(safe_http.resolve("innocent.example.com", 443, allow_private=True), address)


@pytest.mark.parametrize("address", PUBLIC)
def test_globally_routable_addresses_pass(address: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _resolving_to(address))
    assert _same(safe_http.resolve("example.com", 443, allow_private=False), address)


def test_one_hostile_answer_among_public_ones_refuses_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(host: str, port: int, **_: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("100.100.100.200", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(AddressRefused, match=r"100\.100\.100\.200"):
        safe_http.resolve("rebinding.example.com", 80, allow_private=False)


def test_the_refusal_names_the_address_a_6to4_address_carries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _resolving_to("2002:a9fe:a9fe::1"))
    with pytest.raises(AddressRefused, match=r"169\.254\.169\.254"):
        safe_http.resolve("innocent.example.com", 443, allow_private=False)


class _Redirect(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.target)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def redirector() -> Iterator[tuple[int, type[_Redirect]]]:
    handler = type("Handler", (_Redirect,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], handler
    server.shutdown()
    server.server_close()


def test_a_redirect_into_carrier_grade_nat_is_refused_at_its_hop(
    redirector: tuple[int, type[_Redirect]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first hop is a public server (played by a local one whose name resolves to a public-looking
    address that the test routes to 127.0.0.1); its redirect to the metadata service is refused before
    anything connects to it."""
    port, handler = redirector
    handler.target = f"http://metadata.example:{port}/latest/meta-data/"
    answers = {"public.example": "93.184.216.34", "metadata.example": "100.100.100.200"}
    real_getaddrinfo = socket.getaddrinfo

    def fake(host: str, port_: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port_))]
        return real_getaddrinfo(host, port_, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    # The connection goes to the checked address: send the "public" one to the local server.
    real_create_connection = socket.create_connection
    connected: list[str] = []

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        connected.append(address[0])
        if address[0] != "93.184.216.34":
            raise ConnectionRefusedError(f"the test contacts nothing but its own server, not {address[0]}")
        return real_create_connection(("127.0.0.1", address[1]), *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", create_connection)
    with pytest.raises(AddressRefused) as refused:
        fetch(
            f"http://public.example:{port}/", allow_private=False, max_bytes=1000, timeout=5, max_redirects=3
        )
    assert refused.value.host == "metadata.example" and refused.value.address == "100.100.100.200"
    assert connected == ["93.184.216.34"]  # the redirect's target was never contacted
