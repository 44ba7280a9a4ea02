"""Outbound HTTP to URLs users give us (webhooks), kept off this side's own network (SSRF).

A URL is refused when its host is, or resolves to, any loopback, private, link-local, CGNAT,
multicast, reserved or unspecified address (IPv4-mapped and other IPv6 forms that embed an
IPv4 address are judged by that address), or a cloud metadata endpoint. Every address a name
resolves to is checked, and the request then goes to an address that was checked (pinned: a
second DNS answer cannot swap in another), with the Host header, TLS SNI and certificate
check still for the name. Operators may allow intranet networks (CIDRs) explicitly.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import httpx

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

SCHEMES = ("http", "https")
PUBLIC_ONLY = "webhooks go to public addresses only (intranet ones if WEBHOOK_ALLOWED_NETWORKS allows them)"
# Cloud metadata endpoints (AWS/GCP/Azure/OpenStack, AWS over IPv6, Alibaba, Oracle): refused
# even when an allowed network contains them, since they hand out the machine's credentials.
METADATA_ADDRESSES = frozenset(
    ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
_V4: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified"),  # "this network": 0.0.0.0 reaches this very machine on Linux
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "reserved (documentation)"),
    ("192.88.99.0/24", "reserved (6to4 relay)"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "reserved (benchmarking)"),
    ("198.51.100.0/24", "reserved (documentation)"),
    ("203.0.113.0/24", "reserved (documentation)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),  # includes the broadcast address
)
# Only global unicast (2000::/3) is reachable on the internet; these are carved out of it.
_V6: tuple[tuple[str, str], ...] = (
    ("2001::/23", "reserved (IETF protocol assignments, Teredo)"),
    ("2001:db8::/32", "reserved (documentation)"),
    ("3fff::/20", "reserved (documentation)"),
)
V4_FORBIDDEN = tuple((IPv4Network(net), why) for net, why in _V4)
V6_FORBIDDEN = tuple((IPv6Network(net), why) for net, why in _V6)
V6_GLOBAL = IPv6Network("2000::/3")
LOOPBACK = IPv4Address("127.0.0.1")
NAT64 = IPv6Network("64:ff9b::/96")  # the well-known prefix: the last 32 bits are an IPv4 address
# RFC 6761: these names are the machine itself, whatever a resolver might answer.
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_NUMBER = re.compile(r"0x[0-9a-f]*|0[0-7]*|[1-9][0-9]*", re.IGNORECASE)


class ForbiddenAddress(ValueError):  # noqa: N818 (a verdict, like the webhook channel's)
    """The URL may not be called from here; the message says why (safe to show the user)."""


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma- or space-separated CIDRs (a bare address is one host); ValueError names a bad one."""
    networks = []
    for part in text.replace(",", " ").split():
        try:
            networks.append(ip_network(part, strict=True))
        except ValueError as exc:
            raise ValueError(f"{part!r} is not a network in CIDR form (e.g. 10.20.0.0/16): {exc}") from exc
    return tuple(networks)


def literal_address(host: str) -> Address | None:
    """The address a host spells directly, in any form a resolver accepts (127.1, 0x7f000001,
    2130706433, 0177.0.0.1, [::1], a trailing dot), else None (a name)."""
    text = host.strip().rstrip(".").lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ip_address(text.split("%", 1)[0])  # an IPv6 zone (fe80::1%eth0) names no other host
    except ValueError:
        pass
    # inet_aton's classic forms: 1 to 4 parts, each decimal, octal (0...) or hex (0x...), the
    # last one filling the remaining bytes. Resolvers (glibc, browsers' URL parsers) accept them.
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_NUMBER.fullmatch(part) for part in parts):
        return None
    numbers = [_number(part) for part in parts]
    if any(n is None for n in numbers):
        return None
    *leading, last = [n for n in numbers if n is not None]
    if any(n > 255 for n in leading) or last >= 256 ** (4 - len(leading)):
        return None
    value = last
    for index, byte in enumerate(leading):
        value += byte << (8 * (3 - index))
    return IPv4Address(value)


def _number(part: str) -> int | None:
    if part.lower().startswith("0x"):
        return int(part[2:], 16) if len(part) > 2 else 0
    if part.startswith("0") and len(part) > 1:
        return int(part[1:], 8)
    return int(part)


def embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def refusal(address: Address, allowed: Iterable[Network] = ()) -> str | None:
    """Why this address may not be called, e.g. "127.0.0.1 (loopback)"; None: it may."""
    inner = embedded_ipv4(address) if isinstance(address, IPv6Address) else None
    if address in METADATA_ADDRESSES or inner in METADATA_ADDRESSES:
        return f"{address} (a cloud metadata endpoint)"
    if any(address.version == net.version and address in net for net in allowed):
        return None
    if inner is not None:
        why = refusal(inner, allowed)
        return None if why is None else f"{address} = {why}"
    kind = _forbidden_kind(address)
    return None if kind is None else f"{address} ({kind})"


def _forbidden_kind(address: Address) -> str | None:
    if isinstance(address, IPv4Address):
        return next((why for net4, why in V4_FORBIDDEN if address in net4), None)
    if address in V6_GLOBAL:
        return next((why for net, why in V6_FORBIDDEN if address in net), None)
    return (
        "loopback" if address.is_loopback
        else "unspecified" if address.is_unspecified
        else "link-local" if address.is_link_local
        else "multicast" if address.is_multicast
        else "private" if address.is_private
        else "reserved"
    )  # fmt: skip


@dataclass(frozen=True)
class Target:
    """A URL split into what the connection needs."""

    url: httpx.URL
    host: str  # as the URL spells it (a name, or an address)
    port: int


def check_url(url: str, allowed: Iterable[Network] = ()) -> Target:
    """The URL's target when it is http(s) and its host is not a forbidden literal address or a
    loopback name; ForbiddenAddress otherwise. Names are resolved (and checked) at connect time."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise ForbiddenAddress(f"not a valid URL: {exc}") from exc
    if parsed.scheme not in SCHEMES:
        raise ForbiddenAddress(f"the URL must be http or https, not {parsed.scheme or 'schemeless'!r}")
    host = parsed.raw_host.decode("ascii")  # IDNA-encoded: what DNS and TLS are asked about
    if not host:
        raise ForbiddenAddress("the URL has no host")
    name = host.rstrip(".").lower()
    # The machine itself whatever DNS says (RFC 6761), unless loopback is allowed outright.
    if (name in _LOOPBACK_NAMES or name.endswith(".localhost")) and refusal(LOOPBACK, allowed):
        raise ForbiddenAddress(f"{host} is this machine (loopback); {PUBLIC_ONLY}")
    literal = literal_address(host)
    if literal is not None:
        why = refusal(literal, allowed)
        if why is not None:
            raise ForbiddenAddress(f"{why} is not a public address; {PUBLIC_ONLY}")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return Target(parsed, host, port)


async def resolve(target: Target, allowed: Iterable[Network] = (), timeout: float = 10.0) -> list[Address]:
    """Every address the target's host resolves to, all checked; ForbiddenAddress if any is refused
    (a name that also points inside is refused whole), OSError when it does not resolve."""
    allowed = tuple(allowed)
    literal = literal_address(target.host)
    if literal is not None:
        found: list[Address] = [literal]
    else:
        loop = asyncio.get_running_loop()
        infos = await asyncio.wait_for(
            loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM), timeout
        )
        found = []
        for *_, sockaddr in infos:
            address = ip_address(str(sockaddr[0]).split("%", 1)[0])
            if address not in found:
                found.append(address)
    if not found:
        raise OSError(f"{target.host} has no address")
    for address in found:
        why = refusal(address, allowed)
        if why is not None:
            raise ForbiddenAddress(f"{target.host} resolves to {why}, not a public address; {PUBLIC_ONLY}")
    return found


async def pinned_post(
    client: httpx.AsyncClient,
    url: str,
    *,
    content: bytes,
    headers: Mapping[str, str],
    allowed: Iterable[Network] = (),
    timeout: float = 30.0,
) -> int:
    """POST to the URL at an address that was checked; the response status (its body is never read).

    The request goes to the checked IP while Host, TLS SNI and certificate verification stay
    with the name; redirects are never followed. The connection is closed afterwards, so no
    pooled connection (made for another name at the same IP) is ever reused for this one.
    """
    allowed = tuple(allowed)
    target = check_url(url, allowed)
    addresses = await resolve(target, allowed, timeout=min(timeout, 10.0))
    sent_headers = {**headers, "Host": target.url.netloc.decode("ascii"), "Connection": "close"}
    extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
    last_error: httpx.TransportError | None = None

    async def attempt(address: Address) -> int:
        pinned = target.url.copy_with(host=str(address))
        async with client.stream(
            "POST", pinned, content=content, headers=sent_headers, extensions=extensions,
            follow_redirects=False, timeout=timeout,
        ) as response:  # fmt: skip
            return response.status_code

    for address in addresses:  # in the resolver's order, as a browser would
        try:
            return await asyncio.wait_for(attempt(address), timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            last_error = exc
    assert last_error is not None
    raise last_error
