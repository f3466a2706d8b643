"""Webhook receivers in the platform Redis: the driver, the receive keys and the stored requests.

Why this module is careful: ``delete`` removes a tenant's captured requests, so every Redis key
it touches is built from ``tenant_name`` and passes ``guard_tenant_name`` first.

One receiver is three Redis names, all derived from the resource id:

- ``webhook:<tenant>:limits``: a hash with the receiver's ``requests_kept``, ``max_body_kb`` and
  ``generation`` (of its receive URL), ``seq`` (the number of its newest request), and its
  settings when set: ``response`` (the custom answer, JSON) and ``verify`` (the signature
  check, its secret sealed). It exists exactly while the receiver can take requests, so
  receiving needs no lookup in the platform Postgres, and a delete removes the settings with it;
- ``webhook:<tenant>:requests``: a list of stored requests (JSON), newest first, trimmed to
  ``requests_kept`` by every push;
- ``webhook:<tenant>:live``: the pub/sub channel that streams each new request, and a final
  ``closed`` message when the receiver is deleted.

The receive key is ``whk_<resource id><MAC><generation>``: the MAC (HMAC of id and generation
under the token key) lets the gateway refuse a forged key without touching Redis, and the record
script refuses a key whose generation is not the hash's, so ``rotate`` (generation + 1) retires
the old URL at once, on every replica, with no extra round trip per request.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import hashlib
import hmac
import re
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import msgspec
import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.webhooks.signatures import SignatureCheck
from shared.contracts.errors import BackendUnavailableError, ErrorCode, SpinupError
from shared.contracts.kinds import (
    EXPORT_FORMATS,
    ResourceKind,
    WebhookCredentials,
    WebhookLimits,
)
from shared.exporting import chunked
from shared.naming import guard_tenant_name, tenant_name, tenant_resource_id
from shared.observability import metrics

log = structlog.get_logger("gateway.webhooks")

RECEIVE_KEY_PREFIX = "whk_"
#: The generation of a new receiver's URL; each ``rotate`` adds one.
FIRST_GENERATION = 1
# 128 bits of MAC: a forged key needs 2**128 guesses; hex keeps the URL plain and case-proof.
_MAC_BYTES = 16
# The MAC comes right after the id, so log redaction (shared.observability.logging) hides
# exactly it; the generation is decimal without leading zeros (one spelling per key), at most
# 18 digits (Redis counts in 64 bits).
_RECEIVE_KEY_RE = re.compile(
    r"^whk_(?P<id>[0-9a-f]{32})(?P<mac>[0-9a-f]{32})(?P<generation>[1-9][0-9]{0,17})$"
)
_CLOSED = b"closed"
_SUSPENDED = (
    "This webhook receiver expired: it no longer captures requests. Its captured requests can"
    " still be downloaded with GET /resources/{token}/export until they are deleted."
)
#: Captured requests read per round trip by ``export``.
_EXPORT_PAGE = 50

# Atomic, so a request racing a delete either lands before it (and is deleted with the list) or
# finds no limits hash and is refused: a delete never leaves a list behind. Likewise a request
# racing a rotate is stored before it or refused after it. Each stored request gets the next
# ``seq`` of its receiver (a counter in the limits hash), written over the ``"seq":0`` the
# gateway encoded first: the list is then in ``seq`` order, without gaps, newest first, which is
# what lets cursors address it by index (ADR 0024).
# KEYS: limits hash, requests list.
# ARGV: stored request (beginning ``{"seq":0``), body size in bytes, live channel, the key's
# generation.
# Returns {outcome, the custom response (JSON) or nil}: the answer comes back in the same round
# trip, so a custom response costs the receive path nothing.
_RECORD_SCRIPT = """
local limits = redis.call('HMGET', KEYS[1], 'requests_kept', 'max_body_kb', 'generation',
                          'response', 'suspended')
if not limits[1] or not limits[2] or not limits[3] then return {0, false} end
if limits[5] then return {-3, false} end
if limits[3] ~= ARGV[4] then return {-2, false} end
if tonumber(ARGV[2]) > tonumber(limits[2]) * 1024 then return {-1, false} end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local stored = '{"seq":' .. seq .. string.sub(ARGV[1], 9)
redis.call('LPUSH', KEYS[2], stored)
redis.call('LTRIM', KEYS[2], 0, tonumber(limits[1]) - 1)
redis.call('PUBLISH', ARGV[3], stored)
return {1, limits[4]}
"""
# Up to ``count`` kept requests from the one numbered ``newest`` down, addressed by index: the
# list holds ``seq`` head, head - 1, ... from index 0, so that is one LRANGE, read with the head
# in one atomic step (a request stored meanwhile cannot shift it).
# KEYS: limits hash, requests list. ARGV: newest ``seq`` wanted (0: the newest there is), count.
# Returns {head, length of the list, the requests newest first}.
_RANGE_SCRIPT = """
local head = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local length = redis.call('LLEN', KEYS[2])
local newest = tonumber(ARGV[1])
if newest <= 0 or newest > head then newest = head end
if tonumber(ARGV[2]) <= 0 then return {head, length, {}} end
local start = head - newest
return {head, length, redis.call('LRANGE', KEYS[2], start, start + tonumber(ARGV[2]) - 1)}
"""
# Only an existing receiver: writing to a missing hash would open a deleted receiver again.
# KEYS: limits hash. ARGV: requests_kept, max_body_kb. Returns the new generation, or 0.
_ROTATE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'requests_kept', ARGV[1], 'max_body_kb', ARGV[2])
return redis.call('HINCRBY', KEYS[1], 'generation', 1)
"""
# KEYS: limits hash. ARGV: requests_kept, max_body_kb. Returns 1 when the receiver exists.
_SET_LIMITS_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'requests_kept', ARGV[1], 'max_body_kb', ARGV[2])
return 1
"""
# Restore a lost hash, never overwrite one: a restore that read the log before a rotation
# would otherwise bring the retired URL back.
# KEYS: limits hash. ARGV: requests_kept, max_body_kb, generation.
# A setting of the receiver (custom response, signature check), only on an existing receiver:
# it lives in the limits hash so that a delete removes it with the receiver.
# KEYS: limits hash. ARGV: field, value. Returns 1 when the receiver exists.
_SET_FIELD_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
# Marks an existing receiver suspended (its requests stay); a missing one stays missing.
# KEYS: limits hash. Returns 1 when the receiver exists.
_SUSPEND_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'suspended', 1)
return 1
"""
_REOPEN_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'requests_kept', ARGV[1], 'max_body_kb', ARGV[2],
           'generation', ARGV[3])
return 1
"""


@dataclass(frozen=True, slots=True)
class ReceiveKey:
    """What a valid receive key names: a receiver and the generation of its URL."""

    resource_id: UUID
    generation: int


def _mac(token_key: bytes, resource_id: UUID, generation: int) -> str:
    message = b"webhook-receive:" + resource_id.bytes + generation.to_bytes(8, "big")
    return hmac.new(token_key, message, hashlib.sha256).digest()[:_MAC_BYTES].hex()


def receive_key(token_key: bytes, resource_id: UUID, generation: int) -> str:
    """The capture-only secret in a receiver's URL: it names the receiver and proves it.

    It is not the management token: whoever is given the URL can send requests, nothing else.
    """
    mac = _mac(token_key, resource_id, generation)
    return f"{RECEIVE_KEY_PREFIX}{resource_id.hex}{mac}{generation}"


def parse_receive_key(token_key: bytes, key: str) -> ReceiveKey | None:
    """The receiver and generation a key names, or None when it is malformed or forged.

    Only the MAC is checked here (no Redis): whether the generation is still the receiver's
    current one is the record script's check.
    """
    match = _RECEIVE_KEY_RE.fullmatch(key)
    if match is None:
        return None
    resource_id, generation = UUID(hex=match["id"]), int(match["generation"])
    if not hmac.compare_digest(match["mac"], _mac(token_key, resource_id, generation)):
        return None
    return ReceiveKey(resource_id, generation)


def receive_key_of_url(token_key: bytes, receive_url: str) -> ReceiveKey | None:
    """The receive key a receive URL ends with, checked like ``parse_receive_key``."""
    return parse_receive_key(token_key, receive_url.rstrip("/").rsplit("/", 1)[-1])


class StoredRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One request a receiver captured, as it is stored and shown.

    ``path`` is what followed the receive URL ("/" for the URL itself); ``query`` is the raw
    query string and ``query_params`` the same parsed, every value of a repeated name kept.
    ``body`` is the body as text when it is UTF-8, else base64 (``body_encoding`` says which);
    ``size`` is its length in bytes. ``signature`` is the verdict of the receiver's signature
    check, for requests received since it was set (null otherwise); it is worked out when the
    request is read, never stored.
    ``seq`` numbers a receiver's requests in the order they were stored, from 1 (0: stored
    before requests were numbered); cursors are made from it.
    """

    # First, so that the gateway's encoding begins with ``"seq":0``, which the record script
    # overwrites with the real number.
    seq: int = 0
    id: str
    method: str
    path: str
    query: str
    query_params: dict[str, list[str]]
    headers: list[tuple[str, str]]
    body: str
    body_encoding: Literal["utf-8", "base64"]
    size: int
    received_at: datetime
    client_ip: str
    signature: SignatureCheck | None = None


def encode_body(body: bytes) -> tuple[str, Literal["utf-8", "base64"]]:
    """The body as text when it decodes as UTF-8, else as base64."""
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), "base64"


class Setting(enum.StrEnum):
    """A receiver's optional settings: fields of its limits hash."""

    RESPONSE = "response"
    VERIFY = "verify"


class RecordOutcome(enum.Enum):
    """What happened to a received request."""

    STORED = 1
    NO_RECEIVER = 0
    TOO_LARGE = -1
    #: The key's generation is not the receiver's: its URL was rotated away.
    RETIRED_KEY = -2
    #: The receiver expired (``suspend``): it keeps its requests for export, takes no new ones.
    SUSPENDED = -3


#: The limits hash of every receiver (``_Names.limits``), as a ``SCAN`` pattern.
_RECEIVERS = "webhook:t_*:limits"
_SCAN_PAGE = 1000


@dataclass(frozen=True, slots=True)
class _Names:
    limits: str
    requests: str
    live: str

    @classmethod
    def of(cls, resource_id: UUID) -> _Names:
        base = f"webhook:{tenant_name(resource_id)}"
        return cls(limits=f"{base}:limits", requests=f"{base}:requests", live=f"{base}:live")


@contextlib.contextmanager
def _redis_errors() -> Iterator[None]:
    """Translate redis-py errors at the boundary: unreachable is 503, anything else too."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        msg = "The webhook store is unreachable; try again shortly."
        raise BackendUnavailableError(msg) from exc
    except RedisError as exc:
        log.warning("webhooks.redis.failed", error=type(exc).__name__)
        raise SpinupError(ErrorCode.BACKEND_ERROR, "The webhook store failed.") from exc


def _limit_values(limits: WebhookLimits) -> list[int]:
    return [limits.requests_kept, limits.max_body_kb]


def _limit_fields(limits: WebhookLimits) -> list[str | int]:
    return ["requests_kept", limits.requests_kept, "max_body_kb", limits.max_body_kb]


# How the gateway's encoding of a request with ``seq`` 0 begins; the record script keeps what
# follows it (``string.sub(ARGV[1], 9)``).
_SEQ_PLACEHOLDER = b'{"seq":0'
_request_decoder = msgspec.json.Decoder(StoredRequest)
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class History:
    """A slice of a receiver's kept requests, and the ``seq`` range kept when it was read.

    ``latest`` is the ``seq`` of the newest request stored (0: none yet); ``oldest`` that of the
    oldest still kept (``latest + 1`` when none is kept).
    """

    latest: int
    oldest: int
    requests: list[StoredRequest]


class LiveRequests:
    """A subscription to one receiver's new requests; ``events`` reads it until it closes."""

    def __init__(self, pubsub: PubSub, *, open_now: bool, stopping: asyncio.Event) -> None:
        self._pubsub = pubsub
        self._open = open_now
        self._stopping = stopping
        #: The read under way, if any: over before the connection goes back to the pool.
        self._read: asyncio.Future[Any] | None = None
        #: True once the feed ended because the receiver was deleted (not a lost connection).
        self.receiver_gone = not open_now

    async def events(self, keepalive_s: float) -> AsyncIterator[StoredRequest | None]:
        """Each new request, None after ``keepalive_s`` of quiet; ends when the receiver goes.

        It also ends when the gateway begins to stop (a server waits for open responses, and a
        stream never finishes by itself) or the platform Redis goes away: a stream cannot turn
        into an error page once it has started, and a client reconnects.
        """
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            while self._open:
                # Subscribe confirmations are read here too, so None means only "quiet".
                read = asyncio.ensure_future(self._pubsub.get_message(timeout=keepalive_s))
                self._read = read
                await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not read.done():
                    return
                try:
                    message = read.result()
                except (RedisError, OSError) as exc:
                    log.warning("webhooks.stream.interrupted", error=type(exc).__name__)
                    return
                if message is None:
                    yield None
                    continue
                if message["type"] != "message":
                    continue
                data = message["data"]
                if data == _CLOSED:
                    self.receiver_gone = True
                    return
                yield _request_decoder.decode(data)
        finally:
            stop.cancel()
            await self.close()

    async def close(self) -> None:
        """End the read under way, unsubscribe and give the connection back.

        The read must be over before the connection goes back to the pool: left running, it
        would read the replies of whichever command gets that connection next. From a cancelled
        scope (a client that hung up) the waits here are cut short, so the stream's owner runs
        this again in a task of its own (``gateway.http.cleanup.StreamEnd``).
        """
        self._open = False
        read = self._read
        if read is not None and not read.done():
            read.cancel()
            # Not raising the read's own cancellation; a cancellation of this task still ends it.
            await asyncio.wait({read})
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]


class WebhookDriver:
    """Creates, changes and deletes receivers, stores what they receive, and streams it."""

    def __init__(
        self,
        redis: Redis,
        *,
        content_url: str,
        token_key: bytes,
        live: Redis | None = None,
    ) -> None:
        self._redis = redis
        # Each open stream holds a connection for as long as it is followed: a client of its own
        # (``live``, with its own bounded pool) keeps streams from starving every other command.
        self._live = live or redis
        self._content_url = content_url.rstrip("/")
        self._token_key = token_key
        self._record = redis.register_script(_RECORD_SCRIPT)
        self._rotate = redis.register_script(_ROTATE_SCRIPT)
        self._set_limits = redis.register_script(_SET_LIMITS_SCRIPT)
        self._reopen = redis.register_script(_REOPEN_SCRIPT)
        self._set_field = redis.register_script(_SET_FIELD_SCRIPT)
        self._range = redis.register_script(_RANGE_SCRIPT)
        self._suspend = redis.register_script(_SUSPEND_SCRIPT)
        self._stopping = asyncio.Event()

    @property
    def kind(self) -> ResourceKind:
        """Webhook receivers only."""
        return ResourceKind.WEBHOOK

    def receive_url(self, resource_id: UUID, generation: int) -> str:
        """Where senders post to this receiver while its URL is at ``generation``."""
        key = receive_key(self._token_key, resource_id, generation)
        return f"{self._content_url}/webhook/receive/{key}"

    async def create(self, resource_id: UUID, limits: WebhookLimits) -> WebhookCredentials:
        """Open the receiver with these limits (again: the same URL, the new limits)."""
        names = _Names.of(resource_id)
        with _redis_errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(names.limits, items=_limit_fields(limits))
                pipe.hsetnx(names.limits, "generation", FIRST_GENERATION)
                pipe.hget(names.limits, "generation")
                *_, generation = await pipe.execute()
        return WebhookCredentials(receive_url=self.receive_url(resource_id, int(generation)))

    async def create_fresh(self, resource_id: UUID, limits: WebhookLimits) -> WebhookCredentials:
        """``create`` for a receiver never opened (``FreshCreate``): one ``HSET``, no transaction.

        No earlier try can have set a generation, so the first one is written with the limits.
        """
        names = _Names.of(resource_id)
        with _redis_errors():
            await self._redis.hset(
                names.limits, items=[*_limit_fields(limits), "generation", FIRST_GENERATION]
            )
        return WebhookCredentials(receive_url=self.receive_url(resource_id, FIRST_GENERATION))

    async def tenants(self) -> set[UUID]:
        """Every resource with a receiver (its limits hash), for ``ResourceLifecycle.reconcile``.

        A ``SCAN`` of the platform Redis, a page at a time: one pass reads every key name
        once, without blocking the server.
        """
        found: set[UUID] = set()
        with _redis_errors():
            async for key in self._redis.scan_iter(match=_RECEIVERS, count=_SCAN_PAGE):
                name = key.decode() if isinstance(key, bytes) else str(key)
                resource_id = tenant_resource_id(name.split(":")[1])
                if resource_id is not None:
                    found.add(resource_id)
        return found

    async def reopen(self, key: ReceiveKey, limits: WebhookLimits) -> None:
        """Write the hash Redis lost, from the recorded limits and the recorded URL's key.

        Does nothing when the hash exists: it is newer than what the log was read for.
        """
        names = _Names.of(key.resource_id)
        with _redis_errors():
            await self._reopen(keys=[names.limits], args=[*_limit_values(limits), key.generation])

    async def set_limits(self, resource_id: UUID, limits: WebhookLimits) -> None:
        """New ``requests_kept`` and ``max_body_kb``; the URL and stored requests stay.

        Requests already stored beyond a smaller ``requests_kept`` go at the next push. A
        receiver whose hash is missing is left alone: deleted, it must stay closed; lost by
        Redis, its next request writes it again from the log, which holds the new limits.
        """
        names = _Names.of(resource_id)
        with _redis_errors():
            await self._set_limits(keys=[names.limits], args=_limit_values(limits))

    async def rotate(self, resource_id: UUID, limits: WebhookLimits) -> WebhookCredentials:
        """A new receive URL; the old one is refused from the next request on.

        Stored requests, open streams (they follow the token) and the token stay.

        Raises:
            SpinupError: NOT_FOUND when the receiver's hash is missing (deleted, or lost by
                Redis until its next request restores it).
        """
        names = _Names.of(resource_id)
        with _redis_errors():
            generation = int(await self._rotate(keys=[names.limits], args=_limit_values(limits)))
        if not generation:
            msg = "This webhook receiver does not exist (it was deleted); nothing was rotated."
            raise SpinupError(ErrorCode.NOT_FOUND, msg)
        return WebhookCredentials(receive_url=self.receive_url(resource_id, generation))

    async def usage(
        self,
        resource_ids: Sequence[UUID],  # noqa: ARG002
        *,
        sweep_id: UUID | None = None,  # noqa: ARG002
    ) -> dict[UUID, int]:
        """Nothing to measure: a receiver has no byte quota (``{}``).

        Its size is bounded by its limits instead: at most ``requests_kept`` requests of at
        most ``max_body_kb`` each, enforced by the record script on every request.
        """
        return {}

    async def block_writes(self, resource_id: UUID, *, usage: int, quota: int) -> None:
        """Nothing to block: ``usage`` reports no receiver, so no sweep finds one over quota."""

    async def allow_writes(self, resource_id: UUID) -> None:
        """Nothing to undo (see ``block_writes``)."""

    async def delete(self, resource_id: UUID) -> None:
        """Remove the receiver and what it stored; open streams get ``closed`` and end."""
        guard_tenant_name(tenant_name(resource_id))
        names = _Names.of(resource_id)
        with _redis_errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(names.limits, names.requests)
                pipe.publish(names.live, _CLOSED)
                await pipe.execute()

    # -- export and suspend (docs/adr/0030, docs/export-formats.md) ----------------------------

    async def suspend(self, resource_id: UUID) -> None:
        """At expiry: the receive URL answers 410 from the next request; stored requests stay.

        A flag in the limits hash, checked by the record script in the same round trip as
        before, so receiving costs nothing more. Live streams get ``closed`` and end (nothing
        new will come). Idempotent; a missing receiver stays missing (nothing to reopen).
        """
        guard_tenant_name(tenant_name(resource_id))
        names = _Names.of(resource_id)
        with _redis_errors():
            if await self._suspend(keys=[names.limits]):
                await self._redis.publish(names.live, _CLOSED)

    def export(self, resource_id: UUID, fmt: str) -> AsyncIterator[bytes]:
        """Every kept request as one JSON line (``jsonl``), newest first, as the history API.

        Each line is the item ``GET /webhook/{token}/requests`` gives (``StoredRequest``, its
        ``signature`` verdict left null: verdicts need the gateway's keyring and are worked out
        on reading). Read ``_EXPORT_PAGE`` requests per round trip with ``history``, so memory
        is a page of bodies whatever the history's length.
        """
        return chunked(self._export_lines(resource_id, fmt))

    async def _export_lines(self, resource_id: UUID, fmt: str) -> AsyncGenerator[bytes]:
        if fmt not in {f.name for f in EXPORT_FORMATS[ResourceKind.WEBHOOK]}:
            msg = "A webhook receiver exports as jsonl (one captured request per line)."
            raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
        names = _Names.of(resource_id)
        with _redis_errors():
            if not await self._redis.exists(names.limits, names.requests):
                msg = f"The webhook receiver {resource_id} does not exist (it was deleted)."
                raise SpinupError(ErrorCode.NOT_FOUND, msg)
        newest: int | None = None
        while newest is None or newest > 0:
            page = await self.history(resource_id, newest, _EXPORT_PAGE)
            for request in page.requests:
                yield _encoder.encode(request) + b"\n"
            if not page.requests or page.requests[-1].seq <= page.oldest:
                break
            newest = page.requests[-1].seq - 1

    async def clear(self, resource_id: UUID) -> None:
        """Forget the receiver's stored requests; the receiver itself keeps taking new ones."""
        guard_tenant_name(tenant_name(resource_id))
        with _redis_errors():
            await self._redis.delete(_Names.of(resource_id).requests)

    async def exists(self, resource_id: UUID) -> bool:
        """Whether the receiver takes requests (its limits hash is there)."""
        with _redis_errors():
            return bool(await self._redis.exists(_Names.of(resource_id).limits))

    async def stored_keys(self, resource_id: UUID) -> int:
        """How many of the receiver's Redis keys exist (0 once it is deleted)."""
        names = _Names.of(resource_id)
        with _redis_errors():
            return int(await self._redis.exists(names.limits, names.requests))

    async def record(self, key: ReceiveKey, request: StoredRequest) -> RecordOutcome:
        """Store a request (newest first, trimmed to the cap) and publish it to live streams.

        Only through a key of the receiver's current generation (else ``RETIRED_KEY``).
        """
        outcome, _ = await self.receive(key, request)
        return outcome

    async def receive(
        self, key: ReceiveKey, request: StoredRequest
    ) -> tuple[RecordOutcome, bytes | None]:
        """``record``, and the receiver's custom response (JSON) if it has one: one round trip."""
        names = _Names.of(key.resource_id)
        encoded = _encoder.encode(
            msgspec.structs.replace(request, seq=0) if request.seq else request
        )
        if not encoded.startswith(_SEQ_PLACEHOLDER):  # pragma: no cover  (field order changed)
            msg = "StoredRequest must encode `seq` first"
            raise AssertionError(msg)
        with _redis_errors():
            outcome, response = await self._record(
                keys=[names.limits, names.requests],
                args=[encoded, request.size, names.live, key.generation],
            )
        recorded = RecordOutcome(int(outcome))
        if recorded is RecordOutcome.SUSPENDED:
            raise SpinupError(ErrorCode.RESOURCE_GONE, _SUSPENDED)
        if recorded is RecordOutcome.STORED:
            metrics.WEBHOOK_CAPTURES.inc()
        return recorded, response

    async def set_setting(self, resource_id: UUID, setting: Setting, value: bytes) -> bool:
        """Set one of the receiver's settings; False (nothing written) when its hash is missing."""
        names = _Names.of(resource_id)
        with _redis_errors():
            done = await self._set_field(keys=[names.limits], args=[setting.value, value])
        return bool(done)

    async def clear_setting(self, resource_id: UUID, setting: Setting) -> None:
        """Back to the default (a missing receiver has nothing to clear)."""
        with _redis_errors():
            await self._redis.hdel(_Names.of(resource_id).limits, setting.value)

    async def setting(self, resource_id: UUID, setting: Setting) -> bytes | None:
        """The setting's stored value, or None when it is not set."""
        with _redis_errors():
            value = await self._redis.hget(_Names.of(resource_id).limits, setting.value)
        return None if value is None else value.encode() if isinstance(value, str) else value

    async def recent(self, resource_id: UUID, limit: int) -> list[StoredRequest]:
        """The newest ``limit`` stored requests, newest first."""
        with _redis_errors():
            raw = await self._redis.lrange(_Names.of(resource_id).requests, 0, limit - 1)
        return [_request_decoder.decode(item) for item in raw]

    async def history(self, resource_id: UUID, newest: int | None, count: int) -> History:
        """Up to ``count`` kept requests numbered ``newest`` and below, newest first.

        ``newest`` None starts at the newest request. One atomic read, which also says where
        the kept history stands.
        """
        names = _Names.of(resource_id)
        with _redis_errors():
            head, length, raw = await self._range(
                keys=[names.limits, names.requests], args=[newest or 0, count]
            )
        top = int(head) if newest is None else min(newest, int(head))
        requests = [_request_decoder.decode(item) for item in raw]
        return History(
            latest=int(head),
            # Requests stored before they were numbered (seq 0) are not addressable.
            oldest=max(int(head) - int(length) + 1, 1),
            requests=[r for r in requests if 1 <= r.seq <= top],
        )

    async def latest_seq(self, resource_id: UUID) -> int:
        """The ``seq`` of the receiver's newest request (0 when it has stored none)."""
        with _redis_errors():
            head = await self._redis.hget(_Names.of(resource_id).limits, "seq")
        return int(head or 0)

    async def subscribe(self, resource_id: UUID) -> LiveRequests:
        """Subscribe to new requests; a receiver deleted meanwhile gives an already-ended feed.

        Subscribing before checking the limits hash closes the gap: a delete either happened
        before the check (seen) or publishes ``closed`` after the subscription (received).
        """
        names = _Names.of(resource_id)
        pubsub = self._live.pubsub()
        try:
            with _redis_errors():
                try:
                    await pubsub.subscribe(names.live)
                except MaxConnectionsError:
                    metrics.WEBHOOK_STREAM_DROPPED.inc()
                    msg = (
                        "This gateway is following as many live streams as it may; try again"
                        " shortly, or read GET /webhook/{token}/requests."
                    )
                    raise BackendUnavailableError(msg) from None
                open_now = bool(await self._redis.exists(names.limits))
        except BaseException:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise
        return LiveRequests(pubsub, open_now=open_now, stopping=self._stopping)

    def end_streams(self) -> None:
        """End every live feed now and any opened later: the gateway is stopping."""
        self._stopping.set()
