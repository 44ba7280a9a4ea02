"""Who is calling: the TCP peer, or the client a trusted proxy names in X-Forwarded-For.

Only peers inside TRUSTED_PROXIES may say who the client is (and whether it came over https);
anyone else could write any address into the header and so dodge a per-address limit or
frame an innocent address. uvicorn's own proxy handling is off (`proxy_headers=False`
wherever it is started): this middleware, with our setting, is the one place that decides.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SCHEMES = frozenset({"http", "https"})
# One IPv6 host is usually given a whole /64: counting per address would let it rotate forever.
IPV6_LIMIT_PREFIX = 64


def parse_address(text: str | None) -> Address | None:
    """An IP address from a peer or header value ("1.2.3.4", "[::1]:80", "1.2.3.4:5"), else None."""
    if not text:
        return None
    value = text.strip()
    if value.startswith("["):  # [v6]:port
        value = value[1 : value.find("]")] if "]" in value else value
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:1.2.3.4 is 1.2.3.4, whichever way the socket shows it
    return address


def is_trusted(address: Address | None, networks: Iterable[Network]) -> bool:
    """True when the address lies in one of the trusted networks."""
    return address is not None and any(address in network for network in networks)


def resolve_client(peer: str | None, forwarded_for: Sequence[str], networks: Sequence[Network]) -> str | None:
    """The client: the peer unless trusted, else the right-most X-Forwarded-For hop that is not trusted.

    Each trusted proxy appends whom it heard from, so the entries right of the first untrusted
    one were written by proxies we trust; everything left of it may be the client's invention.
    """
    current = parse_address(peer)
    if not is_trusted(current, networks):
        return peer if current is None else str(current)
    hops = [part for value in forwarded_for for part in value.split(",") if part.strip()]
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:  # not written by a proxy we trust: stop at the last hop we know
            break
        current = address
        if not is_trusted(address, networks):
            break
    return str(current)


def limit_key(address: str | None) -> str:
    """The form of a client address that rate limits count: an IPv6 address as its /64."""
    parsed = parse_address(address)
    if parsed is None:
        return (address or "unknown")[:64]
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{parsed}/{IPV6_LIMIT_PREFIX}", strict=False))
    return str(parsed)


class TrustedProxyHeaders:
    """ASGI middleware: the client address and scheme a trusted proxy forwarded become the request's."""

    def __init__(self, app: ASGIApp, networks: Sequence[Network]) -> None:
        self.app = app
        self.networks = tuple(networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.networks:
            peer = scope.get("client")
            if is_trusted(parse_address(peer[0] if peer else None), self.networks):
                self._apply(scope)
        await self.app(scope, receive, send)

    def _apply(self, scope: Scope) -> None:
        forwarded: list[str] = []
        proto = None
        for name, value in scope.get("headers", ()):
            if name == b"x-forwarded-for":
                forwarded.append(value.decode("latin-1"))
            elif name == b"x-forwarded-proto":
                proto = value.decode("latin-1").split(",")[-1].strip().lower()
        if forwarded:
            peer = scope.get("client")
            client = resolve_client(peer[0] if peer else None, forwarded, self.networks)
            if client:
                scope["client"] = (client, 0)
        if proto in SCHEMES:
            scope["scheme"] = proto if scope["type"] == "http" else proto.replace("http", "ws")
