"""A relay stops when asked, also when Postgres never hears that its lock wait was cancelled.

Every gateway process but one waits in ``pg_advisory_lock`` for the relay's lock (and the
notifier's). A stop cancels that wait: asyncpg sends Postgres a cancel request on a connection of
its own, and closing the waiting connection first waits for the server to confirm it. When the
cancel request is lost (a network fault, a server that dropped it), that confirmation never
comes; unbounded, the process's stop hung until it was killed (a CI run of
``test_gateway_processes``). Here a proxy in front of the real platform Postgres forwards the
relay's session and swallows every later connection, which is where the cancel request goes.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from shared.eventlog.relay import Relay
from shared.eventlog.schema import RELAY_LOCK
from shared.postgres.pool import CLOSE_TIMEOUT_S
from shared.testing.polling import eventually

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.aio.client import Client as NatsClient

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def first_connection_only(host: str, port: int) -> AsyncIterator[tuple[int, list[int]]]:
    """A TCP proxy to ``host:port`` that forwards its first connection and swallows the rest.

    Yields its port and a list that grows by one for each connection it swallowed.
    """
    swallowed: list[int] = []
    tasks: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []
    forwarded = False

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal forwarded
        writers.append(writer)
        if forwarded:
            swallowed.append(1)
            # Read and drop: the peer's request is taken in and never answered or closed.
            with contextlib.suppress(ConnectionError):
                while await reader.read(65536):
                    pass
            return
        forwarded = True
        upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        writers.append(upstream_writer)
        for task in (pipe(reader, upstream_writer), pipe(upstream_reader, writer)):
            tasks.add(asyncio.create_task(task))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], swallowed
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def _through(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    credentials = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{credentials}@127.0.0.1:{port}"))


async def test_a_relay_waiting_for_its_lock_stops_though_its_cancel_is_lost(
    env: dict[str, str], platform_db: asyncpg.Pool, nc: NatsClient
) -> None:
    dsn = env["SPINUP_PLATFORM_DSN"]
    target = urlsplit(dsn)
    assert target.hostname is not None
    assert target.port is not None
    async with first_connection_only(target.hostname, target.port) as (port, swallowed):

        async def relays_waiting() -> int:
            count: int = await platform_db.fetchval(
                # A bigint key is held as its high and low 32 bits.
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND objsubid = 1 AND (classid::bigint << 32 | objid::bigint) = $1",
                RELAY_LOCK,
            )
            return count

        waiting_before = await relays_waiting()
        relay = Relay(_through(dsn, port), nc, name="stop-probe")
        running = asyncio.create_task(relay.run())

        async def waiting_for_the_lock() -> bool:
            # The stack's own relay holds the lock (its other gateway processes wait for it):
            # this one waits too, one more than before it started.
            return await relays_waiting() > waiting_before

        assert await eventually(waiting_for_the_lock), "the relay never waited for its lock"
        running.cancel()
        # Within the close's bound, with a margin for a loaded machine.
        done, _ = await asyncio.wait({running}, timeout=CLOSE_TIMEOUT_S + 5)
        assert done, "the relay did not stop: closing its connection waited for the lost cancel"
        assert running.cancelled()
        assert swallowed, "no cancel request reached the proxy: the test proved nothing"
