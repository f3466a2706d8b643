"""Database errors translated, in one place, into the platform's own."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from shared.contracts.errors import PlatformUnavailableError


class ConcurrencyConflictError(Exception):
    """Someone else appended to the stream first: reload and decide again."""


_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
)


@contextlib.asynccontextmanager
async def platform_errors() -> AsyncIterator[None]:
    """Turn "the platform database is unreachable" into ``PlatformUnavailableError``."""
    try:
        yield
    except _UNAVAILABLE as exc:
        msg = "The platform database is unreachable; try again shortly."
        raise PlatformUnavailableError(msg) from exc
