"""Connection pools to the platform Postgres, for every service that reads or appends to the log.

asyncpg's default release resets a session before the next user gets it (advisory locks, cursors,
listeners, settings): four statements, one round trip, on every release. The platform's code
keeps no session state on pooled connections (transaction-scoped locks only; the relay listens
and locks on a connection of its own), so a release only needs to end a transaction left open,
and a read or an append saves the round trip: measured at 11 % of the gateway's CPU on
``GET /resources/{token}`` (bench/README.md).
"""

from __future__ import annotations

import asyncpg


async def _rollback_if_open(conn: asyncpg.Connection) -> None:
    """What a platform connection needs before reuse: no transaction left open."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def create_platform_pool(dsn: str, *, min_size: int, max_size: int) -> asyncpg.Pool:
    """A pool of platform connections released without asyncpg's session reset."""
    return await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, reset=_rollback_if_open
    )
