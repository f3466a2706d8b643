"""Finding captured requests: cursors, filters, pages, and the catch-up of a resumed stream.

Every stored request has a ``seq``, its receiver's count of stored requests at that moment
(ADR 0024). A cursor names a point in that order: ``/requests?cursor=`` lists what came before
it, ``/stream?after=`` (or ``Last-Event-ID``) streams what came after it. Cursors are opaque to
clients so that their spelling can change; today one is ``seq`` in URL-safe base64.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from gateway.webhooks.driver import StoredRequest, WebhookDriver
from shared.contracts.errors import ErrorCode, SpinupError

_CURSOR_PREFIX = "whc1:"
# Requests read from Redis per round trip while scanning.
_CHUNK = 50
# A page stops scanning after this many body bytes even when it is not full (its next_cursor
# goes on from there): a filter that matches little must not read a whole large history at once.
PAGE_SCAN_BYTES = 8 * 1024 * 1024
_REQUEST_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def invalid(parameter: str, problem: str) -> SpinupError:
    """A 400 naming the query parameter at fault."""
    return SpinupError(ErrorCode.INVALID_REQUEST, f"`{parameter}`: {problem}")


def encode_cursor(seq: int) -> str:
    """The cursor for the point just after request ``seq`` (0: before the first)."""
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{seq}".encode()).decode().rstrip("=")


def decode_cursor(parameter: str, cursor: str) -> int:
    """The ``seq`` a cursor names; a 400 naming ``parameter`` when it is not one we issued."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if text.startswith(_CURSOR_PREFIX) and text[len(_CURSOR_PREFIX) :].isdigit():
            return int(text[len(_CURSOR_PREFIX) :])
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise invalid(
        parameter,
        "not a cursor of this API. Use a `next_cursor` or `latest_cursor` from GET"
        " /webhook/{token}/requests, or a stream event's `id`, unchanged.",
    )


def _parse_time(parameter: str, value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        problem = f"{value!r} is not an ISO 8601 time (e.g. 2026-12-04T08:30:00Z)."
        raise invalid(parameter, problem) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class RequestFilter:
    """Which requests a reader wants; every condition given must hold."""

    methods: frozenset[str] | None = None
    path_prefix: str | None = None
    #: Lowercase; found in some ``name: value`` header line, ignoring case.
    header: str | None = None
    #: Found in the raw body bytes, case kept.
    body: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def parse(
        cls,
        *,
        method: str | None,
        path_prefix: str | None,
        header: str | None,
        body: str | None,
        since: str | None,
        until: str | None,
        known_methods: Collection[str],
    ) -> RequestFilter:
        """The filter of the query parameters, or a 400 naming the one that is wrong."""
        methods = None
        if method is not None:
            methods = frozenset(m.strip().upper() for m in method.split(",") if m.strip())
            unknown = sorted(methods - set(known_methods))
            if not methods or unknown:
                problem = (
                    f"{', '.join(unknown) or 'empty'} is not a method a receiver captures"
                    f" ({', '.join(known_methods)}; several: comma-separated)."
                )
                raise invalid("method", problem)
        if path_prefix is not None and not path_prefix.startswith("/"):
            path_prefix = "/" + path_prefix
        for name, value in (("header", header), ("body", body)):
            if value == "":
                raise invalid(name, "empty; leave it out to match every request.")
        start = None if since is None else _parse_time("since", since)
        end = None if until is None else _parse_time("until", until)
        if start is not None and end is not None and end <= start:
            raise invalid("until", "must be later than `since`.")
        return cls(
            methods=methods,
            path_prefix=path_prefix,
            header=None if header is None else header.lower(),
            body=body,
            since=start,
            until=end,
        )

    def matches(self, request: StoredRequest) -> bool:
        """Whether ``request`` passes every condition given."""
        if self.methods is not None and request.method not in self.methods:
            return False
        if self.path_prefix is not None and not request.path.startswith(self.path_prefix):
            return False
        if self.since is not None and request.received_at < self.since:
            return False
        if self.until is not None and request.received_at >= self.until:
            return False
        if self.header is not None and not any(
            self.header in f"{name}: {value}".lower() for name, value in request.headers
        ):
            return False
        return self.body is None or _body_contains(request, self.body)


def _body_contains(request: StoredRequest, text: str) -> bool:
    if request.body_encoding == "utf-8":
        # UTF-8 is self-synchronising: a substring of the text is one of the bytes, and back.
        return text in request.body
    return text.encode() in base64.b64decode(request.body)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of matching requests, newest first."""

    requests: list[StoredRequest]
    #: Where the next (older) page starts; None when nothing older is kept.
    next_seq: int | None
    #: The ``seq`` of the newest request stored: ``/stream?after=`` it follows from now on.
    latest: int


async def page(
    driver: WebhookDriver,
    resource_id: UUID,
    *,
    before: int | None,
    limit: int,
    wanted: RequestFilter,
) -> Page:
    """Up to ``limit`` matching requests older than ``before`` (None: from the newest).

    A page may hold fewer than ``limit`` with ``next_seq`` set (it stopped after
    ``PAGE_SCAN_BYTES``); following ``next_seq`` until it is None sees every match once.
    """
    newest = None if before is None else before - 1
    found: list[StoredRequest] = []
    scanned = 0
    latest: int | None = None
    while newest is None or newest >= 1:
        history = await driver.history(resource_id, newest, _CHUNK)
        latest = history.latest if latest is None else latest
        for index, request in enumerate(history.requests):
            if len(found) == limit:
                # Full: a cursor only if something older may match, known for this chunk.
                rest = history.requests[index:]
                more = any(wanted.matches(r) for r in rest) or (
                    len(history.requests) == _CHUNK and history.requests[-1].seq > 1
                )
                return Page(found, found[-1].seq if more else None, latest)
            scanned += request.size
            if wanted.matches(request):
                found.append(request)
            if scanned > PAGE_SCAN_BYTES and request.seq > 1:
                return Page(found, request.seq, latest)
        if len(history.requests) < _CHUNK or history.requests[-1].seq <= history.oldest:
            break
        newest = history.requests[-1].seq - 1
    if latest is None:
        latest = await driver.latest_seq(resource_id)
    return Page(found, None, latest)


async def find_seq(driver: WebhookDriver, resource_id: UUID, request_id: str) -> int | None:
    """The ``seq`` of the kept request with this id, or None (malformed, never or no more kept)."""
    if not _REQUEST_ID_RE.fullmatch(request_id):
        return None
    newest: int | None = None
    while newest is None or newest >= 1:
        history = await driver.history(resource_id, newest, _CHUNK)
        for request in history.requests:
            if request.id == request_id:
                return request.seq
        if len(history.requests) < _CHUNK:
            return None
        newest = history.requests[-1].seq - 1
    return None


async def find(driver: WebhookDriver, resource_id: UUID, request_id: str) -> StoredRequest | None:
    """The kept request with this id, or None."""
    seq = await find_seq(driver, resource_id, request_id)
    if seq is None:
        return None
    history = await driver.history(resource_id, seq, 1)
    return next((r for r in history.requests if r.id == request_id), None)


@dataclass(frozen=True, slots=True)
class CatchUp:
    """What a resumed stream sends before its live requests."""

    #: Requests after the cursor that were dropped (beyond ``requests_kept``) before it came back.
    lost: int
    #: The ``seq`` after which the catch-up starts reading (the cursor, or where it was reset).
    after: int


async def catch_up(driver: WebhookDriver, resource_id: UUID, after: int) -> CatchUp:
    """Where a stream resumed after ``after`` starts, and how many requests it can no longer get.

    A cursor beyond the newest request means the receiver's history started again (the platform
    Redis lost its data): everything kept now came after it.
    """
    history = await driver.history(resource_id, None, 0)
    if after > history.latest:
        after = 0
    return CatchUp(lost=max(history.oldest - after - 1, 0), after=after)


async def requests_after(
    driver: WebhookDriver, resource_id: UUID, after: int
) -> AsyncIterator[StoredRequest]:
    """The kept requests numbered above ``after``, oldest first, as far as are stored now."""
    latest: int | None = None
    while latest is None or after < latest:
        history = await driver.history(resource_id, after + _CHUNK, _CHUNK)
        latest = history.latest if latest is None else latest
        chunk = [r for r in reversed(history.requests) if after < r.seq <= latest]
        if not chunk:
            # Dropped meanwhile (trimmed): go on from the oldest still kept.
            if history.oldest > after + 1 and history.oldest <= latest:
                after = history.oldest - 1
                continue
            return
        for request in chunk:
            yield request
        after = chunk[-1].seq
