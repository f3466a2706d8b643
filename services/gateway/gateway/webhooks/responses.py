"""A receiver's custom response and signature check: their HTTP bodies and their validation.

Both are stored in the receiver's limits hash (``driver.Setting``). A custom response is what
the receive URL answers instead of the default ``{"ok": true, "id": ...}``; it is checked here
once, when it is set, so the receive path only decodes it.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from gateway.webhooks.signatures import Scheme
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.kinds import WebhookLimits

# A token (RFC 9110 5.1), bounded so the hash stays small.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")
# Visible ASCII, spaces and tabs inside (RFC 9110 5.5): no CR or LF, so no header injection.
_HEADER_VALUE = re.compile(r"^[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?$|^$")
MAX_HEADERS = 32
MAX_HEADER_VALUE = 1024
# The framework or the connection own these: a sender must not see two lengths, nor a
# connection-level instruction (RFC 9110 7.6.1), nor a cookie set on the API's own origin.
FORBIDDEN_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "set-cookie",
        # A visitor's browser would clear the site's cookies and storage (signing it out of
        # what shares the site), or be sent on after a delay without a redirect's status.
        "clear-site-data",
        "refresh",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "x-webhook-request-id",
        # Always ours (SANDBOX_HEADERS).
        "content-security-policy",
        "x-content-type-options",
    }
)
#: On every custom response: its document gets an origin of its own, and is never sniffed.
SANDBOX_HEADERS = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}
# These statuses never carry a body (RFC 9110 15.3.5, 15.3.6, 15.4.5).
_NO_BODY_STATUSES = frozenset({204, 205, 304})
# The signed timestamp may be at most a week away: beyond that a "tolerance" checks nothing.
MAX_TOLERANCE_S = 7 * 24 * 3600
MAX_SECRET_CHARS = 1024


class CustomResponse(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the receive URL answers: ``status``, ``headers``, ``body`` (text), after ``delay_ms``.

    ``status`` 200-599 (204, 205 and 304 without a body). Header names are HTTP tokens, values
    visible ASCII; hop-by-hop headers, ``Content-Length``, ``Set-Cookie`` and
    ``X-Webhook-Request-Id`` (always the stored request's id) are refused. ``body`` is at most the
    plan's ``max_body_kb`` (UTF-8 bytes), ``delay_ms`` at most its ``response_delay_ms_max``.
    Without ``Content-Type`` a non-empty body is sent as ``text/plain; charset=utf-8``.
    """

    status: Annotated[int, msgspec.Meta(ge=200, le=599)] = 200
    headers: Annotated[dict[str, str], msgspec.Meta(max_length=MAX_HEADERS)] = msgspec.field(
        default_factory=dict
    )
    body: str = ""
    delay_ms: Annotated[int, msgspec.Meta(ge=0)] = 0


def _invalid(message: str) -> SpinupError:
    return SpinupError(ErrorCode.INVALID_REQUEST, message)


def check_response(response: CustomResponse, limits: WebhookLimits) -> None:
    """Refuse what the schema cannot say: the header rules and the plan's bounds.

    Raises:
        SpinupError: INVALID_REQUEST naming the field.
    """
    if response.status in _NO_BODY_STATUSES and response.body:
        msg = f"`body` must be empty with `status` {response.status} (it never has a body)."
        raise _invalid(msg)
    seen: set[str] = set()
    for name, value in response.headers.items():
        lower = name.lower()
        if not _HEADER_NAME.fullmatch(name):
            msg = f"`headers`: {name[:64]!r} is not a valid header name."
            raise _invalid(msg)
        if lower in FORBIDDEN_HEADERS:
            msg = f"`headers`: {name!r} cannot be set (the server owns it)."
            raise _invalid(msg)
        if lower in seen:
            msg = f"`headers`: {name!r} is given twice."
            raise _invalid(msg)
        seen.add(lower)
        if len(value) > MAX_HEADER_VALUE or not _HEADER_VALUE.fullmatch(value):
            msg = (
                f"`headers`: the value of {name!r} must be visible ASCII (spaces inside),"
                f" at most {MAX_HEADER_VALUE} characters."
            )
            raise _invalid(msg)
    max_body = limits.max_body_kb * 1024
    if len(response.body.encode()) > max_body:
        msg = f"`body` is larger than this receiver's plan allows ({limits.max_body_kb} KB)."
        raise _invalid(msg)
    if response.delay_ms > limits.response_delay_ms_max:
        msg = (
            f"`delay_ms` is larger than this receiver's plan allows"
            f" ({limits.response_delay_ms_max} ms)."
        )
        raise _invalid(msg)


class ResponseSetting(msgspec.Struct, frozen=True, kw_only=True):
    """``/webhook/{token}/response``: the custom response, or null for the default one."""

    ok: bool = True
    id: uuid.UUID
    custom: bool
    response: CustomResponse | None


class VerifyRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``PUT /webhook/{token}/verify``: check every request from now on as ``scheme`` signs it.

    ``secret``: the signing secret as the provider shows it (Standard Webhooks: ``whsec_`` and
    base64). ``tolerance_s``: the largest distance between a signed timestamp and the time the
    request arrived (default: the provider's, 300 s; ignored by GitHub and Shopify).
    """

    scheme: Scheme
    secret: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SECRET_CHARS)]
    tolerance_s: Annotated[int, msgspec.Meta(ge=1, le=MAX_TOLERANCE_S)] | None = None


class StoredVerify(msgspec.Struct, frozen=True, kw_only=True):
    """The signature check as the hash keeps it: the secret sealed (key id inside)."""

    scheme: Scheme
    secret_sealed: str
    tolerance_s: int | None
    since: datetime


class VerifySetting(msgspec.Struct, frozen=True, kw_only=True):
    """The signature check (never its secret); ``scheme`` null: off.

    ``since``: requests received from then on carry ``signature`` when read.
    """

    ok: bool = True
    id: uuid.UUID
    scheme: Scheme | None
    tolerance_s: int | None = None
    since: datetime | None = None


def verify_aad(resource_id: uuid.UUID) -> bytes:
    """Binds a sealed secret to its receiver: it cannot be moved to another one."""
    return b"webhook-verify:" + resource_id.bytes
