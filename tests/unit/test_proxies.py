"""Whose address a request comes from: X-Forwarded-For only counts from trusted proxies."""

from __future__ import annotations

import ipaddress

import pytest

from alchemist.proxies import limit_key, parse_address, resolve_client

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
INGRESS = (*LOOPBACK, ipaddress.ip_network("10.0.0.0/8"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.5", "203.0.113.5"),
        (" 203.0.113.5 ", "203.0.113.5"),
        ("203.0.113.5:4711", "203.0.113.5"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:127.0.0.1", "127.0.0.1"),  # the IPv4-mapped form is the IPv4 address
        ("2130706433", None),  # decimal IPs are not addresses here
        ("unknown", None),
        ("", None),
        (None, None),
        ("1.2.3.4.5", None),
    ],
)
def test_addresses_parse_in_every_form_a_proxy_writes(text: str | None, expected: str | None) -> None:
    parsed = parse_address(text)
    assert (str(parsed) if parsed else None) == expected


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("198.51.100.7", ["203.0.113.5"], "198.51.100.7"),  # an untrusted peer's header is ignored
        ("198.51.100.7", [], "198.51.100.7"),
        ("127.0.0.1", [], "127.0.0.1"),  # a trusted peer that names nobody is the client
        ("127.0.0.1", ["203.0.113.5"], "203.0.113.5"),
        ("127.0.0.1", ["198.51.100.99, 203.0.113.5"], "203.0.113.5"),  # client's prefix: not believed
        ("127.0.0.1", ["198.51.100.99", "203.0.113.5"], "203.0.113.5"),  # two header lines, one list
        ("127.0.0.1", ["203.0.113.5, 10.1.2.3"], "10.1.2.3"),  # 10/8 is not trusted here
        ("127.0.0.1", ["garbage, 203.0.113.5"], "203.0.113.5"),
        ("127.0.0.1", ["203.0.113.5, garbage"], "127.0.0.1"),  # a trusted hop never writes garbage
        ("::ffff:127.0.0.1", ["2001:db8::5"], "2001:db8::5"),
        ("::1", ["[2001:db8::5]:1234"], "2001:db8::5"),
    ],
)
def test_the_client_is_the_rightmost_untrusted_hop(peer: str, forwarded: list[str], expected: str) -> None:
    assert resolve_client(peer, forwarded, LOOPBACK) == expected


def test_a_chain_of_trusted_proxies_is_walked_back_to_the_client() -> None:
    assert resolve_client("10.0.0.2", ["203.0.113.5, 10.9.9.9"], INGRESS) == "203.0.113.5"
    assert resolve_client("10.0.0.2", ["10.1.1.1, 10.9.9.9"], INGRESS) == "10.1.1.1"  # all trusted: leftmost
    assert resolve_client("10.0.0.2", ["203.0.113.5"], ()) == "10.0.0.2"  # trust nobody


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.5", "203.0.113.5"),
        ("::ffff:203.0.113.5", "203.0.113.5"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),  # one IPv6 host owns a /64
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        (None, "unknown"),
        ("testclient", "testclient"),
    ],
)
def test_limits_count_ipv4_addresses_and_ipv6_slash_64s(address: str | None, key: str) -> None:
    assert limit_key(address) == key
