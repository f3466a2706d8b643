"""Request-reply over NATS: the only module that sends commands or serves them.

Callers get a typed reply or a ``SpinupError``: no responders and timeouts both become 503-class
errors with distinct codes. Servers run each message as its own task under a semaphore, because
nats-py runs a subscription's callbacks one at a time and one slow ``CREATE DATABASE`` must never
hold up the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import nats
import structlog
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import DiscardPolicy, ObjectStoreConfig, StorageType, StreamConfig
from nats.js.errors import BucketNotFoundError, NotFoundError

from shared import metrics, tracing
from shared.contracts.commands import Command
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.replies import CommandFailed, Reply
from shared.contracts.subjects import (
    LOG_APPENDED,
    REPLY_GRACE_S,
    STACK_LOGS_FILTER,
    STACK_LOGS_STREAM,
    STACK_UPLOADS_BUCKET,
    Endpoint,
)

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

#: How long a stack's log lines are kept: longer than any stack lives unclaimed, so a failed or
#: expired stack's logs can still be read; a deleted stack's subject is purged with it.
STACK_LOGS_MAX_AGE_S = 7 * 24 * 3600.0
#: Log lines kept per stack (per subject); older ones are dropped first. With lines cut to
#: ``STACK_LOG_LINE_MAX`` characters this bounds one stack's share of the stream.
STACK_LOGS_PER_STACK = 5000
STACK_LOG_LINE_MAX = 2048

C = TypeVar("C", bound=Command)
R = TypeVar("R", bound=Reply)

log = structlog.get_logger("shared.bus")
_encoder = msgspec.json.Encoder()


def error_from_failure(failure: CommandFailed) -> SpinupError:
    """Turn a wire failure back into an exception, tolerating codes this side does not know."""
    try:
        code = ErrorCode(failure.code)
    except ValueError:
        code = ErrorCode.INTERNAL_ERROR
    return SpinupError(code, failure.message, retryable=failure.retryable)


class Bus:
    """A NATS connection used for commands, in both directions."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self._decoders: dict[str, msgspec.json.Decoder[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscriptions: list[Any] = []

    @classmethod
    async def connect(cls, url: str, *, name: str) -> Bus:
        """Connect (retrying in the background after the first success) and wrap."""
        nc = await nats.connect(
            url,
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=5,
            allow_reconnect=True,
        )
        return cls(nc)

    def _decoder(self, key: str, typ: Any) -> msgspec.json.Decoder[Any]:  # noqa: ANN401
        decoder = self._decoders.get(key)
        if decoder is None:
            decoder = self._decoders[key] = msgspec.json.Decoder(typ)
        return decoder

    async def request(self, endpoint: Endpoint[C, R], command: C) -> R:
        """Send ``command`` and wait for its reply.

        Raises:
            SpinupError: ``worker_unavailable`` (nobody subscribed), ``worker_timeout`` (no reply
                in ``endpoint.timeout`` + grace), ``platform_unavailable`` (NATS is down), or
                the worker's own failure code.
        """
        if not self.nc.is_connected:
            msg = "The platform message bus is unreachable; try again shortly."
            metrics.record_command(endpoint.subject, ErrorCode.PLATFORM_UNAVAILABLE)
            raise SpinupError(ErrorCode.PLATFORM_UNAVAILABLE, msg, retryable=True)
        in_flight, duration = metrics.nats_series(endpoint.subject)
        started = time.perf_counter()
        failure: ErrorCode | None = None
        in_flight.inc()
        try:
            with tracing.span(
                f"nats request {endpoint.subject}",
                kind=tracing.SpanKind.CLIENT,
                attributes={"messaging.system": "nats", "messaging.destination": endpoint.subject},
            ):
                reply = await self._request(endpoint, command)
        except SpinupError as exc:
            failure = exc.code
            raise
        finally:
            in_flight.dec()
            duration.observe(time.perf_counter() - started)
            metrics.record_command(endpoint.subject, failure)
        return reply

    async def _request(self, endpoint: Endpoint[C, R], command: C) -> R:
        try:
            message = await self.nc.request(
                endpoint.subject,
                _encoder.encode(command),
                timeout=endpoint.timeout + REPLY_GRACE_S,
                # W3C traceparent: the worker's span continues this trace (none while off).
                headers=tracing.inject(),
            )
        except NoRespondersError as exc:
            msg = f"No {endpoint.queue} is running to handle this request; try again shortly."
            raise SpinupError(ErrorCode.WORKER_UNAVAILABLE, msg, retryable=True) from exc
        except NatsTimeoutError as exc:
            msg = (
                f"{endpoint.queue} did not answer within {endpoint.timeout:g} s; nothing was kept."
            )
            raise SpinupError(ErrorCode.WORKER_TIMEOUT, msg, retryable=True) from exc
        reply_type: Any = endpoint.reply | CommandFailed
        reply = self._decoder(endpoint.subject, reply_type).decode(message.data)
        if isinstance(reply, CommandFailed):
            raise error_from_failure(reply)
        result: R = reply
        return result

    async def nudge_relay(self) -> None:
        """Tell the active relay that the event log has grown (an ``EventStore``'s ``nudge``)."""
        await self.nc.publish(LOG_APPENDED, b"")

    async def serve(
        self,
        endpoint: Endpoint[C, R],
        handler: Callable[[C], Awaitable[R]],
        *,
        max_in_flight: int,
    ) -> None:
        """Subscribe ``handler`` in the endpoint's queue group.

        Each message becomes a task; at most ``max_in_flight`` handlers run at once, the rest wait.
        """
        slots = asyncio.Semaphore(max_in_flight)
        decoder = self._decoder(f"cmd:{endpoint.subject}", endpoint.command)

        async def on_message(message: Any) -> None:  # noqa: ANN401  (nats.aio.msg.Msg)
            task = asyncio.create_task(self._handle(endpoint, handler, decoder, slots, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        subscription = await self.nc.subscribe(
            endpoint.subject, queue=endpoint.queue, cb=on_message
        )
        self._subscriptions.append(subscription)

    async def _handle(
        self,
        endpoint: Endpoint[C, R],
        handler: Callable[[C], Awaitable[R]],
        decoder: msgspec.json.Decoder[Any],
        slots: asyncio.Semaphore,
        message: Any,  # noqa: ANN401
    ) -> None:
        started = time.perf_counter()
        reply: Reply
        try:
            command: C = decoder.decode(message.data)
        except msgspec.MsgspecError as exc:
            log.warning("bus.command.rejected", subject=endpoint.subject, error=str(exc))
            reply = CommandFailed(
                code=ErrorCode.INVALID_COMMAND, message="malformed command", retryable=False
            )
            await message.respond(_encoder.encode(reply))
            return
        with (
            structlog.contextvars.bound_contextvars(
                correlation_id=command.correlation_id, command_id=str(command.command_id)
            ),
            tracing.span(
                f"nats handle {endpoint.subject}",
                kind=tracing.SpanKind.SERVER,
                attributes={"messaging.system": "nats", "messaging.destination": endpoint.subject},
                parent=tracing.extract(message.headers),
            ),
        ):
            async with slots:
                try:
                    reply = await handler(command)
                    outcome = "ok"
                except SpinupError as exc:
                    reply = CommandFailed(
                        code=exc.code, message=exc.message, retryable=exc.retryable
                    )
                    outcome = exc.code.value
                except Exception:
                    log.exception("bus.command.crashed", subject=endpoint.subject)
                    reply = CommandFailed(
                        code=ErrorCode.INTERNAL_ERROR,
                        message="The worker hit an unexpected error; it has been logged.",
                        retryable=True,
                    )
                    outcome = ErrorCode.INTERNAL_ERROR.value
            try:
                await message.respond(_encoder.encode(reply))
            except Exception:  # noqa: BLE001  (the requester is gone or NATS is down: nothing to tell)
                log.warning("bus.reply.undelivered", subject=endpoint.subject)
            log.info(
                "bus.command.handled",
                subject=endpoint.subject,
                outcome=outcome,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )

    async def close(self) -> None:
        """Stop taking messages, let running handlers reply, then disconnect."""
        if self.nc.is_closed:
            return
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.nc.close()


async def ensure_stack_stores(js: JetStreamContext) -> None:
    """Create the stack logs stream and the stack uploads object store unless they exist.

    Idempotent and safe to race: the gateway and every stack-deployer replica call it at start.
    """
    try:
        await js.stream_info(STACK_LOGS_STREAM)
    except NotFoundError:
        config = StreamConfig(
            name=STACK_LOGS_STREAM,
            subjects=[STACK_LOGS_FILTER],
            storage=StorageType.FILE,
            max_age=STACK_LOGS_MAX_AGE_S,
            max_msgs_per_subject=STACK_LOGS_PER_STACK,
            discard=DiscardPolicy.OLD,
        )
        # Two callers racing both add it: the same config twice is not an error for the server.
        await js.add_stream(config)
    try:
        await js.object_store(STACK_UPLOADS_BUCKET)
    except BucketNotFoundError:
        await js.create_object_store(
            STACK_UPLOADS_BUCKET, config=ObjectStoreConfig(storage=StorageType.FILE)
        )
