"""The client address the edge vouches for: X-Forwarded-For is believed only from configured proxies."""

from __future__ import annotations

import ipaddress

import pytest

from aigw_server.edge.gateway import client_address

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("peer", "header", "client"),
    [
        ("203.0.113.5", b"", "203.0.113.5"),
        ("203.0.113.5", b"198.51.100.1", "203.0.113.5"),  # not a trusted proxy: its header is ignored
        ("10.0.0.2", b"198.51.100.1", "198.51.100.1"),
        ("10.0.0.2", b"192.0.2.9, 198.51.100.1, 10.0.0.7", "198.51.100.1"),  # skip proxies from the right
        ("10.0.0.2", b"spoofed, 198.51.100.1", "198.51.100.1"),
        ("10.0.0.2", b"198.51.100.1, garbage", "10.0.0.2"),  # a broken hop: the proxy's own address
        ("10.0.0.2", b"198.51.100.1, caf\xe9", "10.0.0.2"),  # non-ASCII: the proxy's, never the edge's
        ("10.0.0.2", b"10.0.0.3", "10.0.0.2"),
        ("fd00::1", b"2001:db8::7", "2001:db8::7"),
    ],
)
def test_the_client_address(peer: str, header: bytes, client: str) -> None:
    assert client_address(peer, header, PROXIES) == client


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_address("127.0.0.9", b"203.0.113.1", ()) == "127.0.0.9"
