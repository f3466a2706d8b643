"""What a new redis-py connection says to the server before its first command, and when.

By default redis-py 8 sends ``CLIENT SETINFO`` twice (its name and version) and ``CLIENT
MAINT_NOTIFICATIONS ON`` after ``HELLO``. Debian's Redis 7.0 refuses all three (``SETINFO``
came in 7.2; maintenance notifications are Redis Cloud's), so every new connection spent three
round trips on errors before serving anything. Spinup's clients skip them: ``HELLO`` with the
credentials is the whole handshake.

And when: a pool opened on demand opens its connections under the first burst that needs them,
which after a start is its first burst of traffic (``open_connections``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.maint_notifications import MaintNotificationsConfig

if TYPE_CHECKING:
    from redis.asyncio import Redis

#: Keyword arguments for ``Redis``, ``Redis.from_url`` and ``ConnectionPool.from_url``.
QUIET_HANDSHAKE: dict[str, Any] = {
    # None, not redis-py's DriverInfo: no CLIENT SETINFO at all.
    "driver_info": None,
    "maint_notifications_config": MaintNotificationsConfig(enabled=False),
}


async def open_connections(client: Redis, count: int) -> None:
    """Open ``count`` connections of ``client``'s pool now, before it serves.

    As the platform Postgres pools are opened whole (``shared.postgres.pool``): a pool that grows
    under a burst makes that burst's requests wait for each new connection's handshake. The
    pool keeps them and still grows past ``count`` when more are needed at once.
    """
    pool = client.connection_pool
    # redis-py declares no types for get_connection (a deprecation wrapper hides them).
    held = [await pool.get_connection() for _ in range(count)]  # type: ignore[no-untyped-call]
    for connection in held:
        await pool.release(connection)
