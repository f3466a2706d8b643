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
    """
    peer = request.client.host if request.client else UNKNOWN
    if not _trusted(peer, trusted_proxies):
        return peer
    forwarded = ",".join(request.headers.getall("x-forwarded-for", []))
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _parse(hop)
        if address is None:
            return peer  # a malformed hop: believe nothing to its left
        if not _trusted(str(address), trusted_proxies):
            return str(address)
    return str(_parse(hops[0])) if hops else peer


def _parse(value: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(value)
    except ValueError:
        return None


def _trusted(address: str, proxies: Sequence[IPv4Network | IPv6Network]) -> bool:
    parsed = _parse(address)
    return parsed is not None and any(parsed in network for network in proxies)
