"""Requests to URLs a stranger chose (``notify_url``): only to the public internet.

Why this exists: the gateway sits inside the platform's network, next to the platform Postgres,
NATS, the customer servers and cloud metadata (169.254.169.254). A notify URL that names, or
resolves to, any of those would turn every notification into a request forged from inside.
So a target must resolve only to global addresses (``ipaddress``'s ``is_global``: not private,
shared, loopback, link-local, documentation, multicast or reserved; an IPv6 address that
stands for an IPv4 one, v4-mapped, 6to4 or NAT64, is judged by that one), the request goes to the
address that was checked (the name is not resolved again, so DNS rebinding cannot swap it),
redirects are never followed (a 3xx is a failed attempt), and every attempt has a timeout and
reads at most ``MAX_RESPONSE_BYTES`` of the answer. ``allowed`` lets a test stack's receiver
through (``SPINUP_NOTIFY_ALLOWED_NETWORKS``, empty in production).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import urlsplit

import httpx

from shared.contracts.errors import ErrorCode, SpinupError

Networks = Sequence[IPv4Network | IPv6Network]
IPAddress = IPv4Address | IPv6Address

TIMEOUT = httpx.Timeout(5.0, connect=3.0)
MAX_RESPONSE_BYTES = 64 * 1024
_RESOLVE_TIMEOUT_S = 3.0
_SCHEMES = {"http": 80, "https": 443}


class UnsafeTargetError(Exception):
    """The URL is malformed, does not resolve, or reaches a non-public address."""


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL and the address the request will be sent to."""

    url: str
    scheme: str
    host: str
    port: int
    address: IPAddress


#: NAT64's well-known prefix (RFC 6052): an address carries an IPv4 address in its last 32 bits,
#: and where a network routes the prefix, a request to it reaches that IPv4 address.
_NAT64 = IPv6Network("64:ff9b::/96")
#: NAT64's local-use prefix (RFC 8215): where the IPv4 address sits depends on the network.
_LOCAL_NAT64 = IPv6Network("64:ff9b:1::/48")


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address a v4-mapped, 6to4 or NAT64 address stands for, if any.

    (Teredo's prefix is not global, so its addresses are refused as they are.)
    """
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _permitted(address: IPAddress, allowed: Networks) -> bool:
    if any(address in network for network in allowed):
        return True
    if isinstance(address, IPv6Address):
        if address in _LOCAL_NAT64:
            return False
        if (embedded := _embedded_ipv4(address)) is not None:
            return _permitted(embedded, allowed)
    return address.is_global and not address.is_multicast


def _parts(url: str) -> tuple[str, str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        msg = f"not a valid URL: {exc}"
        raise UnsafeTargetError(msg) from exc
    if parts.scheme not in _SCHEMES or not parts.hostname:
        msg = "must be an absolute http:// or https:// URL"
        raise UnsafeTargetError(msg)
    if parts.username is not None or parts.password is not None:
        msg = "must not hold a user name or password"
        raise UnsafeTargetError(msg)
    return parts.scheme, parts.hostname, port or _SCHEMES[parts.scheme]


async def resolve(url: str, allowed: Networks) -> Target:
    """Check ``url`` and pick the public address a request to it goes to.

    Raises:
        UnsafeTargetError: saying why, in words fit for the caller.
    """
    scheme, host, port = _parts(url)
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), _RESOLVE_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            msg = f"the host {host!r} does not resolve"
            raise UnsafeTargetError(msg) from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    # Every address must be public: a name that also resolves to 10.0.0.1 is refused whole.
    refused = [a for a in addresses if not _permitted(a, allowed)]
    if refused or not addresses:
        msg = (
            f"{host!r} reaches a private, loopback, link-local or otherwise non-public address;"
            " notifications go to the public internet only"
        )
        raise UnsafeTargetError(msg)
    return Target(url=url, scheme=scheme, host=host, port=port, address=addresses[0])


async def check_url(url: str, allowed: Networks) -> None:
    """Refuse a notify URL before it is stored.

    Raises:
        SpinupError: ``invalid_request`` naming what is wrong.
    """
    try:
        await resolve(url, allowed)
    except UnsafeTargetError as exc:
        msg = f"notify_url {exc}."
        raise SpinupError(ErrorCode.INVALID_REQUEST, msg) from exc


async def post(
    client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str], allowed: Networks
) -> int:
    """POST ``body`` to the address ``url`` resolves to now; the status code.

    Raises:
        UnsafeTargetError: the URL no longer passes the check.
        httpx.HTTPError: the attempt failed (connect, timeout, TLS...).
    """
    target = await resolve(url, allowed)
    parts = urlsplit(url)
    literal = (
        f"[{target.address}]" if isinstance(target.address, IPv6Address) else str(target.address)
    )
    pinned = parts._replace(netloc=f"{literal}:{target.port}").geturl()
    default_port = _SCHEMES[target.scheme] == target.port
    host_header = target.host if default_port else f"{target.host}:{target.port}"
    request = client.build_request(
        "POST",
        pinned,
        content=body,
        headers={**headers, "host": host_header, "content-type": "application/json"},
        # TLS still names (and verifies) the host the URL holds, not the address.
        extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
    )
    response = await client.send(request, stream=True, follow_redirects=False)
    try:
        read = 0
        async for chunk in response.aiter_raw():
            read += len(chunk)
            if read >= MAX_RESPONSE_BYTES:
                break
    finally:
        await response.aclose()
    return response.status_code
