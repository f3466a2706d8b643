"""Request-reply over NATS: the only module that sends commands or serves them.

Callers get a typed reply or a ``SpinupError``: no responders and timeouts both become 503-class
errors with distinct codes. Servers run each message as its own task under a semaphore, because
nats-py runs a subscription's callbacks one at a time and one slow ``CREATE DATABASE`` must never
hold up the rest.

An export is a reply too large for one message: a streamed reply with credit-based flow control
(``request_stream`` / ``serve_stream``, docs/adr/0030-export-and-grace.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import nats
import structlog
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import DiscardPolicy, ObjectStoreConfig, StorageType, StreamConfig
from nats.js.errors import BucketNotFoundError, NotFoundError

from shared.contracts.commands import Command, ExportResource
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.kinds import EXPORT_CHUNK_BYTES
from shared.contracts.replies import CommandFailed, ExportStarted, Reply
from shared.contracts.subjects import (
    EXPORT_IDLE_S,
    EXPORT_WINDOW,
    LOG_APPENDED,
    REPLY_GRACE_S,
    STACK_LOGS_FILTER,
    STACK_LOGS_STREAM,
    STACK_UPLOADS_BUCKET,
    Endpoint,
)
from shared.observability import metrics, tracing
from shared.runtime import set_within

if TYPE_CHECKING:
    from nats.aio.subscription import Subscription
    from nats.js.client import JetStreamContext

#: How long a stack's log lines are kept: longer than any stack lives unclaimed, so a failed or
#: expired stack's logs can still be read; a deleted stack's subject is purged with it.
STACK_LOGS_MAX_AGE_S = 7 * 24 * 3600.0
#: Log lines kept per stack (per subject); older ones are dropped first. With lines cut to
#: ``STACK_LOG_LINE_MAX`` characters this bounds one stack's share of the stream.
STACK_LOGS_PER_STACK = 5000
STACK_LOG_LINE_MAX = 2048
#: Appends of one process this close together send the relay one nudge (``Bus.nudge_relay``).
NUDGE_COALESCE_S = 0.005

C = TypeVar("C", bound=Command)
R = TypeVar("R", bound=Reply)

log = structlog.get_logger("shared.bus")
_encoder = msgspec.json.Encoder()
_failure_decoder = msgspec.json.Decoder(CommandFailed)

# A streamed reply's messages carry these headers: what the message is, and its place. Data
# chunks, then exactly one ``end`` or ``error`` (a CommandFailed body), numbered from 1 with no
# gap; the receiver sends credit (the highest sequence it has consumed) or ``abort`` back.
STREAM_PART = "Spinup-Stream"
STREAM_SEQ = "Spinup-Seq"
_DATA, _END, _ERROR, _ABORT = "data", "end", "error", "abort"


def error_from_failure(failure: CommandFailed) -> SpinupError:
    """Turn a wire failure back into an exception, tolerating codes this side does not know."""
    try:
        code = ErrorCode(failure.code)
    except ValueError:
        code = ErrorCode.INTERNAL_ERROR
    return SpinupError(
        code, failure.message, retryable=failure.retryable, agent_action=failure.agent_action
    )


def failure_from_error(error: SpinupError) -> CommandFailed:
    """A worker's error as it goes on the wire, what to do next included."""
    return CommandFailed(
        code=error.code,
        message=error.message,
        retryable=error.retryable,
        agent_action=error.agent_action,
    )


def _timed_out(endpoint: Endpoint[Any, Any]) -> SpinupError:
    msg = f"{endpoint.queue} did not answer within {endpoint.timeout:g} s; nothing was kept."
    return SpinupError(ErrorCode.WORKER_TIMEOUT, msg, retryable=True)


class Bus:
    """A NATS connection used for commands, in both directions."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self._decoders: dict[str, msgspec.json.Decoder[Any]] = {}
        #: Handlers running (for a message, or for this process's own request): waited for at
        #: ``close``.
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Streamed replies being sent: cut at ``close`` (an export may run for minutes).
        self._streams: set[asyncio.Task[None]] = set()
        self._subscriptions: list[Any] = []
        self._nudge_due = False
        #: The endpoints this process serves, by subject: its own requests to them skip NATS.
        self._served: dict[str, tuple[Callable[[Any], Awaitable[Any]], asyncio.Semaphore]] = {}

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
                served = self._served.get(endpoint.subject)
                if served is None:
                    reply = await self._request(endpoint, command)
                else:
                    reply = await self._call_served(endpoint, command, *served)
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
            raise _timed_out(endpoint) from exc
        reply_type: Any = endpoint.reply | CommandFailed
        reply = self._decoder(endpoint.subject, reply_type).decode(message.data)
        if isinstance(reply, CommandFailed):
            raise error_from_failure(reply)
        result: R = reply
        return result

    async def _call_served(
        self,
        endpoint: Endpoint[C, R],
        command: C,
        handler: Callable[[C], Awaitable[R]],
        slots: asyncio.Semaphore,
    ) -> R:
        """Hand ``command`` to this process's own handler of the endpoint (ADR 0036).

        What a worker in the queue group would do, without two trips through NATS and the
        encoding: the handler runs as a task of its own, so a caller that stops waiting does not
        cut it short (past the command's deadline it undoes its work, as over NATS).
        """
        task = asyncio.create_task(self._run(endpoint.subject, handler, slots, command))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            reply = await asyncio.wait_for(asyncio.shield(task), endpoint.timeout + REPLY_GRACE_S)
        except TimeoutError as exc:
            raise _timed_out(endpoint) from exc
        if isinstance(reply, CommandFailed):
            raise error_from_failure(reply)
        return reply

    async def flush(self) -> None:
        """Return once the server has read every subscription and message sent before the call.

        One ``nc.flush()`` does not prove it: nats-py (2.16) writes the flush's PING straight to
        the socket, ahead of commands still queued for its flusher task, so the PONG can come
        back before the server has read a SUB queued just before it (another process's request
        then finds no responders). That flush also wakes the flusher, which writes the queue
        before the PONG can be read; a second PING follows it, and its PONG settles it.
        """
        await self.nc.flush()
        await self.nc.flush()

    async def nudge_relay(self) -> None:
        """Tell the active relay that the event log has grown (an ``EventStore``'s ``nudge``).

        The appends of one process within ``NUDGE_COALESCE_S`` send one nudge, that long after
        the first: the relay reads whatever has committed when it wakes, so the others would
        only cost a message each (ADR 0031). The appender does not wait for it.
        """
        if self._nudge_due:
            return
        self._nudge_due = True
        asyncio.get_running_loop().call_later(NUDGE_COALESCE_S, self._send_nudge)

    def _send_nudge(self) -> None:
        self._nudge_due = False
        task = asyncio.create_task(self._publish_nudge())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish_nudge(self) -> None:
        # A lost nudge only delays the relay to its poll.
        with contextlib.suppress(NatsError):
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
        This process's own requests to the endpoint go straight to ``handler`` (``request``).
        """
        slots = asyncio.Semaphore(max_in_flight)
        decoder = self._decoder(f"cmd:{endpoint.subject}", endpoint.command)
        self._served[endpoint.subject] = (handler, slots)

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
        try:
            command: C = decoder.decode(message.data)
        except msgspec.MsgspecError as exc:
            log.warning("bus.command.rejected", subject=endpoint.subject, error=str(exc))
            reply: Reply = CommandFailed(
                code=ErrorCode.INVALID_COMMAND, message="malformed command", retryable=False
            )
            await message.respond(_encoder.encode(reply))
            return
        reply = await self._run(
            endpoint.subject, handler, slots, command, parent=tracing.extract(message.headers)
        )
        try:
            await message.respond(_encoder.encode(reply))
        except Exception:  # noqa: BLE001  (the requester is gone or NATS is down: nothing to tell)
            log.warning("bus.reply.undelivered", subject=endpoint.subject)

    async def _run(
        self,
        subject: str,
        handler: Callable[[C], Awaitable[R]],
        slots: asyncio.Semaphore,
        command: C,
        *,
        parent: Any = None,  # noqa: ANN401  (an OpenTelemetry context, or None: the current one)
    ) -> R | CommandFailed:
        """Handle one command as its worker: its reply, or its failure as ``CommandFailed``."""
        started = time.perf_counter()
        reply: R | CommandFailed
        with (
            structlog.contextvars.bound_contextvars(
                correlation_id=command.correlation_id, command_id=str(command.command_id)
            ),
            tracing.span(
                f"nats handle {subject}",
                kind=tracing.SpanKind.SERVER,
                attributes={"messaging.system": "nats", "messaging.destination": subject},
                parent=parent,
            ),
        ):
            async with slots:
                try:
                    reply = await handler(command)
                    outcome = "ok"
                except SpinupError as exc:
                    reply = failure_from_error(exc)
                    outcome = exc.code.value
                except Exception:
                    log.exception("bus.command.crashed", subject=subject)
                    reply = CommandFailed(
                        code=ErrorCode.INTERNAL_ERROR,
                        message="The worker hit an unexpected error; it has been logged.",
                        retryable=True,
                    )
                    outcome = ErrorCode.INTERNAL_ERROR.value
            log.info(
                "bus.command.handled",
                subject=subject,
                outcome=outcome,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
        return reply

    # -- streamed replies ----------------------------------------------------------------------

    async def request_stream(
        self,
        endpoint: Endpoint[ExportResource, ExportStarted],
        command_for: Callable[[str, int], ExportResource],
        *,
        idle_s: float = EXPORT_IDLE_S,
    ) -> tuple[ExportStarted, AsyncGenerator[bytes, None]]:
        """Send a streamed command; its reply, and the chunks that follow it.

        ``command_for(stream_subject, window)`` makes the command. Errors before the first chunk
        (the worker's checks) raise here as for ``request``; later ones raise from the generator.
        Credit for the next half window is sent after a chunk is consumed, so a slow reader
        slows the worker. Closing the generator early (the HTTP client went away) tells the
        worker to abort.
        """
        inbox = self.nc.new_inbox()
        # Without a callback: chunks wait in the subscription until consumed; the window bounds
        # how many there can be.
        subscription = await self.nc.subscribe(inbox)
        window = EXPORT_WINDOW
        try:
            started = await self.request(endpoint, command_for(inbox, window))
        except BaseException:
            await subscription.unsubscribe()
            raise
        return started, self._receive(subscription, started.credit_subject, window, idle_s)

    async def _receive(
        self,
        subscription: Subscription,
        credit_subject: str,
        window: int,
        idle_s: float,
    ) -> AsyncGenerator[bytes, None]:
        consumed = credited = 0
        finished = False
        try:
            while True:
                try:
                    message = await subscription.next_msg(timeout=idle_s)
                except NatsTimeoutError as exc:
                    msg = f"The export stopped: the worker sent nothing for {idle_s:g} s."
                    raise SpinupError(ErrorCode.WORKER_TIMEOUT, msg, retryable=True) from exc
                headers = message.headers or {}
                if int(headers.get(STREAM_SEQ, "0")) != consumed + 1:
                    msg = "The export lost a piece on the way; try again."
                    raise SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True)
                consumed += 1
                part = headers.get(STREAM_PART)
                if part == _END:
                    finished = True
                    return
                if part == _ERROR:
                    finished = True
                    raise error_from_failure(_failure_decoder.decode(message.data))
                yield message.data
                if consumed - credited >= max(1, window // 2):
                    credited = consumed
                    await self.nc.publish(credit_subject, str(credited).encode())
        finally:
            # A task of its own: this may run inside a cancelled scope (the HTTP client went
            # away), where an await here would be cancelled before the worker hears of it.
            ended = asyncio.create_task(
                self._end_receiving(subscription, None if finished else credit_subject)
            )
            self._tasks.add(ended)
            ended.add_done_callback(self._tasks.discard)

    async def _end_receiving(self, subscription: Subscription, abort_to: str | None) -> None:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
        if abort_to is not None:
            with contextlib.suppress(Exception):
                await self.nc.publish(abort_to, b"", headers={STREAM_PART: _ABORT})

    async def serve_stream(
        self,
        endpoint: Endpoint[ExportResource, ExportStarted],
        start: Callable[[ExportResource], Awaitable[AsyncIterator[bytes]]],
        *,
        max_in_flight: int,
        idle_s: float = EXPORT_IDLE_S,
    ) -> None:
        """Serve a streamed command: ``start`` checks it and returns its chunks.

        A ``SpinupError`` from ``start`` is the reply, as for ``serve``; once started, the chunks
        are sent under the receiver's credit (never more than the command's ``window`` ahead)
        and the stream ends with ``end``, or ``error`` when the chunks raise. Without credit for
        ``idle_s``, or on ``abort``, the chunks' generator is closed (its process killed) and the
        stream dropped. At most ``max_in_flight`` streams at once; past that, a retryable refusal.
        """
        slots = asyncio.Semaphore(max_in_flight)
        decoder = self._decoder(f"cmd:{endpoint.subject}", endpoint.command)

        async def on_message(message: Any) -> None:  # noqa: ANN401  (nats.aio.msg.Msg)
            task = asyncio.create_task(
                self._stream(endpoint, start, decoder, message, slots=slots, idle_s=idle_s)
            )
            self._streams.add(task)
            task.add_done_callback(self._streams.discard)

        subscription = await self.nc.subscribe(
            endpoint.subject, queue=endpoint.queue, cb=on_message
        )
        self._subscriptions.append(subscription)

    async def _stream(
        self,
        endpoint: Endpoint[ExportResource, ExportStarted],
        start: Callable[[ExportResource], Awaitable[AsyncIterator[bytes]]],
        decoder: msgspec.json.Decoder[Any],
        message: Any,  # noqa: ANN401
        *,
        slots: asyncio.Semaphore,
        idle_s: float,
    ) -> None:
        async def refuse(error: SpinupError) -> None:
            with contextlib.suppress(Exception):
                await message.respond(_encoder.encode(failure_from_error(error)))

        try:
            command: ExportResource = decoder.decode(message.data)
        except msgspec.MsgspecError:
            await refuse(SpinupError(ErrorCode.INVALID_COMMAND, "malformed command"))
            return
        if slots.locked():
            text = "Too many exports are running right now; try again in a minute."
            await refuse(SpinupError(ErrorCode.BACKEND_UNAVAILABLE, text, retryable=True))
            return
        async with slots:
            with structlog.contextvars.bound_contextvars(
                correlation_id=command.correlation_id, command_id=str(command.command_id)
            ):
                try:
                    chunks = await start(command)
                except SpinupError as exc:
                    await refuse(exc)
                    return
                except Exception:
                    log.exception("bus.stream.crashed", subject=endpoint.subject)
                    text = "The worker hit an unexpected error; it has been logged."
                    await refuse(SpinupError(ErrorCode.INTERNAL_ERROR, text, retryable=True))
                    return
                await self._pump(command, chunks, message, idle_s)

    async def _pump(
        self,
        command: ExportResource,
        chunks: AsyncIterator[bytes],
        message: Any,  # noqa: ANN401
        idle_s: float,
    ) -> None:
        credit = _Credit()
        credit_subscription = await self.nc.subscribe(self.nc.new_inbox(), cb=credit.on_message)
        started = time.perf_counter()
        sent = 0
        sequence = 0
        outcome = "ok"

        async def publish(part: str, data: bytes) -> None:
            nonlocal sequence
            sequence += 1
            headers = {STREAM_PART: part, STREAM_SEQ: str(sequence)}
            await self.nc.publish(command.stream_subject, data, headers=headers)

        try:
            reply = ExportStarted(
                resource_id=command.resource_id,
                format=command.format,
                credit_subject=credit_subscription.subject,
            )
            await message.respond(_encoder.encode(reply))
            async for chunk in chunks:
                for offset in range(0, len(chunk), EXPORT_CHUNK_BYTES):
                    await credit.wait_for_room(sequence, command.window, idle_s)
                    await publish(_DATA, chunk[offset : offset + EXPORT_CHUNK_BYTES])
                    sent += min(EXPORT_CHUNK_BYTES, len(chunk) - offset)
            await publish(_END, b"")
        except _StreamAbortedError as exc:
            outcome = exc.reason
        except asyncio.CancelledError:
            # This process is stopping (``close``): say so rather than fall silent.
            outcome = "cancelled"
            failure = CommandFailed(
                code=ErrorCode.WORKER_UNAVAILABLE,
                message="The worker stopped during the export; export again.",
                retryable=True,
            )
            with contextlib.suppress(Exception):
                await publish(_ERROR, _encoder.encode(failure))
            raise
        except SpinupError as exc:
            outcome = exc.code.value
            with contextlib.suppress(Exception):
                await publish(_ERROR, _encoder.encode(failure_from_error(exc)))
        except Exception:
            log.exception("bus.stream.crashed", subject=command.stream_subject)
            outcome = ErrorCode.INTERNAL_ERROR.value
            failure = CommandFailed(
                code=ErrorCode.INTERNAL_ERROR,
                message="The export failed unexpectedly; it has been logged.",
                retryable=True,
            )
            with contextlib.suppress(Exception):
                await publish(_ERROR, _encoder.encode(failure))
        finally:
            # Closing the generator runs its cleanup (a dump process is killed) before we go on.
            close = getattr(chunks, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
            with contextlib.suppress(Exception):
                await credit_subscription.unsubscribe()
            log.info(
                "bus.stream.served",
                resource_id=str(command.resource_id),
                format=command.format,
                outcome=outcome,
                bytes=sent,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )

    async def close(self) -> None:
        """Stop taking messages, let running handlers reply, cut streamed replies, disconnect.

        A cut stream's receiver gets a retryable ``worker_unavailable``.
        """
        if self.nc.is_closed:
            return
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        for stream in self._streams:
            stream.cancel()
        if self._streams:
            await asyncio.gather(*self._streams, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.nc.close()


class _StreamAbortedError(Exception):
    """The receiver of a streamed reply went away (``abort``) or fell silent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Credit:
    """What the receiver of one streamed reply has consumed, as its credit messages say."""

    def __init__(self) -> None:
        self.consumed = 0
        self.aborted = False
        self._changed = asyncio.Event()

    async def on_message(self, message: Any) -> None:  # noqa: ANN401  (nats.aio.msg.Msg)
        if (message.headers or {}).get(STREAM_PART) == _ABORT:
            self.aborted = True
        else:
            with contextlib.suppress(ValueError):
                self.consumed = max(self.consumed, int(message.data))
        self._changed.set()

    async def wait_for_room(self, sent: int, window: int, idle_s: float) -> None:
        """Return once one more chunk fits in the window; raise if aborted or silent too long."""
        while True:
            if self.aborted:
                raise _StreamAbortedError("aborted")
            if sent - self.consumed < window:
                return
            self._changed.clear()
            if not await set_within(self._changed, idle_s):
                raise _StreamAbortedError("receiver_silent")


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
