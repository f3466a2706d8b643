"""What a new redis-py connection says to the server before its first command.

By default redis-py 8 sends ``CLIENT SETINFO`` twice (its name and version) and ``CLIENT
MAINT_NOTIFICATIONS ON`` after ``HELLO``. Debian's Redis 7.0 refuses all three (``SETINFO``
came in 7.2; maintenance notifications are Redis Cloud's), so every new connection spent three
round trips on errors before serving anything. Spinup's clients skip them: ``HELLO`` with the
credentials is the whole handshake.
"""

from __future__ import annotations

from typing import Any

from redis.maint_notifications import MaintNotificationsConfig

#: Keyword arguments for ``Redis``, ``Redis.from_url`` and ``ConnectionPool.from_url``.
QUIET_HANDSHAKE: dict[str, Any] = {
    # None, not redis-py's DriverInfo: no CLIENT SETINFO at all.
    "driver_info": None,
    "maint_notifications_config": MaintNotificationsConfig(enabled=False),
}
