"""Who is calling: the client's address (through trusted proxies only) and its fingerprint."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any

from litestar import Request

UNKNOWN = "unknown"


def client_ip(
    request: Request[Any, Any, Any], trusted_proxies: Sequence[IPv4Network | IPv6Network]
) -> str:
    """The address of the client that made the request.

    The TCP peer, unless the peer is a trusted proxy: then ``X-Forwarded-For`` is read from the
    right, skipping trusted proxies, and the first address no trusted proxy vouches for is the
    client. Entries left of it were written by the client itself and could be anything.

    Addresses come back in canonical form, an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``, what
    a dual-stack socket reports for an IPv4 client) as the IPv4 address.
    """
    raw_peer = request.client.host if request.client else UNKNOWN
    peer = _parse(raw_peer)
    if peer is None or not _trusted(peer, trusted_proxies):
        return raw_peer if peer is None else str(peer)
    forwarded = ",".join(request.headers.getall("x-forwarded-for", []))
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _parse(hop)
        if address is None:
            return str(peer)  # a malformed hop: believe nothing to its left
        if not _trusted(address, trusted_proxies):
            return str(address)
    # Every hop is a trusted proxy (each parsed above): the leftmost is the client.
    return str(_parse(hops[0])) if hops else str(peer)


def _parse(value: str) -> IPv4Address | IPv6Address | None:
    try:
        address = ip_address(value)
    except ValueError:
        return None
    # Else every IPv4 client of a dual-stack listener would fall in one IPv6 /48 (one
    # fingerprint for the whole IPv4 internet) and no IPv4 proxy network would match.
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(
    address: IPv4Address | IPv6Address, proxies: Sequence[IPv4Network | IPv6Network]
) -> bool:
    return any(address in network for network in proxies)
