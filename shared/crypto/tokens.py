"""Resource tokens and client fingerprints.

A token is derived from the command id with HMAC-SHA256 under the server's token key. A retried
request (same ``Idempotency-Key``, hence the same command id) therefore gets the same token back
without the token ever being stored: the platform keeps only its SHA-256 hash. Tokens carry 256
bits from a keyed PRF, so a fast hash is the right way to store them (no password KDF needed).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uuid import UUID

TOKEN_PREFIX = "spn_"  # noqa: S105  (a public prefix, not a secret)
_TOKEN_RE = re.compile(r"^spn_[A-Za-z0-9_-]{43}$")


def mint_token(key: bytes, command_id: UUID) -> str:
    """The token for the resource created by ``command_id``."""
    digest = hmac.new(key, b"resource-token:" + command_id.bytes, hashlib.sha256).digest()
    return TOKEN_PREFIX + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def looks_like_token(value: str) -> bool:
    """Cheap shape check before any lookup."""
    return bool(_TOKEN_RE.match(value))


def hash_token(token: str) -> str:
    """What the platform stores and looks tokens up by."""
    return hashlib.sha256(token.encode()).hexdigest()


def fingerprint(key: bytes, client_ip: str) -> str:
    """A keyed hash of the client's /24 (IPv4) or /48 (IPv6) network.

    Keyed, because the IPv4 /24 space is small enough to reverse a plain hash by brute force.
    """
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        network = "unknown"
    else:
        prefix = 24 if address.version == 4 else 48  # noqa: PLR2004
        network = str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
    return hmac.new(key, b"fingerprint:" + network.encode(), hashlib.sha256).hexdigest()[:32]
