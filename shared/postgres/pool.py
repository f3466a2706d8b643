"""Connection pools to Postgres for code that keeps no session state on a pooled connection.

asyncpg's default release resets a session before the next user gets it (advisory locks, cursors,
listeners, settings): four statements, one round trip, on every release. Spinup's code keeps no
session state on pooled connections: the platform's (transaction-scoped locks only; the relay
listens and locks on a connection of its own) and pg-provisioner's admin connections to the
customer cluster (role and database settings are set with ``ALTER ROLE``/``ALTER DATABASE``,
never ``SET``). A release only has to end a transaction left open, which asyncpg's release does
itself before it calls a pool's reset (``tests/integration/test_pgpool.py`` holds it to
that). So every read, append, take and drop saves the round trip: measured at 11 % of the
gateway's CPU on ``GET /resources/{token}``, and 0.25 ms of the customer cluster's CPU per pooled
``/db/new`` (bench/README.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing: no session state to reset (the module says why)."""


#: asyncpg's ``max_inactive_connection_lifetime``: 0 keeps every connection a pool opened. By
#: default it closes one idle for 300 s, so the first burst after a quiet five minutes opened them
#: all again: 16 ``/cache/new`` at once after 320 s idle took a p50 of 77-107 ms that way and
#: 44-61 ms with the connections kept, against 20-25 ms warm (bench/README.md).
KEEP_IDLE_CONNECTIONS = 0.0


#: How long closing a connection may wait for the server. A graceful close first waits for the
#: server to acknowledge a statement cancelled on that connection (a stopping relay's wait for
#: its lock, say), and a server or network that lost the cancel request never does: unbounded,
#: a gateway's stop hung until it was killed (asyncpg#1356). Past it the connection is dropped.
CLOSE_TIMEOUT_S = 2.0


async def open_pool(dsn: str, *, size: int) -> asyncpg.Pool:
    """A pool of ``size`` connections, all opened now, kept while idle, released without reset.

    Whole from the start, as HikariCP advises for its pools: a pool growing under the first
    burst after a start (a deploy, a scale-up) made that burst's requests wait for each new
    connection's authentication and set-up, and the server's connection budget has to allow
    every pool's size anyway (docs/scaling.md).
    """
    return await asyncpg.create_pool(
        dsn,
        min_size=size,
        max_size=size,
        reset=_keep_session,
        max_inactive_connection_lifetime=KEEP_IDLE_CONNECTIONS,
    )


async def warm_pool(pool: asyncpg.Pool, statement: str) -> None:
    """Run ``statement`` once on every connection of ``pool``, all at once, before it serves.

    For what every connection otherwise pays in its first request: asyncpg looking up the types
    it has no built-in codec for, and Postgres loading the catalog entries of each table a
    statement names. The first burst after a start runs on connections the quieter traffic
    before it never used (the pool hands out the one released last), so without this each of
    them made one request wait for that (bench/README.md). A connection the pool opens later,
    in place of one a server restart broke, is not warmed: it pays its look-ups once.
    """
    await on_every_connection(pool, lambda connection: connection.fetch(statement))


async def rehearse_writes(
    pool: asyncpg.Pool, writes: Callable[[], Sequence[tuple[str, Sequence[Any]]]]
) -> None:
    """Run writes once on every connection of ``pool``, in a transaction always rolled back.

    A connection's first run of a statement costs more than the runs after it: asyncpg
    prepares the statement (a round trip, and the server's parsing), and the server's executor
    sets up what it touches for the first time in that session. For the event log's append (a
    ``WITH`` of several data-modifying parts) a burst of first appends on fresh connections took
    three times as long as the burst after it (bench/README.md). Rolled back, a rehearsal
    leaves nothing but the prepared statements, which asyncpg keeps for the first real run of
    the same text.

    ``writes`` gives each connection its ``(statement, arguments)``: its own, so that two
    connections writing the same key do not wait for each other's rollback. They must succeed:
    an error is what the real write would meet, and it is raised.
    """

    async def rehearse(connection: PoolConnectionProxy[asyncpg.Record]) -> None:
        transaction = connection.transaction()
        await transaction.start()
        try:
            for statement, arguments in writes():
                await connection.fetch(statement, *arguments)
        finally:
            await transaction.rollback()

    await on_every_connection(pool, rehearse)


async def on_every_connection(
    pool: asyncpg.Pool, action: Callable[[PoolConnectionProxy[asyncpg.Record]], Awaitable[object]]
) -> None:
    """Run ``action`` on every connection of ``pool`` at once, each held by it meanwhile.

    Every action ends before any connection goes back, also when one fails (its error is raised
    then): a connection released while another action still runs on it is refused by asyncpg.
    """
    connections = [await pool.acquire() for _ in range(pool.get_size())]
    try:
        results = await asyncio.gather(
            *(action(connection) for connection in connections), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
    finally:
        for connection in connections:
            await pool.release(connection)
