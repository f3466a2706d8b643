"""Webhook signature schemes, checked exactly as each provider documents them. Pure: no I/O.

Each scheme answers one question about a captured request: would the provider's own library
accept it with this secret? ``valid``, ``invalid`` (with why) or ``missing`` (the scheme's
header is absent). Comparisons are constant-time (``hmac.compare_digest``) even though the
answer is shown to the secret's owner only: the code is written once, the safe way.

- Stripe: ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]``, HMAC-SHA256 of ``"{t}.{body}"``
  keyed with the whole secret text (``whsec_...``), 300 s tolerance.
- GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of body>``; no timestamp.
- Slack: ``X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:{X-Slack-Request-Timestamp}:{body}">``,
  5 minute tolerance.
- Shopify: ``X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of body>``; no timestamp.
- Standard Webhooks: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64>``
  (space-separated, any may match), HMAC-SHA256 of ``"{id}.{timestamp}.{body}"`` keyed with the
  base64-decoded part of a ``whsec_`` secret, 5 minute tolerance.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Literal

import msgspec

Headers = Sequence[tuple[str, str]]


class Scheme(StrEnum):
    """The signature schemes a receiver can check."""

    STRIPE = "stripe"
    GITHUB = "github"
    SLACK = "slack"
    SHOPIFY = "shopify"
    STANDARD_WEBHOOKS = "standard-webhooks"


class Reason(StrEnum):
    """Why a signature is invalid (stable strings: clients match on them)."""

    #: The signature does not match: a wrong secret, or the body (or id, timestamp) changed.
    SIGNATURE_MISMATCH = "signature_mismatch"
    #: The signed timestamp is further from the time the request arrived than the tolerance.
    TIMESTAMP_OUTSIDE_TOLERANCE = "timestamp_outside_tolerance"
    #: A signature header is there but not in the scheme's format.
    MALFORMED_HEADER = "malformed_header"


class SignatureCheck(msgspec.Struct, frozen=True, kw_only=True):
    """The verdict on one captured request; ``reason`` says why when not ``valid``."""

    status: Literal["valid", "invalid", "missing"]
    reason: str | None = None


class InvalidSecretError(ValueError):
    """A secret the scheme cannot use (a Standard Webhooks secret that is not base64)."""


# The providers' own defaults (Stripe's and Slack's docs, and the Standard Webhooks spec, all
# reject a timestamp more than five minutes away).
DEFAULT_TOLERANCE_S: dict[Scheme, int | None] = {
    Scheme.STRIPE: 300,
    Scheme.GITHUB: None,
    Scheme.SLACK: 300,
    Scheme.SHOPIFY: None,
    Scheme.STANDARD_WEBHOOKS: 300,
}
_WHSEC_PREFIX = "whsec_"
_HEX_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
# Unix seconds as providers send them: digits only, no sign, no fraction.
_UNIX_SECONDS = re.compile(r"^[0-9]{1,12}$")

VALID = SignatureCheck(status="valid")


def _invalid(reason: Reason) -> SignatureCheck:
    return SignatureCheck(status="invalid", reason=reason.value)


def _missing(header: str) -> SignatureCheck:
    return SignatureCheck(status="missing", reason=f"no {header} header")


def _header(headers: Headers, name: str) -> str | None:
    """The first value of a header, names compared without case."""
    wanted = name.lower()
    return next((value for key, value in headers if key.lower() == wanted), None)


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _any_matches(expected: bytes, candidates: Sequence[bytes]) -> bool:
    # Every candidate is compared (no early exit), each in constant time.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    return matched


class _MalformedError(Exception):
    """A signature header (or one it needs) is not in the scheme's format."""


def _outside(timestamp: str, received_at: float, tolerance_s: int | None) -> bool:
    """Whether ``timestamp`` is outside the tolerance around ``received_at``."""
    if not _UNIX_SECONDS.fullmatch(timestamp.strip()):
        raise _MalformedError
    if tolerance_s is None:
        return False
    return abs(received_at - int(timestamp)) > tolerance_s


def standard_webhooks_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64 after an optional ``whsec_``.

    Raises:
        InvalidSecretError: the rest is not base64, or empty.
    """
    encoded = secret.removeprefix(_WHSEC_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        msg = "a Standard Webhooks secret is `whsec_` followed by base64"
        raise InvalidSecretError(msg) from None
    if not key:
        msg = "a Standard Webhooks secret is `whsec_` followed by base64"
        raise InvalidSecretError(msg)
    return key


def _stripe(
    secret: str, headers: Headers, body: bytes, received_at: float, tolerance_s: int | None
) -> SignatureCheck:
    header = _header(headers, "Stripe-Signature")
    if header is None:
        return _missing("Stripe-Signature")
    timestamp: str | None = None
    signatures: list[bytes] = []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            raise _MalformedError
        if name == "t":
            timestamp = value
        elif name == "v1":
            if not _HEX_SHA256.fullmatch(value):
                raise _MalformedError
            signatures.append(value.lower().encode())
    if timestamp is None or not signatures:
        raise _MalformedError
    outside = _outside(timestamp, received_at, tolerance_s)
    expected = _hmac(secret.encode(), timestamp.encode() + b"." + body).hex().encode()
    if not _any_matches(expected, signatures):
        return _invalid(Reason.SIGNATURE_MISMATCH)
    return _invalid(Reason.TIMESTAMP_OUTSIDE_TOLERANCE) if outside else VALID


def _github(
    secret: str,
    headers: Headers,
    body: bytes,
    received_at: float,  # noqa: ARG001  (GitHub signs no timestamp)
    tolerance_s: int | None,  # noqa: ARG001
) -> SignatureCheck:
    header = _header(headers, "X-Hub-Signature-256")
    if header is None:
        return _missing("X-Hub-Signature-256")
    algorithm, sep, digest = header.strip().partition("=")
    if algorithm != "sha256" or not sep or not _HEX_SHA256.fullmatch(digest):
        raise _MalformedError
    expected = _hmac(secret.encode(), body).hex().encode()
    if not hmac.compare_digest(expected, digest.lower().encode()):
        return _invalid(Reason.SIGNATURE_MISMATCH)
    return VALID


def _slack(
    secret: str, headers: Headers, body: bytes, received_at: float, tolerance_s: int | None
) -> SignatureCheck:
    header = _header(headers, "X-Slack-Signature")
    if header is None:
        return _missing("X-Slack-Signature")
    timestamp = _header(headers, "X-Slack-Request-Timestamp")
    if timestamp is None:
        raise _MalformedError
    version, sep, digest = header.strip().partition("=")
    if version != "v0" or not sep or not _HEX_SHA256.fullmatch(digest):
        raise _MalformedError
    outside = _outside(timestamp, received_at, tolerance_s)
    basestring = b"v0:" + timestamp.strip().encode() + b":" + body
    expected = _hmac(secret.encode(), basestring).hex().encode()
    if not hmac.compare_digest(expected, digest.lower().encode()):
        return _invalid(Reason.SIGNATURE_MISMATCH)
    return _invalid(Reason.TIMESTAMP_OUTSIDE_TOLERANCE) if outside else VALID


def _shopify(
    secret: str,
    headers: Headers,
    body: bytes,
    received_at: float,  # noqa: ARG001  (Shopify signs no timestamp)
    tolerance_s: int | None,  # noqa: ARG001
) -> SignatureCheck:
    header = _header(headers, "X-Shopify-Hmac-Sha256")
    if header is None:
        return _missing("X-Shopify-Hmac-Sha256")
    try:
        given = base64.b64decode(header.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise _MalformedError from None
    if len(given) != hashlib.sha256().digest_size:
        raise _MalformedError
    if not hmac.compare_digest(_hmac(secret.encode(), body), given):
        return _invalid(Reason.SIGNATURE_MISMATCH)
    return VALID


def _standard_webhooks(
    secret: str, headers: Headers, body: bytes, received_at: float, tolerance_s: int | None
) -> SignatureCheck:
    header = _header(headers, "webhook-signature")
    if header is None:
        return _missing("webhook-signature")
    message_id = _header(headers, "webhook-id")
    timestamp = _header(headers, "webhook-timestamp")
    if message_id is None or timestamp is None:
        raise _MalformedError
    signatures: list[bytes] = []
    for item in header.split():
        version, sep, encoded = item.partition(",")
        if not sep:
            raise _MalformedError
        if version != "v1":
            continue  # another version (v1a: asymmetric) is not a symmetric signature
        try:
            signatures.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            raise _MalformedError from None
    if not signatures:
        raise _MalformedError
    outside = _outside(timestamp, received_at, tolerance_s)
    signed = f"{message_id}.{timestamp.strip()}.".encode() + body
    expected = _hmac(standard_webhooks_key(secret), signed)
    if not _any_matches(expected, signatures):
        return _invalid(Reason.SIGNATURE_MISMATCH)
    return _invalid(Reason.TIMESTAMP_OUTSIDE_TOLERANCE) if outside else VALID


_Checker = Callable[[str, Headers, bytes, float, "int | None"], SignatureCheck]
_CHECKERS: dict[Scheme, _Checker] = {
    Scheme.STRIPE: _stripe,
    Scheme.GITHUB: _github,
    Scheme.SLACK: _slack,
    Scheme.SHOPIFY: _shopify,
    Scheme.STANDARD_WEBHOOKS: _standard_webhooks,
}


def check_secret(scheme: Scheme, secret: str) -> None:
    """Refuse a secret the scheme cannot use, before it is stored.

    Raises:
        InvalidSecretError: with a sentence naming the expected form.
    """
    if scheme is Scheme.STANDARD_WEBHOOKS:
        standard_webhooks_key(secret)


def verify(
    scheme: Scheme,
    secret: str,
    headers: Headers,
    body: bytes,
    *,
    received_at: float,
    tolerance_s: int | None = None,
) -> SignatureCheck:
    """Check one request as ``scheme``'s provider signs it.

    Args:
        scheme: the provider's scheme.
        secret: the signing secret, as the provider shows it.
        headers: the request's headers, in order (names in any case).
        body: the raw body bytes.
        received_at: when the request arrived (Unix seconds): timestamps are judged against it.
        tolerance_s: the largest distance allowed between a signed timestamp and
            ``received_at``; None: the provider's default (schemes without a timestamp ignore it).
    """
    tolerance = DEFAULT_TOLERANCE_S[scheme] if tolerance_s is None else tolerance_s
    try:
        return _CHECKERS[scheme](secret, headers, body, received_at, tolerance)
    except _MalformedError:
        return _invalid(Reason.MALFORMED_HEADER)
